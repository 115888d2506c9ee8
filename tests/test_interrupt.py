"""kill -9 in the middle of training, then the same command again: it resumes from the last
epoch checkpoint and ends with the same metrics as a run that was never interrupted (CPU).

The training is stopped at a known point with the fault-injection hook of aepsl.engine.train
(``AEPSL_TEST_HOLD=<epoch>:<batch>:<file>``: before that batch the process creates <file> and
waits), then its whole process group is killed with SIGKILL, so nothing can clean up. The
rerun is given a hold at epoch 1: a rerun that started over instead of resuming would reach
it, so finishing without reaching it shows that it resumed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from aepsl.methods import cam
from aepsl.engine.artifacts import REPO_DIR, read_json

pytestmark = pytest.mark.slow   # end-to-end: left out by `make test-fast`

PROFILE = "interrupt"
WAIT_S = 600   # a generous limit for a subprocess to reach the hold or finish (not a measurement)


def _cam_params(tree: Path, root: Path) -> dict:
    """A tiny CAM stage: 24 images, batches of 8 -> 3 steps per epoch, 3 epochs."""
    return dict(profile=PROFILE, data_root=str(tree), artifacts_root=str(root), seed=0, device="cpu",
                backbone="small", backbone_weights="", width=4, epochs=3, batch_size=8, lr=0.05, crop=32,
                cam_scales=[1.0, 0.5], eval_batch_size=8)


def _numbers(record: dict) -> dict:
    """The stage's metrics without wall times."""
    m = json.loads(json.dumps(record["metrics"], default=lambda o: o.tolist()))
    for h in m.get("history", []):
        h.pop("seconds", None)
    return m


def _env(hold: str | None = None, variable: str = "AEPSL_TEST_HOLD") -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
    env.pop("AEPSL_TEST_HOLD", None)
    env.pop("AEPSL_TEST_HOLD_CRF", None)
    if hold:
        env[variable] = hold
    return env


def _start(cmd: list[str], hold: str | None, log: Path, variable: str = "AEPSL_TEST_HOLD") -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen(cmd, cwd=REPO_DIR, env=_env(hold, variable), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)   # its own process group: papermill's kernel too


def _kill_at_hold(cmd: list[str], marker: Path, log: Path, hold: str = "2:1",
                  variable: str = "AEPSL_TEST_HOLD") -> None:
    """Run ``cmd`` until it holds (by default: training, before epoch 2, batch 1; ``variable``
    picks the hook); then SIGKILL its process group."""
    proc = _start(cmd, f"{hold}:{marker}", log, variable)
    deadline = time.monotonic() + WAIT_S
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before reaching the hold:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run did not reach the hold:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _rerun_resumes(cmd: list[str], marker: Path, log: Path) -> None:
    """Run ``cmd`` to the end; fail if it trains epoch 1 again (it would reach the hold)."""
    proc = _start(cmd, f"1:0:{marker}", log)
    deadline = time.monotonic() + WAIT_S
    while proc.poll() is None:
        if marker.exists() or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the rerun trained epoch 1 again instead of resuming from the checkpoint"
                        if marker.exists() else f"the rerun did not finish:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _assert_killed_mid_training(folder: Path) -> None:
    """What a kill in epoch 2 leaves: the epoch-1 checkpoint, no model, no metrics.json."""
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    assert not (folder / "model.pt").exists()
    assert not (folder / "metrics.json").exists()


@pytest.fixture(scope="module")
def uninterrupted(scene_tree, tmp_path_factory) -> dict:
    """The reference: the same CAM stage run once, in this process, without interruption."""
    root = tmp_path_factory.mktemp("uninterrupted")
    return cam.run(_cam_params(scene_tree, root), progress=False)


def test_kill_9_during_training_then_rerun_resumes_to_the_same_metrics(scene_tree, uninterrupted, tmp_path):
    root = tmp_path / "artifacts"
    params = _cam_params(scene_tree, root)
    cmd = [sys.executable, "-c", "import json, sys\nfrom aepsl.methods import cam\ncam.run(json.loads(sys.argv[1]), progress=False)",
           json.dumps(params)]
    folder = root / PROFILE / "cam"

    _kill_at_hold(cmd, tmp_path / "held", tmp_path / "first.log")
    _assert_killed_mid_training(folder)

    _rerun_resumes(cmd, tmp_path / "held-again", tmp_path / "rerun.log")
    record = read_json(folder / "metrics.json")
    assert [h["epoch"] for h in record["metrics"]["history"]] == [1, 2, 3]
    assert _numbers(record) == _numbers(uninterrupted)
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"] == 3
    assert not list(root.rglob("*.tmp*")), "a temporary file was left behind"


@pytest.mark.notebooks
def test_kill_9_during_a_papermill_run_then_rerun_resumes(scene_tree, uninterrupted, tmp_path):
    """The same through `python -m aepsl` (papermill and its kernel killed together)."""
    root = tmp_path / "artifacts"
    params = {k: v for k, v in _cam_params(scene_tree, root).items()}
    common = {k: params.pop(k) for k in ("profile", "data_root", "artifacts_root", "seed", "device")}
    profile = tmp_path / "interrupt.yaml"
    profile.write_text(yaml.safe_dump({"common": common, "notebooks": {"01_cam": params}}))
    cmd = [sys.executable, "-m", "aepsl", "--profile", str(profile)]
    folder = root / PROFILE / "cam"

    _kill_at_hold(cmd, tmp_path / "held", tmp_path / "first.log")
    _assert_killed_mid_training(folder)
    assert not (root / PROFILE / "notebooks" / "01_cam.ipynb").exists()

    _rerun_resumes(cmd, tmp_path / "held-again", tmp_path / "rerun.log")
    assert _numbers(read_json(folder / "metrics.json")) == _numbers(uninterrupted)
    executed = json.loads((root / PROFILE / "notebooks" / "01_cam.ipynb").read_text())
    assert executed["metadata"]["papermill"]["duration"] > 0
    assert not list(root.rglob("*.tmp*")), "a temporary file was left behind"


def _oracle_params(tree: Path, root: Path) -> dict:
    """A tiny segmenter stage with the dense CRF: 2 epochs, CRF on val (1 batch) then on the
    24 training images (3 batches of 8, written to train_crf/), in a pool of 2 processes."""
    return dict(profile=PROFILE, data_root=str(tree), artifacts_root=str(root), seed=0, device="cpu",
                stage="oracle", labels="ground_truth", online=False, backbone="small", backbone_weights="",
                width=4, head_channels=16, epochs=2, batch_size=8, crop=32, eval_batch_size=8, crf=True,
                crf_workers=2)


def test_kill_9_during_the_crf_then_rerun_ends_with_the_same_metrics(scene_tree, tmp_path):
    from aepsl.methods import psl

    reference = psl.run(_oracle_params(scene_tree, tmp_path / "uninterrupted"), progress=False)
    root = tmp_path / "artifacts"
    cmd = [sys.executable, "-c", "import json, sys\nfrom aepsl.methods import psl\npsl.run(json.loads(sys.argv[1]), progress=False)",
           json.dumps(_oracle_params(scene_tree, root))]
    folder = root / PROFILE / "oracle"
    # val's CRF done (call 1), the first training batch's masks written (call 2), hold in call 3
    _kill_at_hold(cmd, tmp_path / "held", tmp_path / "first.log", hold="3", variable="AEPSL_TEST_HOLD_CRF")
    # killed in the middle of the CRF pass over the training images: trained, part of train_crf/
    assert (folder / "model.pt").exists() and not (folder / "metrics.json").exists()
    assert len(list((folder / "train_crf").glob("*.png"))) == 8

    _rerun_resumes(cmd, tmp_path / "held-again", tmp_path / "rerun.log")   # no epoch trained again
    record = read_json(folder / "metrics.json")
    assert _numbers(record) == _numbers(reference)
    names = (scene_tree / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    ref_dir = tmp_path / "uninterrupted" / PROFILE / "oracle" / "train_crf"
    for name in names:   # every refined mask as the uninterrupted run wrote it
        assert (folder / "train_crf" / f"{name}.png").read_bytes() == (ref_dir / f"{name}.png").read_bytes()
    assert not list(root.rglob("*.tmp*")), "a temporary file was left behind"
