"""Profiles and parameter checking.

A profile (``notebooks/params/<profile>.yaml``) holds every hyper-parameter of a run:

    extends:      (optional) the profile this one starts from; it then states only its changes
    stop_after:   (optional, with extends) keep the base's notebooks up to this one, drop the rest
    common:       parameters every notebook receives (profile, seed, device, data_root, ...)
    notebooks:    one entry per notebook, in reading order; its parameters
                  (an entry may hold ``runs:``, a list of parameter sets, one papermill run each)

``extends`` merges like a base config (mmsegmentation-style), one level deep: ``common`` key by
key; ``notebooks`` notebook by notebook, a notebook the child names getting the base's entry with
the child's keys on top (a child's ``runs`` list replaces the base's whole list; the base's runs
stay when the child gives none); a notebook only the child names is added after the base's. A
profile may be a name, a YAML path, or a design of a file of designs, ``FILE.yaml#NAME`` (the
file's ``designs:`` mapping; there ``extends`` names another design of the file or a profile).

Seeds are an axis, not files: ``load_profile(profile, seed=K)`` is the profile with training
seed K, written under its own profile name ``<profile>_seed<K>`` so the profile's own artifacts
are never overwritten (K equal to the profile's seed: the profile itself). The data notebook
keeps the profile's seed, so every training seed sees the same scenes.

Stage functions receive a flat dict and turn it into a dataclass with :func:`from_params`,
which rejects unknown names and wrong types with one message naming the parameter.
"""
from __future__ import annotations

import ast
import copy
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


DATA_NOTEBOOK = "00_data"   # its ``seed`` is the scenes', not a training seed: --seed leaves it
DESIGN_SEPARATOR = "#"      # FILE.yaml#NAME: the design NAME of a file of designs


def profile_path(profile: str) -> Path:
    """The YAML file of ``profile``: a profile name (notebooks/params/<name>.yaml) or a path,
    relative to the working folder or to the repository root (for FILE#design: FILE)."""
    path = Path(str(profile).split(DESIGN_SEPARATOR)[0])
    if path.suffix in (".yaml", ".yml"):
        for candidate in (path, REPO_DIR / path):
            if candidate.exists():
                return candidate
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ParameterError(f"unknown profile {profile!r}: no file {path} (profiles: {known})")
    return path


# parsed profile files by path, with the (modification time, size) they were read at: a plan
# resolves a profile's parents once per notebook, and a file of designs is read once per design
_YAML_CACHE: dict[str, tuple[tuple[int, int], dict]] = {}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml's parser where PyYAML has it


def _read_yaml(path: Path) -> dict:
    """The mapping in the YAML file ``path`` (a fresh copy: callers may change it); a file read
    before and not changed since is not parsed again."""
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    key = (stat.st_mtime_ns, stat.st_size) if stat else None
    cached = _YAML_CACHE.get(str(path))
    if key is not None and cached is not None and cached[0] == key:
        return copy.deepcopy(cached[1])
    try:
        data = yaml.load(Path(path).read_text(), Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"profile file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParameterError(f"profile file {path} must hold a mapping")
    if key is not None:
        _YAML_CACHE[str(path)] = (key, copy.deepcopy(data))
    return data


def load_designs(path: str | os.PathLike) -> dict[str, dict]:
    """The ``designs:`` mapping of a file of designs (name -> design: ``note``, ``seeds``, and a
    profile's keys: ``extends``, ``stop_after``, ``common``, ``notebooks``)."""
    data = _read_yaml(resolve(path))
    designs = data.get("designs")
    if not isinstance(designs, dict) or not designs:
        raise ParameterError(f"{path}: a file of designs needs a non-empty 'designs:' mapping")
    for name, design in designs.items():
        if not isinstance(design, dict):
            raise ParameterError(f"{path}: design {name!r} must be a mapping")
        seeds = design.get("seeds", [])
        if not isinstance(seeds, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in seeds):
            raise ParameterError(f"{path}: design {name!r}: 'seeds' must be a list of integers, got {seeds!r}")
        if not isinstance(design.get("note", ""), str) or not design.get("note"):
            raise ParameterError(f"{path}: design {name!r} needs a one-line 'note'")
    return designs


def merge_profiles(base: dict, child: dict, where: str = "profile") -> dict:
    """``child`` (a profile's own keys) on top of ``base`` (a resolved profile), as the module's
    docstring says: common key by key, notebooks entry by entry (``runs`` replaced whole), the
    base's notebooks after ``stop_after`` dropped."""
    common = {**base.get("common", {}), **(child.get("common") or {})}
    notebooks = dict(base.get("notebooks", {}))
    stop = child.get("stop_after")
    if stop is not None:
        if stop not in notebooks:
            raise ParameterError(f"{where}: stop_after {stop!r} is not a notebook of its base "
                                 f"(it has {list(notebooks)})")
        names = list(notebooks)
        notebooks = {n: notebooks[n] for n in names[:names.index(stop) + 1]}
    for name, entry in (child.get("notebooks") or {}).items():
        if entry is not None and not isinstance(entry, dict):
            raise ParameterError(f"{where}: notebook {name!r} must map parameter names to values")
        notebooks[name] = {**(notebooks.get(name) or {}), **(entry or {})}
    return {"common": common, "notebooks": notebooks}


def _resolve(profile: str, seen: tuple[str, ...] = ()) -> dict:
    """The profile ``profile`` (name, path or FILE#design) with its ``extends`` chain merged."""
    if profile in seen:
        raise ParameterError(f"profile {profile!r} extends itself (through {' -> '.join(seen)})")
    path = profile_path(profile)
    if DESIGN_SEPARATOR in str(profile):
        design = str(profile).split(DESIGN_SEPARATOR, 1)[1]
        designs = load_designs(path)
        if design not in designs:
            raise ParameterError(f"{path} has no design {design!r} (designs: {list(designs)})")
        data, where = designs[design], f"design {design!r} of {path}"
    else:
        data, where = _read_yaml(path), f"profile file {path}"
    base_name = data.get("extends")
    if base_name is None:
        if "stop_after" in data:
            raise ParameterError(f"{where}: stop_after needs 'extends' (the base whose notebooks it cuts)")
        resolved = {"common": data.get("common"), "notebooks": data.get("notebooks")}
    else:
        base_name = str(base_name)
        if DESIGN_SEPARATOR in str(profile) and base_name in load_designs(path):
            base_ref = f"{str(profile).split(DESIGN_SEPARATOR)[0]}{DESIGN_SEPARATOR}{base_name}"
        else:
            base_ref = base_name
        resolved = merge_profiles(_resolve(base_ref, seen + (str(profile),)), data, where)
        resolved["extends"] = base_name
    if not isinstance(resolved.get("common"), dict) or not isinstance(resolved.get("notebooks"), dict):
        raise ParameterError(f"{where} needs the sections 'common' and 'notebooks' (or 'extends')")
    resolved["notebooks"] = {k: dict(v or {}) for k, v in resolved["notebooks"].items()}
    return resolved


def with_seed(data: dict, seed: int) -> dict:
    """The resolved profile ``data`` with training seed ``seed``: every run's ``seed`` is
    ``seed`` except the data notebook's (the scenes stay the profile's), and it writes under the
    profile name ``<profile>_seed<seed>``; its ``seed_of`` (and ``extends``) name the profile it
    is a seed variant of. ``seed`` equal to the profile's own seed: ``data`` unchanged."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"--seed must be a non-negative integer, got {seed!r}")
    common = data["common"]
    own = common.get("seed", 0)
    if seed == own:
        return data
    name = str(common.get("profile"))
    notebooks = {k: dict(v) for k, v in data["notebooks"].items()}
    if DATA_NOTEBOOK in notebooks:
        notebooks[DATA_NOTEBOOK].setdefault("seed", own)
    for entry in notebooks.values():   # a run or entry that names its own seed takes the new one
        if entry is not notebooks.get(DATA_NOTEBOOK):
            entry.pop("seed", None)
            if entry.get("runs"):
                entry["runs"] = [{k: v for k, v in run.items() if k != "seed"} for run in entry["runs"]]
    return {"common": {**common, "profile": f"{name}_seed{seed}", "seed": seed},
            "notebooks": notebooks, "extends": name, "seed_of": name}


def load_profile(profile: str, seed: int | None = None) -> dict:
    """The profile as ``{"common": {...}, "notebooks": {name: entry}}`` (its ``extends`` chain
    merged; with ``seed``, the profile with that training seed, see :func:`with_seed`); a key
    ``extends`` names the profile it was derived from, where it was."""
    data = _resolve(str(profile))
    return data if seed is None else with_seed(data, seed)


def profile_record(data: dict) -> dict:
    """What a run of the resolved profile ``data`` writes beside its stages
    (``artifacts/<profile>/profile.json``): its name, its training seed and, for a run made with
    ``--seed``, the profile whose seed variant it is (``seed_of``; None for a profile's own
    seed), by which the seed runs of a profile are found (:func:`seed_runs`)."""
    common = data["common"]
    return {"profile": common.get("profile"), "seed": common.get("seed", 0), "seed_of": data.get("seed_of")}


PROFILE_RECORD = "profile.json"


def seed_runs(artifacts_root: str | os.PathLike, profile: str) -> dict[int, Path]:
    """The runs of ``profile`` with other training seeds found under ``artifacts_root``: seed ->
    its profile folder, read from each folder's ``profile.json`` (its ``seed`` and ``seed_of``,
    see :func:`profile_record`), never from folder names."""
    import json

    found: dict[int, Path] = {}
    for record_path in sorted(Path(artifacts_root).glob(f"*/{PROFILE_RECORD}")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("seed_of") == profile and isinstance(record.get("seed"), int):
            found[record["seed"]] = record_path.parent
    return dict(sorted(found.items()))


def notebook_runs(profile: str, notebook: str, seed: int | None = None) -> list[dict]:
    """The parameter sets of every papermill run of ``notebook`` in ``profile`` (with training
    seed ``seed``, when given)."""
    data = load_profile(profile, seed)
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
