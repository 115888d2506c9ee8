"""Profiles and parameter checking.

A profile (``notebooks/params/<profile>.yaml``) holds every hyper-parameter of a run:

    common:       parameters every notebook receives (profile, seed, device, data_root, ...)
    notebooks:    one entry per notebook, in reading order; its parameters
                  (an entry may hold ``runs:``, a list of parameter sets, one papermill run each)

Stage functions receive a flat dict and turn it into a dataclass with :func:`from_params`,
which rejects unknown names and wrong types with one message naming the parameter.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import textwrap
import typing
from pathlib import Path
from typing import Any

import yaml

from .artifacts import REPO_DIR

PARAMS_DIR = REPO_DIR / "notebooks" / "params"


class ParameterError(ValueError):
    """A parameter is unknown or has the wrong type or value."""


# A parameter's field metadata says whether it enters the stage's cache key (its parameter
# hash): RUNTIME ones change how a stage runs (workers, batch size of inference, force), not
# what it computes; ``only_with`` hashes a field only while the named switch is on (HFPL's
# settings change nothing without HFPL).
RUNTIME = {"hashed": False}


def runtime(default: Any) -> Any:
    """A dataclass field that does not enter the parameter hash (see :data:`RUNTIME`)."""
    return dataclasses.field(default=default, metadata=RUNTIME)


def only_with(switch: str, default: Any) -> Any:
    """A dataclass field hashed only while the boolean field ``switch`` is true."""
    return dataclasses.field(default=default, metadata={"only_with": switch})


def hashed_params(cfg) -> dict:
    """The parameters of ``cfg`` that determine a stage's results, as its field metadata
    declares: every field but the RUNTIME ones and the ``only_with`` ones whose switch is off."""
    out = {}
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("hashed", True):
            continue
        switch = f.metadata.get("only_with")
        if switch and not getattr(cfg, switch):
            continue
        out[f.name] = getattr(cfg, f.name)
    return out


def field_docs(cls) -> dict[str, str]:
    """The one-line help of each field of dataclass ``cls``: the comment on the field's line in
    the class body (base classes included), which a notebook's parameters cell repeats."""
    import inspect
    import io
    import tokenize

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = set(getattr(klass, "__annotations__", {}))
        line_name: dict[int, str] = {}
        for node in ast.parse(textwrap.dedent(source)).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in names:
                line_name[node.lineno] = node.target.id
        for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
            if tok.type == tokenize.COMMENT and tok.start[0] in line_name:
                docs[line_name[tok.start[0]]] = tok.string.lstrip("#").strip()
    return docs


@dataclasses.dataclass
class StageConfig:
    """The parameters every stage shares (the profile's ``common`` section)."""

    profile: str = "default"   # parameter profile name; outputs go to artifacts_root/profile/stage
    seed: int = 0   # random seed of data order, augmentation and weight initialisation
    device: str = "auto"   # torch device: auto (CUDA when available, else CPU), cpu or cuda
    data_root: str = "data/scenes-default"   # dataset folder (VOC layout), relative to the repository root
    artifacts_root: str = "artifacts"   # folder of all stage outputs, relative to the repository root

    def hashed(self) -> dict:
        """The parameters that determine the stage's results (see :func:`hashed_params`)."""
        return hashed_params(self)

    def reads(self) -> list[str]:
        """The stage folders (under ``artifacts_root/profile``) this run reads."""
        return []


@dataclasses.dataclass
class PageConfig(StageConfig):
    """The parameters of a page that computes nothing (the results and provenance chapters)."""

    force: bool = runtime(False)   # unused: the page is rebuilt from metrics.json every time


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
    """``name = literal`` and ``name: type = literal`` lines of a cell's source (other
    statements are left out)."""
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            continue
        try:
            values[name] = ast.literal_eval(value)
        except ValueError:
            values[name] = None
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
