"""Run folders, atomic writes and metrics.json.

Every stage writes into ``artifacts/<profile>/<stage>/``.  Anything that lands
there is written to a temporary file in the same folder first and then renamed
into place, so an interrupted run never leaves a half-written file behind.

A stage's cache key is the hash of its parameters, which include the hash of the
``aepsl`` code that computes it (:func:`code_hash`); a stage entry point decorated
with :func:`stage_entry` removes the folders it created when it fails, so bad input
or a full disk leaves no partial artifact folder.
"""
from __future__ import annotations

import ast
import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # aepsl/
REPO_DIR = PACKAGE_DIR.parent

# errors of a write the disk or the folder refused (full, quota, read-only, permissions)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class ArtifactError(RuntimeError):
    """An artifact folder cannot be used as asked (e.g. it was written by another profile)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # what open() would give a new file (mkstemp gives 0600)


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched. Under torchrun
    only rank 0 writes (see :mod:`aepsl.engine.dist`); a write from another rank is an error.
    """
    path = Path(path)
    _check_writer(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, _FILE_MODE)
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(exc, path) from exc
        raise


def _check_writer(path: Path) -> None:
    torch = sys.modules.get("torch")   # no process group can exist before torch is imported
    if torch is None:
        return
    td = torch.distributed
    if td.is_available() and td.is_initialized() and td.get_rank() != 0:
        raise RuntimeError(f"rank {td.get_rank()} tried to write {path}: with several processes "
                           "(torchrun) only rank 0 writes artifacts")
def _write_error(exc: OSError, path: Path) -> OSError:
    """The same OSError, with a message naming the file we were writing."""
    hint = " (disk full?)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}{hint}")


def make_dirs(folder: str | os.PathLike) -> None:
    """``mkdir -p`` with an error that names the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create folder {folder}: {exc.strerror or exc}") from exc


def missing_ancestor(folder: str | os.PathLike) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None if it exists):
    the folder that ``mkdir -p folder`` would create first."""
    folder = Path(folder).absolute()
    if folder.exists():
        return None
    top = folder
    while not top.parent.exists():
        top = top.parent
    return top


def remove_stale_temps(folder: str | os.PathLike, name: str = "*") -> int:
    """Remove the temporary files that :func:`atomic_path` left under ``folder`` when its process
    was killed (``.<name>.<random>.tmp<suffix>``; only ``name``'s if given). Call it only on a
    folder no other process is writing. Returns how many were removed."""
    count = 0
    for tmp in Path(folder).rglob(f".{name}.*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            count += 1
    return count


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt JSON file {path}: {exc}") from None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- provenance
def git_revision() -> str:
    """The git revision of the checkout holding the package (``+dirty`` if modified); in a run
    that pinned its code (:func:`pin_code`), the revision when it did."""
    return _PINNED_REVISION[0] if _PINNED_REVISION else _read_git_revision()


def _read_git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_DIR,
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "aepsl"], cwd=REPO_DIR,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- code revision
def _module_file(module: str, package_dir: Path) -> Path | None:
    """The source file of ``aepsl.x.y`` under ``package_dir`` (None if not a module of it)."""
    parts = module.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Names of the modules one module imports (absolute, relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # from . import metrics
    return found


def _normalised_source(path: Path) -> str:
    """The module's syntax tree without docstrings, comments, formatting or line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def code_modules(module: str, package_dir: str | os.PathLike = PACKAGE_DIR) -> dict[str, Path]:
    """``module`` and every module of the package it imports, directly or not (with the
    packages' ``__init__`` files on the way), as ``{name: file}``."""
    package_dir = Path(package_dir)
    todo, seen = [module], {}
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):   # importing a.b.c runs a/__init__ and a/b/__init__
            prefix = ".".join(parts[:i])
            path = _module_file(prefix, package_dir)
            if path is None or prefix in seen:
                continue
            seen[prefix] = path
            tree = ast.parse(path.read_text(), filename=str(path))
            todo.extend(_imported_modules(tree, prefix, path.name == "__init__.py"))
    if module not in seen:
        raise ValueError(f"no module {module} under {package_dir}")
    return dict(sorted(seen.items()))


# code hashes and the git revision fixed by pin_code for the rest of this process
_PINNED_HASHES: dict[tuple[str, str], str] = {}
_PINNED_REVISION: list[str] = []


def pin_code(modules, package_dir: str | os.PathLike = PACKAGE_DIR, load: bool = True) -> None:
    """Fix the code revision this process's stage records carry: import ``modules`` (the stages a
    run will compute; ``load`` False: hash them only) and hash them and read the git revision now.
    A run of many stages imports its code once, at its start; a file edited or a commit made while
    it goes on would otherwise be recorded by the later stages as code they did not run, and a
    later run would take their results for those of the new code."""
    import importlib

    modules = sorted(set(modules))
    if load:
        for module in modules:
            importlib.import_module(module)
    _PINNED_REVISION[:] = [_read_git_revision()]
    for module in modules:
        _PINNED_HASHES.pop((module, str(Path(package_dir))), None)
        _PINNED_HASHES[(module, str(Path(package_dir)))] = code_hash(module, package_dir)


def unpin_code() -> None:
    """Undo :func:`pin_code`: hashes and the revision are read from the files again."""
    _PINNED_HASHES.clear()
    _PINNED_REVISION.clear()


@contextlib.contextmanager
def code_pinned(modules, package_dir: str | os.PathLike = PACKAGE_DIR):
    """:func:`pin_code` for the ``with`` block; unpinned after it, however it ends."""
    pin_code(modules, package_dir)
    try:
        yield
    finally:
        unpin_code()


def code_hash(module: str, package_dir: str | os.PathLike = PACKAGE_DIR) -> str:
    """The code revision a stage's results depend on: a hash of the source of ``module`` and of
    every ``aepsl`` module it imports, directly or not.

    It hashes the syntax trees, so comments, docstrings and formatting do not count, while any
    change of code does, committed or not; a fresh clone gives the same hash. A stage records it
    among its hashed parameters, so a change of the code it runs makes its artifacts stale.
    """
    pinned = _PINNED_HASHES.get((module, str(Path(package_dir))))
    if pinned is not None:
        return pinned
    digest = hashlib.sha256()
    for name, path in code_modules(module, package_dir).items():
        digest.update(f"{name}\n{_normalised_source(path)}\n".encode())
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name ("unknown" where /proc/cpuinfo does not say). Recorded with every
    stage: the same seed gives the same numbers on one CPU model, but float rounding differs
    between models, and training drifts apart from it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def params_hash(params: dict) -> str:
    """A short, stable hash of a parameter dictionary."""
    blob = json.dumps(params, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_dir(artifacts_root: str | os.PathLike, profile: str, stage: str) -> Path:
    return Path(artifacts_root) / profile / stage


def load_metrics(folder: str | os.PathLike, profile: str | None = None) -> dict | None:
    """The folder's metrics.json (None if there is none). With ``profile``, a metrics.json
    written by a run of another profile is an :class:`ArtifactError`, never silently used."""
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None
    record = read_json(path)
    if profile is not None:
        check_profile(record, path, profile)
    return record


def check_profile(record: dict, path: Path, profile: str) -> None:
    written_by = (record.get("params") or {}).get("profile")
    if written_by is not None and written_by != profile:
        raise ArtifactError(
            f"{path} was written by profile {written_by!r}, but this run is profile {profile!r}: "
            f"artifact folders are not shared between profiles. Remove {path.parent} or rerun "
            f"with force=True (--force) to recompute it for {profile!r}.")


def folder_manifest(folder: str | os.PathLike) -> dict[str, int]:
    """What a finished stage folder holds, as metrics.json records it: the number of files in
    each of its folders (``"."`` for its own), hidden files (temporary, lock) and metrics.json
    left out. A count, not a list: a VOC stage writes tens of thousands of masks."""
    folder = Path(folder)
    counts: dict[str, int] = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel == Path("metrics.json") or not path.is_file():
            continue
        key = rel.parent.as_posix()
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def manifest_problem(folder: str | os.PathLike, record: dict) -> str | None:
    """Why the finished ``folder`` cannot be trusted (None when it can): a folder holding fewer
    files than its metrics.json says the stage wrote (files lost after it finished). A record
    without a file count (written before counts were kept) is trusted."""
    expected = record.get("files")
    if not isinstance(expected, dict):
        return None
    found = folder_manifest(folder)
    for sub, count in expected.items():
        if found.get(sub, 0) < count:
            where = "" if sub == "." else f" in {sub}/"
            return f"metrics.json lists {count} files{where} but {found.get(sub, 0)} are there"
    return None


def is_done(folder: str | os.PathLike, params: dict) -> bool:
    """True when ``folder`` holds a finished stage run with exactly these parameters and every
    file its metrics.json counts; a folder that lacks some is reported in one line and is not
    done (the stage computes again).

    A folder whose metrics.json was written under another profile raises ArtifactError.
    """
    metrics = load_metrics(folder, params.get("profile"))
    if not metrics or metrics.get("params_hash") != params_hash(params):
        return False
    problem = manifest_problem(folder, metrics)
    if problem:
        print(f"[aepsl] stage {metrics.get('stage', Path(folder).name)!r} in {folder}: {problem}; computing it again",
              file=sys.stderr, flush=True)
        return False
    return True


ARCHIVE_MARK = "@"


def archived_name(folder: str | os.PathLike, old_hash: str) -> Path:
    """Where a finished stage folder computed with other parameters is kept:
    ``<stage>@<its params hash>`` beside it."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}{ARCHIVE_MARK}{old_hash}")


def is_archived(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """True for a path inside an archived stage folder (one named ``<stage>@<hash>``)."""
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else path.parts
    return any(ARCHIVE_MARK in part for part in parts)


def current_metrics_files(profile_root: str | os.PathLike) -> list[Path]:
    """The metrics.json of every stage folder under ``artifacts/<profile>``, archived ones left out."""
    root = Path(profile_root)
    return [p for p in sorted(root.glob("**/metrics.json")) if not is_archived(p.parent, root)]


def archive_stale(folder: str | os.PathLike, params: dict) -> Path | None:
    """Move a finished stage folder that was computed with *other* parameters (or other code)
    aside to ``<stage>@<its params hash>``, so that a run with new parameters starts in a fresh
    folder and never overwrites earlier results; returns where it went (None when nothing moved:
    no folder, an unfinished one, or one with these very parameters, e.g. a forced rerun).
    An archive of the same old parameters is replaced."""
    folder = Path(folder)
    record = load_metrics(folder)
    if not record or record.get("params_hash") in (None, params_hash(params)):
        return None
    target = archived_name(folder, record["params_hash"])
    if target.exists():
        shutil.rmtree(target)
    try:
        os.replace(folder, target)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot move the stale stage folder {folder} aside to {target}: "
                                 f"{exc.strerror or exc}") from exc
    return target


def restore_archived(folder: str | os.PathLike, params: dict) -> Path | None:
    """Bring back a finished run of exactly these parameters that an earlier change of
    parameters moved aside (``<stage>@<hash>``): the folder in place, if finished with other
    parameters, goes aside in its turn, and the kept run is renamed into place, complete (every
    file its metrics.json counts). A run cache: setting a parameter back costs a rename, not the
    stage. Returns the folder restored from (None when nothing moved: no such archive, an
    incomplete one, or an unfinished folder in place, which its own run may resume)."""
    folder = Path(folder)
    kept = archived_name(folder, params_hash(params))
    if not kept.is_dir() or not is_done(kept, params):
        return None
    if folder.exists():
        current = load_metrics(folder)
        if not current or current.get("params_hash") is None:
            return None   # an interrupted run: leave it to resume or be replaced
        if current["params_hash"] == params_hash(params):
            return None   # already in place
        archive_stale(folder, params)
    os.replace(kept, folder)
    return kept


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (and of its largest finished child), MiB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)   # ru_maxrss is in KiB on Linux


def _world_size() -> int:
    from .dist import world_size

    return world_size()
# --------------------------------------------------------------------------- failed runs
_OPEN_RUNS: list["StageRun"] = []


def stage_entry(fn: Callable) -> Callable:
    """Decorator for a stage's entry point (``cam.run`` ...): when it raises an exception, the
    folders its :class:`StageRun` created are removed again, so a failed run (bad input, a
    full disk) leaves no partial artifact folder. A folder that existed before the run (e.g.
    one holding the checkpoint of an interrupted run) is kept. A process killed outright
    cleans nothing up: its atomic writes and epoch checkpoint are what the rerun resumes from.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mark = len(_OPEN_RUNS)
        try:
            return fn(*args, **kwargs)
        except Exception:
            for run in reversed(_OPEN_RUNS[mark:]):
                run.discard()
            raise
        finally:
            del _OPEN_RUNS[mark:]
    return wrapper


class StageRun:
    """Collects provenance for one stage run and writes metrics.json at the end.

    >>> run = StageRun(folder, "cam", params)
    >>> ...                        # do the work, fill run.metrics
    >>> run.finish()               # writes metrics.json atomically
    """

    def __init__(self, folder: str | os.PathLike, stage: str, params: dict, device: str = "cpu",
                 created: Path | None | bool = False):
        self.folder = Path(folder)
        self.stage = stage
        self.params = dict(params)
        self.device = device
        self.metrics: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._t0 = time.time()
        self._cpu0 = _cpu_seconds()
        self._load0 = _load_average()
        from .dist import is_main

        # results of other parameters are kept aside, not overwritten (rank 0 alone moves them)
        self.archived = archive_stale(self.folder, self.params) if is_main() else None
        # what to remove if the run fails (the caller may have found it before it made a lock file)
        self.created = missing_ancestor(self.folder) if created is False else created
        if self.archived is not None and self.created is None:
            self.created = self.folder   # the old folder went aside: the one made below is this run's
        make_dirs(self.folder)
        # a rerun starts by invalidating the old record, so that an interrupted rerun (of a
        # forced stage, say) is never mistaken for a finished one
        (self.folder / "metrics.json").unlink(missing_ok=True)
        remove_stale_temps(self.folder)   # half-written files of a killed earlier run
        self.finished = False
        _OPEN_RUNS.append(self)

    def discard(self) -> None:
        """Remove the folders this run created (after a failure); keep pre-existing ones."""
        if not self.finished and self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
        if not self.finished and self.archived is not None and not self.folder.exists():
            os.replace(self.archived, self.folder)   # a failed run gives the old results back

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.time()
        yield
        self.timings[name] = round(time.time() - t, 3)

    def finish(self) -> dict:
        import torch

        record = {
            "stage": self.stage,
            "metrics": self.metrics,
            "params": self.params,
            "params_hash": params_hash(self.params),
            "profile": self.params.get("profile"),
            "code_hash": self.params.get("code"),
            "seed": self.params.get("seed"),
            "git_revision": git_revision(),
            "device": self.device,
            "world_size": _world_size(),
            "wall_time_s": round(time.time() - self._t0, 3),
            # how the wall time was spent: CPU seconds of this process and its children (CRF
            # workers, data loaders), the 1-minute load average before and after (a figure taken
            # while other jobs shared the cores shows it), the peak resident memory
            "cpu_time_s": round(_cpu_seconds() - self._cpu0, 3),
            "load_average": {"start": self._load0, "end": _load_average()},
            "peak_rss_mib": _peak_rss_mib(),
            "timings_s": self.timings,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__},
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "cpu": cpu_model()},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": folder_manifest(self.folder),
        }
        write_json(self.folder / "metrics.json", record)
        self.finished = True
        if self in _OPEN_RUNS:
            _OPEN_RUNS.remove(self)
        return record
