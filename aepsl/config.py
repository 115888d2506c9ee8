"""Profiles and parameter checking.

A profile (``notebooks/params/<profile>.yaml``) holds every hyper-parameter of a run:

    common:       parameters every notebook receives (profile, seed, device, data_root, ...)
    notebooks:    one entry per notebook, in reading order; its parameters
                  (an entry may hold ``runs:``, a list of parameter sets, one papermill run each)

Stage functions receive a flat dict and turn it into a dataclass with :func:`from_params`,
which rejects unknown names and wrong types with one message naming the parameter.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from .artifacts import REPO_DIR

PARAMS_DIR = REPO_DIR / "notebooks" / "params"


class ParameterError(ValueError):
    """A parameter is unknown or has the wrong type or value."""


@dataclasses.dataclass
class StageConfig:
    """The parameters every stage shares (the profile's ``common`` section)."""

    profile: str = "default"
    seed: int = 0
    device: str = "auto"
    data_root: str = "data/scenes-default"
    artifacts_root: str = "artifacts"


def _check_type(name: str, value: Any, typ: Any, stage: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{stage}: parameter {name} must be a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ParameterError(f"{stage}: parameter {name} must be an integer, got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{stage}: parameter {name} must be true or false, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ParameterError(f"{stage}: parameter {name} must be a string, got {value!r}")
        return value
    if typ is list or origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ParameterError(f"{stage}: parameter {name} must be a list, got {value!r}")
        return value
    return value


def from_params(cls, params: dict, stage: str):
    """Build dataclass ``cls`` from ``params``; unknown names or wrong types -> ParameterError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ParameterError(f"{stage}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(k, v, hints[k], stage) for k, v in params.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def without_neutral(params: dict, neutral: dict) -> dict:
    """``params`` without the entries that hold their neutral value. Parameters added after
    artifacts were recorded enter a stage's parameter hash only when set to something else,
    so the earlier artifacts stay valid."""
    return {k: v for k, v in params.items() if not (k in neutral and v == neutral[k])}


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ParameterError(f"unknown profile {profile!r}: no file {path} (profiles: {known})")
    return path


def load_profile(profile: str) -> dict:
    """The profile as ``{"common": {...}, "notebooks": {name: entry}}``."""
    path = profile_path(profile)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"profile file {path} is not valid YAML: {exc}") from None
    if not isinstance(data.get("common"), dict) or not isinstance(data.get("notebooks"), dict):
        raise ParameterError(f"profile file {path} needs the sections 'common' and 'notebooks'")
    return data


def notebook_runs(profile: str, notebook: str) -> list[dict]:
    """The parameter sets of every papermill run of ``notebook`` in ``profile``."""
    data = load_profile(profile)
    if notebook not in data["notebooks"]:
        raise ParameterError(f"profile {profile!r} has no notebook {notebook!r} "
                             f"(it has {list(data['notebooks'])})")
    entry = dict(data["notebooks"][notebook] or {})
    runs = entry.pop("runs", None) or [{}]
    return [{**data["common"], **entry, **run} for run in runs]


def stage_params(profile: str, notebook: str, run: int = 0, **overrides) -> dict:
    """The flat parameter dict of one run of a notebook (what papermill would inject: keys
    starting with '_', such as a run's ``_name``, are the pipeline's own and are left out)."""
    params = {k: v for k, v in notebook_runs(profile, notebook)[run].items() if not k.startswith("_")}
    return {**params, **overrides}


def resolve(path: str | os.PathLike) -> Path:
    """Relative paths in parameters are relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO_DIR / p


def check_declared(where: str, params: dict, declared: dict) -> None:
    """Refuse ``params`` that a notebook's parameters cell (``declared``: name -> literal) does
    not declare, or whose type differs from the declared literal's (an int passes for a float,
    a tuple for a list)."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ParameterError(f"{where}: unknown parameter(s) {unknown}; it declares {sorted(declared)}")
    for key, value in params.items():
        ref = declared[key]
        ok = (type(value) is type(ref) or (isinstance(ref, float) and type(value) is int)
              or (isinstance(ref, (list, tuple)) and isinstance(value, (list, tuple))))
        if not ok:
            raise ParameterError(f"{where}: parameter {key} must be of type {type(ref).__name__} "
                                 f"(like {ref!r}), got {value!r}")


def _assignments(source: str) -> dict:
    """``name = literal`` lines of a cell's source (other statements are left out)."""
    import ast

    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                values[node.targets[0].id] = None
    return values


PAPERMILL_CELL_HEADER = "# Parameters\n"   # how papermill's injected-parameters cell starts


def papermill_injected(namespace: dict) -> tuple[dict, dict] | None:
    """In a notebook run by papermill: ``(declared, injected)``, the assignments of the cell
    tagged ``parameters`` and of the cell papermill injected right after it, read from the
    kernel's input history ``In``. None outside papermill (no injected cell was run)."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    for j in range(len(history) - 1, 0, -1):
        if isinstance(history[j], str) and history[j].startswith(PAPERMILL_CELL_HEADER):
            try:
                return _assignments(history[j - 1]), _assignments(history[j])
            except SyntaxError:
                return None
    return None


def collect(namespace: dict, cls) -> dict:
    """The parameters a notebook declared: the entries of ``namespace`` named like ``cls``'s fields.

    Run by papermill, the injected parameters are checked first: papermill itself only warns
    about a name the notebook does not declare (and the run would silently ignore it), so an
    unknown name or a value of another type than the declared one is a ParameterError here.
    """
    injected = papermill_injected(namespace)
    if injected is not None:
        declared, params = injected
        check_declared("papermill parameters", params, declared)
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in namespace.items() if k in names}
