"""Run folders, atomic writes and metrics.json.

Every stage writes into ``artifacts/<profile>/<stage>/``.  Anything that lands
there is written to a temporary file in the same folder first and then renamed
into place, so an interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched. Under torchrun
    only rank 0 writes (see :mod:`aepsl.dist`); a write from another rank is an error.
    """
    path = Path(path)
    _check_writer(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create folder {path.parent}: {exc}") from exc
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _check_writer(path: Path) -> None:
    torch = sys.modules.get("torch")   # no process group can exist before torch is imported
    if torch is None:
        return
    td = torch.distributed
    if td.is_available() and td.is_initialized() and td.get_rank() != 0:
        raise RuntimeError(f"rank {td.get_rank()} tried to write {path}: with several processes "
                           "(torchrun) only rank 0 writes artifacts")


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
    """The git revision of the checkout holding the package (``+dirty`` if modified)."""
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


def params_hash(params: dict) -> str:
    """A short, stable hash of a parameter dictionary."""
    blob = json.dumps(params, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_dir(artifacts_root: str | os.PathLike, profile: str, stage: str) -> Path:
    return Path(artifacts_root) / profile / stage


def load_metrics(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None
    return read_json(path)


def is_done(folder: str | os.PathLike, params: dict) -> bool:
    """True when ``folder`` holds a finished stage run with exactly these parameters."""
    metrics = load_metrics(folder)
    return bool(metrics) and metrics.get("params_hash") == params_hash(params)


def _world_size() -> int:
    from .dist import world_size

    return world_size()


class StageRun:
    """Collects provenance for one stage run and writes metrics.json at the end.

    >>> run = StageRun(folder, "cam", params)
    >>> ...                        # do the work, fill run.metrics
    >>> run.finish()               # writes metrics.json atomically
    """

    def __init__(self, folder: str | os.PathLike, stage: str, params: dict, device: str = "cpu"):
        self.folder = Path(folder)
        self.stage = stage
        self.params = dict(params)
        self.device = device
        self.metrics: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._t0 = time.time()
        self.folder.mkdir(parents=True, exist_ok=True)

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
            "seed": self.params.get("seed"),
            "git_revision": git_revision(),
            "device": self.device,
            "world_size": _world_size(),
            "wall_time_s": round(time.time() - self._t0, 3),
            "timings_s": self.timings,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__},
            "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(self.folder / "metrics.json", record)
        return record
