"""Several processes: torchrun with 2 CPU processes (gloo) through the stages CLI, with a training
seed of its own (``--seed 1``: the profile's stages under ``ddp_seed1``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from aepsl.methods import cam

from aepsl.engine import dist
from aepsl.engine.artifacts import REPO_DIR, read_json
from aepsl.data.voc import VOCTree

pytestmark = pytest.mark.slow   # end-to-end: left out by `make test-fast`

PROFILE = """\
common: {{profile: ddp, seed: 0, device: cpu, data_root: "{tree}", artifacts_root: "{artifacts}"}}
notebooks:
  01_cam: {{backbone: small, backbone_weights: "", width: 4, epochs: 2, batch_size: 8, crop: 32,
            cam_scales: [1.0], eval_batch_size: 8}}
  02_erasing:
    mine_threshold: 0.3
    eval_batch_size: 8
    runs: [{{round: 1}}, {{round: 2}}]
  03_pseudo_masks: {{rounds: 2}}
  04_psl: {{backbone: small, backbone_weights: "", width: 4, head_channels: 8, head_dilation: 2, epochs: 1,
            batch_size: 8, crop: 32, crf: false, predict_train: false, eval_batch_size: 8}}
"""


@pytest.fixture(scope="module")
def torchrun(scene_tree, tmp_path_factory):
    """One torchrun launch of tests/ddp_worker.py with 2 processes, the profile run with ``--seed 1``:
    (completed process, the seed run's artifacts, scratch, results)."""
    root = tmp_path_factory.mktemp("ddp")
    artifacts, scratch = root / "artifacts", root / "scratch"
    scratch.mkdir()
    profile = root / "ddp.yaml"
    profile.write_text(PROFILE.format(tree=scene_tree, artifacts=artifacts))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO_DIR / "tests" / "ddp_worker.py"), str(profile), str(scene_tree), str(scratch),
                           "--seed", "1"],
                          cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=600)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            results[r["rank"]] = r
    return proc, artifacts / "ddp_seed1", scratch, results


def test_both_processes_finish(torchrun):
    proc, _, _, results = torchrun
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(results) == [0, 1]
    assert all(r["world"] == 2 and r["rc"] == 0 for r in results.values())


def test_every_stage_was_written_once_by_a_two_process_run(torchrun, scene_tree):
    _, folder, _, _ = torchrun
    stages = ["cam", "erasing/round1", "erasing/round2", "pseudo_masks", "psl"]
    for stage in stages:
        record = read_json(folder / stage / "metrics.json")
        assert record["world_size"] == 2, stage      # computed inside the process group, not twice alone
    names = VOCTree(scene_tree).ids("train")
    assert sorted(p.stem for p in (folder / "cam" / "cams").glob("*.npy")) == sorted(names)
    assert sorted(p.stem for p in (folder / "erasing" / "round2" / "regions").glob("*.png")) == sorted(names)
    assert sorted(p.stem for p in (folder / "pseudo_masks" / "masks").glob("*.png")) == sorted(names)
    # no temporary file left behind by a write that two processes raced for
    assert not [p for p in folder.rglob("*.tmp*")]


def test_seed_under_torchrun_trains_with_it_in_its_own_folder(torchrun):
    """--seed 1 under torchrun: every stage's record says seed 1, rank 0 wrote the folder's
    profile.json (seed 1, a seed run of ddp), and nothing went to the profile's own folder."""
    _, folder, _, _ = torchrun
    for stage in ["cam", "erasing/round1", "erasing/round2", "pseudo_masks", "psl"]:
        params = read_json(folder / stage / "metrics.json")["params"]
        assert params["seed"] == 1 and params["profile"] == "ddp_seed1", stage
    assert read_json(folder / "profile.json") == {"profile": "ddp_seed1", "seed": 1, "seed_of": "ddp"}
    assert not (folder.parent / "ddp").exists()


def test_checkpoints_and_models_load(torchrun):
    _, folder, _, _ = torchrun
    ckpt = torch.load(folder / "cam" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2 and [h["epoch"] for h in ckpt["history"]] == [1, 2]
    model = cam.load_model(folder / "cam")
    model.load_state_dict(ckpt["model"])     # the same keys as a single-process model (no DDP 'module.' prefix)
    m = read_json(folder / "cam" / "metrics.json")["metrics"]
    assert 0 <= m["seed_miou"] <= 1 and all(h["loss"] > 0 for h in m["history"])
    psl = read_json(folder / "psl" / "metrics.json")["metrics"]
    assert 0 <= psl["eval"]["miou"] <= 1
    assert torch.load(folder / "psl" / "checkpoint.pt", map_location="cpu", weights_only=False)["epoch"] == 1


def test_only_rank_0_writes(torchrun):
    _, _, scratch, results = torchrun
    assert "rank 1 tried to write" in results[1]["guard"]
    assert not (scratch / "rank1.txt").exists()
    assert (scratch / "fit.pt").exists()                 # rank 0's checkpoint of the extra fit


def test_replicas_stay_identical_and_train(torchrun):
    _, _, _, results = torchrun
    for r in results.values():
        assert r["replica_max_diff"] == 0.0             # DDP averaged the gradients of both shards
        assert r["moved"] > 0                           # and the weights did change
    # the epoch losses are averaged over both processes, so both report the same history
    same = [[{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]] for r in results.values()]
    assert same[0] == same[1] and len(same[0]) == 1


def test_single_process_helpers_are_no_ops():
    assert not dist.is_initialized()
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    dist.barrier()
    t = torch.ones(3)
    assert dist.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0, 1.0]
    assert dist.init_from_env("cpu") is False            # no WORLD_SIZE: no group


def test_stages_cli_in_one_process(scene_tree, tmp_path, capsys):
    """Without torchrun the CLI runs each stage once in this process; a second call skips it."""
    from aepsl import stages

    profile = tmp_path / "one.yaml"
    profile.write_text(PROFILE.format(tree=scene_tree, artifacts=tmp_path / "artifacts").split("  02_erasing")[0]
                       + "  08_results: {force: false}\n")
    assert stages.main(["--profile", str(profile), "--no-progress"]) == 0
    first = read_json(tmp_path / "artifacts" / "ddp" / "cam" / "metrics.json")
    assert first["world_size"] == 1
    assert "08_results: a page, nothing to compute" in capsys.readouterr().out
    assert stages.main(["--profile", str(profile), "--no-progress"]) == 0
    assert read_json(tmp_path / "artifacts" / "ddp" / "cam" / "metrics.json")["finished_at"] == first["finished_at"]
    assert stages.main(["--profile", str(profile), "--only", "07_nothing"]) == 2
    assert "07_nothing" in capsys.readouterr().err
    # parameters are checked against the notebooks before anything runs
    profile.write_text(profile.read_text().replace("epochs: 2", "epochz: 2"))
    assert stages.main(["--profile", str(profile), "--force"]) == 2
    assert "epochz" in capsys.readouterr().err
    assert read_json(tmp_path / "artifacts" / "ddp" / "cam" / "metrics.json")["finished_at"] == first["finished_at"]
