"""One writer per stage folder (and per executed page): an OS lock that dies with its process.

Two runs may share one artifacts folder (a second terminal, a notebook opened in JupyterLab
while ``make book`` runs). Whatever writes a stage folder does it holding that folder's lock,
``.<stage>.lock`` beside the folder (``artifacts/quick/.cam.lock``,
``artifacts/quick/erasing_blur/.round1.lock``); an executed page's writer holds
``.<page>.ipynb.lock`` beside the page. The lock is ``fcntl.flock`` on that file: the kernel
drops it when its process ends however it ends, kill -9 included, so a killed holder never
blocks the next run. The file holds the holder's pid, command and start time, for the message
a second run prints.

Why per stage and not per profile: a runner's pages are executed by papermill in kernels of
their own, which call the stage functions again to read their records; a profile lock held by
the runner would block its own pages. Per stage, a second run waits only for the stage it needs,
then finds it finished and reuses it; runs of different stages go on side by side.

A second process that needs a locked stage waits (one line says for whom) and then re-checks
whether the stage is done; with ``AEPSL_LOCK_WAIT=0`` in the environment (``--no-wait`` of both
runners) it stops at once with :class:`StageBusy`, one line naming the stage, the holder and
what to do. Under torchrun only rank 0 takes the lock (the other ranks write nothing).

A folder that cannot hold the lock file (a read-only artifacts folder) is used without a lock:
reading finished stages needs none, and a stage that must compute there fails with the
write error that names the folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from .artifacts import ArtifactError

WAIT_ENV = "AEPSL_LOCK_WAIT"

# locks this process holds: path -> [fd, depth] (a stage that calls a stage it already holds)
_HELD: dict[str, list] = {}


def _forget_in_child() -> None:
    """A forked child (a data loader or CRF worker) closes its copies of the held lock files: the
    lock stays its parent's and ends with the parent, never kept alive by a leftover worker."""
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class StageBusy(ArtifactError):
    """Another process is computing the stage (or executing the page) this run needs."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of a stage folder or output file: ``.<name>.lock`` beside it."""
    target = Path(target).absolute()
    return target.with_name(f".{target.name}.lock")


def waits() -> bool:
    """Whether a run waits for a busy stage (default) or stops at once (``AEPSL_LOCK_WAIT=0``)."""
    return os.environ.get(WAIT_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def holder(path: str | os.PathLike) -> str:
    """Who holds the lock, as its file says ("pid N (command, started T)"); "another process"
    when the file says nothing readable."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def _open(path: Path) -> int | None:
    """The lock file opened for locking; None where it cannot be created (a read-only or full
    disk, a file where a folder should be): the stage's own writes then say what is wrong."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return None


def _same_file(fd: int, path: Path) -> bool:
    """The locked file is still the one at ``path`` (a failed first run may remove it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def locked(target: str | os.PathLike, what: str, doing: str = "computing") -> Iterator[bool]:
    """Hold the lock of ``target`` (a stage folder or a page file) for the block; ``what``
    names it in messages ("stage 'cam'"), ``doing`` says what its holder does. Yields whether a lock is held (False where the
    folder cannot hold one). Waits for another holder, or raises :class:`StageBusy`."""
    path = lock_path(target)
    key = str(path)
    if key in _HELD:   # this process holds it already
        _HELD[key][1] += 1
        try:
            yield True
        finally:
            if key in _HELD:
                _HELD[key][1] -= 1
        return
    told = False
    while True:
        fd = _open(path)
        if fd is None:
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path)
            if not waits():
                os.close(fd)
                raise StageBusy(f"{who} is {doing} {what}; run the same command again when it has ended, "
                                "or without --no-wait to wait for it") from None
            if not told:
                print(f"[aepsl] waiting for {what}, which {who} is {doing}", file=sys.stderr, flush=True)
                told = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:   # Ctrl-C while waiting
                os.close(fd)
                raise
        if _same_file(fd, path):
            break
        os.close(fd)   # the file was removed while we waited: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({' '.join(sys.argv)[:200]}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
    except OSError:
        pass   # the message loses its detail, the lock holds
    _HELD[key] = [fd, 1]
    pid = os.getpid()
    try:
        yield True
    finally:
        if os.getpid() == pid:   # not in a forked child, whose copy was closed at the fork
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)   # closing the last descriptor releases the lock


def remove_lock(target: str | os.PathLike) -> None:
    """Remove the lock file of ``target`` (held by this process: a failed first run leaves no
    trace; a process waiting on it locks the new file instead, see :func:`locked`)."""
    with contextlib.suppress(OSError):
        lock_path(target).unlink()
