"""Two runs on one artifacts folder, kill -9 of the one computing, Ctrl-C: each ends as designed.

The runs are ``python -m aepsl.stages`` on a one-stage profile (the tiny CAM stage of
test_interrupt). The first is stopped in the middle of training at a known point by the hold
of aepsl.engine.train (``AEPSL_TEST_HOLD=<epoch>:<batch>:<file>``: it creates <file> and waits
until the file is removed, or until it is killed or interrupted). A later run is given a hold
at epoch 1 as a probe: a run that trained the stage again instead of reusing (or resuming) it
would reach it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aepsl.engine.artifacts import REPO_DIR, folder_manifest, manifest_problem, read_json
from aepsl.engine.locks import lock_path

from test_interrupt import PROFILE, WAIT_S, _cam_params, _env, _start

pytestmark = pytest.mark.slow   # end-to-end subprocesses: left out by `make test-fast`

# python -m aepsl.stages, with Python's own Ctrl-C handler even where the test runs in the background
RUNNER = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
          "from aepsl.engine.run_stages import main\nsys.exit(main(sys.argv[1:]))")


_STARTED: list[subprocess.Popen] = []


def _run(cmd: list[str], hold: str | None, log: Path) -> subprocess.Popen:
    proc = _start(cmd, hold, log)
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_left():
    """A test that fails half-way leaves no run holding in the background."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _command(scene_tree: Path, tmp_path: Path, *extra: str) -> list[str]:
    params = _cam_params(scene_tree, tmp_path / "artifacts")
    common = {k: params.pop(k) for k in ("profile", "data_root", "artifacts_root", "seed", "device")}
    profile = tmp_path / "locks.yaml"
    profile.write_text(yaml.safe_dump({"common": common, "notebooks": {"01_cam": params}}))
    return [sys.executable, "-c", RUNNER, "--profile", str(profile), "--no-progress", *extra]


def _wait_for(proc: subprocess.Popen, log: Path, done) -> None:
    """Wait until ``done()`` (the process still running); fail if it ends first."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run ended (rc {proc.returncode}) or stalled before the expected point:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log: Path, probe: Path | None = None) -> int:
    """Wait for ``proc`` to end; fail if it reaches the ``probe`` hold (it trained again)."""
    deadline = time.monotonic() + WAIT_S
    while proc.poll() is None:
        if (probe is not None and probe.exists()) or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the run trained the stage again instead of reusing it" if probe is not None and probe.exists()
                        else f"the run did not finish:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc.returncode


def _held(cmd: list[str], tmp_path: Path, name: str = "first") -> tuple[subprocess.Popen, Path, Path]:
    """Start ``cmd`` and wait until it holds in training (before epoch 2, batch 1)."""
    marker, log = tmp_path / f"{name}.held", tmp_path / f"{name}.log"
    proc = _run(cmd, f"2:1:{marker}", log)
    _wait_for(proc, log, marker.exists)
    return proc, marker, log


def _assert_finished(folder: Path) -> dict:
    """metrics.json counts exactly the files beside it; no temporary file is left."""
    record = read_json(folder / "metrics.json")
    assert record["files"] and record["files"] == folder_manifest(folder)
    assert manifest_problem(folder, record) is None
    assert not list(folder.parent.rglob("*.tmp*")), "a temporary file was left behind"
    return record


def _third_run_finds_it_done(cmd: list[str], tmp_path: Path) -> str:
    probe, log = tmp_path / "third.held", tmp_path / "third.log"
    assert _finish(_run(cmd, f"1:0:{probe}", log), log, probe) == 0, log.read_text()[-3000:]
    return log.read_text()


def test_a_second_run_waits_for_the_stage_then_reuses_it(scene_tree, tmp_path):
    cmd = _command(scene_tree, tmp_path)
    first, marker, first_log = _held(cmd, tmp_path)

    probe, log = tmp_path / "second.held", tmp_path / "second.log"
    second = _run(cmd, f"1:0:{probe}", log)   # a probe: reaching epoch 1 means it trained
    _wait_for(second, log, lambda: "waiting for stage 'cam'" in log.read_text())
    line = next(x for x in log.read_text().splitlines() if "waiting for" in x)
    assert f"pid {first.pid}" in line
    assert not probe.exists()

    marker.unlink()   # the first run goes on and finishes; the second then reuses its result
    assert _finish(first, first_log) == 0, first_log.read_text()[-3000:]
    assert _finish(second, log, probe) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text() + first_log.read_text()

    folder = tmp_path / "artifacts" / PROFILE / "cam"
    record = _assert_finished(folder)
    assert [h["epoch"] for h in record["metrics"]["history"]] == [1, 2, 3]
    assert "waiting" not in _third_run_finds_it_done(cmd, tmp_path)
    assert read_json(folder / "metrics.json") == record   # reused as it was


def test_no_wait_stops_with_one_line_and_a_killed_holder_blocks_nothing(scene_tree, tmp_path):
    cmd = _command(scene_tree, tmp_path)
    first, _, _ = _held(cmd, tmp_path)

    busy = subprocess.run(cmd + ["--no-wait"], cwd=REPO_DIR, env=_env(), capture_output=True, text=True,
                          timeout=WAIT_S)
    assert busy.returncode == 1, busy.stdout + busy.stderr
    assert "Traceback" not in busy.stderr
    errors = busy.stderr.strip().splitlines()
    assert len(errors) == 1, busy.stderr
    assert "stage 'cam'" in errors[0] and f"pid {first.pid}" in errors[0] and "run the same command" in errors[0]

    os.killpg(first.pid, signal.SIGKILL)   # the holder dies without any cleanup
    assert first.wait(timeout=60) == -signal.SIGKILL
    folder = tmp_path / "artifacts" / PROFILE / "cam"
    assert lock_path(folder).exists() and not (folder / "metrics.json").exists()

    log = _third_run_finds_it_done(cmd, tmp_path)   # takes the lock at once; resumes from epoch 1's checkpoint
    assert "waiting" not in log and "Traceback" not in log
    _assert_finished(folder)


def test_ctrl_c_during_a_stage_prints_one_line_exits_130_and_the_rerun_resumes(scene_tree, tmp_path):
    cmd = _command(scene_tree, tmp_path)
    first, _, log = _held(cmd, tmp_path)
    os.kill(first.pid, signal.SIGINT)
    assert first.wait(timeout=WAIT_S) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "interrupted: cam; rerun the same command to resume"

    folder = tmp_path / "artifacts" / PROFILE / "cam"
    assert (folder / "checkpoint.pt").exists() and not (folder / "metrics.json").exists()
    assert not list(folder.rglob("*.tmp*")), "a temporary file was left behind"
    _third_run_finds_it_done(cmd, tmp_path)   # resumes from the checkpoint: never reaches epoch 1
    record = _assert_finished(folder)
    assert [h["epoch"] for h in record["metrics"]["history"]] == [1, 2, 3]


def test_a_finished_stage_missing_a_file_is_computed_again(scene_tree, tmp_path, capsys):
    from aepsl.methods import cam

    params = _cam_params(scene_tree, tmp_path / "artifacts")
    first = cam.run(params, progress=False)
    folder = tmp_path / "artifacts" / PROFILE / "cam"
    assert first["files"] == folder_manifest(folder)
    sub = max(first["files"], key=first["files"].get)   # the folder with the most files
    lost = sorted(p for p in (folder / sub).iterdir() if p.is_file() and p.name != "metrics.json")[0]
    lost.unlink()
    assert manifest_problem(folder, first) is not None

    capsys.readouterr()
    again = cam.run(params, progress=False)
    err = capsys.readouterr().err
    assert "computing it again" in err and "stage 'cam'" in err
    assert lost.exists()
    assert again["files"] == first["files"] == folder_manifest(folder)


HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom aepsl.engine.locks import locked\n"
          "with locked(sys.argv[1], 'page'):\n    Path(sys.argv[2]).write_text('held')\n    time.sleep(600)\n")


def test_a_page_being_executed_elsewhere_stops_a_no_wait_run_and_a_killed_holder_frees_it(tmp_path, monkeypatch):
    from aepsl.engine.locks import StageBusy, locked
    from aepsl.engine.run_notebooks import execute

    page, marker, log = tmp_path / "notebooks" / "01_cam.ipynb", tmp_path / "held", tmp_path / "holder.log"
    holder = _run([sys.executable, "-c", HOLDER, str(page), str(marker)], None, log)
    _wait_for(holder, log, marker.exists)
    monkeypatch.setenv("AEPSL_LOCK_WAIT", "0")
    with pytest.raises(StageBusy, match=rf"^pid {holder.pid} .* is executing page '01_cam'; run the same command"):
        execute("01_cam", {}, page)
    assert not page.exists()

    os.killpg(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    with locked(page, "page '01_cam'") as held:   # taken at once: nothing stale blocks
        assert held


def test_a_folder_that_cannot_hold_a_lock_file_still_serves_finished_stages(scene_tree, tmp_path, monkeypatch):
    """A read-only artifacts folder (simulated: tests run as root, whom permission bits do not
    stop): the lock file cannot be created, a finished stage is read as it is."""
    import errno

    from aepsl.engine import locks
    from aepsl.methods import cam

    params = _cam_params(scene_tree, tmp_path / "artifacts")
    params["epochs"] = 1
    record = cam.run(params, progress=False)
    folder = tmp_path / "artifacts" / PROFILE / "cam"
    written = (folder / "metrics.json").stat().st_mtime_ns
    lock = lock_path(folder)
    lock.unlink()

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(locks.os, "open", refuse)
    again = cam.run(params, progress=False)
    assert (again["params_hash"], again["finished_at"]) == (record["params_hash"], record["finished_at"])
    assert (folder / "metrics.json").stat().st_mtime_ns == written   # read, not computed again
    assert not lock.exists()


@pytest.mark.notebooks
def test_ctrl_c_during_a_page_prints_one_line_exits_130_and_the_rerun_writes_it(scene_tree, tmp_path):
    """``python -m aepsl`` computes the stage, then waits at its page, whose lock this test holds
    (a known point); Ctrl-C there. The rerun reuses the stage and executes the page."""
    from aepsl.engine.locks import locked

    cmd = _command(scene_tree, tmp_path)
    cmd = [sys.executable, "-c", RUNNER.replace("run_stages", "run_notebooks"), *cmd[3:]]
    cmd.remove("--no-progress")
    page = tmp_path / "artifacts" / PROFILE / "notebooks" / "01_cam.ipynb"
    log = tmp_path / "first.log"
    with locked(page, "page '01_cam'"):
        first = _run(cmd, None, log)
        _wait_for(first, log, lambda: "waiting for page '01_cam'" in log.read_text())
        os.kill(first.pid, signal.SIGINT)
        assert first.wait(timeout=WAIT_S) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "interrupted: page 01_cam; rerun the same command to resume"
    assert not page.exists() and not list(page.parent.glob("*.tmp*"))

    rerun = tmp_path / "rerun.log"
    assert _finish(_run(cmd, None, rerun), rerun) == 0, rerun.read_text()[-3000:]
    assert "stage done" in rerun.read_text() and page.exists()
    _assert_finished(tmp_path / "artifacts" / PROFILE / "cam")
