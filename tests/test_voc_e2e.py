"""The whole PASCAL VOC profile end to end, on a VOC-format tree of three images written here.

The tree is what VOC 2012 looks like on disk, without SBD: ``JPEGImages/*.jpg`` of different
sizes, ``SegmentationClass/*.png`` palette PNGs with a 255 border around every object, and
``ImageSets/Segmentation/{train,val,trainval}.txt`` (2 train images, 1 val image). The profile
is ``notebooks/params/voc.yaml`` shrunk in place (EfficientNet-Lite0 with the package's ImageNet
weights cut at stage 5, 1 epoch, 48 px crops, CPU, ``train`` instead of ``train_aug``), every
run kept: CAM and CAM + HFPL, the three erasing rounds with and without HFPL, the merge, the AE
segmenter, PSL and the oracle, PSL++, AffinityNet on CAM and AE seeds, HFPL, results and
provenance. Both runners must go through it, each on fresh artifacts: ``python -m aepsl.stages``
computes every stage, and ``python -m aepsl`` computes every stage and renders every page; the
two must give every stage the same parameters and code (so either runner's stages are the
other's: pages run after ``python -m aepsl.stages`` only draw), and the results table must hold
a row for every method the profile produces.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from aepsl.engine.artifacts import REPO_DIR
from aepsl.engine.config import PARAMS_DIR
from aepsl.data.voc import VOC_CLASSES, write_mask, write_split

pytestmark = pytest.mark.notebooks

PROFILE = "voc_tiny"
# name -> ((W, H), [(class index, (x, y, w, h))]); classes: aeroplane 1, cat 8, person 15
IMAGES = {
    "2007_000032": ((64, 48), [(1, (4, 6, 30, 18)), (15, (40, 20, 16, 24))]),
    "2007_000039": ((48, 64), [(8, (6, 8, 26, 22)), (15, (20, 36, 18, 22))]),
    "2007_000063": ((56, 56), [(8, (30, 4, 22, 20)), (15, (6, 24, 18, 26))]),
}
TRAIN, VAL = list(IMAGES)[:2], list(IMAGES)[2:]
COLOURS = {1: (200, 60, 40), 8: (60, 190, 70), 15: (50, 70, 220)}
TIMEOUT_S = 1500   # per runner call; the whole module takes a few minutes on two busy cores

# Shrinking of voc.yaml: a key is replaced wherever an entry or a run sets it.
SHRINK = {
    "backbone": "efficientnet_lite0", "backbone_weights": "package", "backbone_depth": "stage5",
    "epochs": 1, "batch_size": 2, "crop": 48, "cam_scales": [1.0], "num_workers": 0,
    "eval_batch_size": 4, "crf_workers": 0, "head_channels": 32, "embed_dim": 16,
    "logt": 2, "logt_sweep": [0, 1, 2], "device": "cpu",
}
SPLITS = {"train_aug": "train"}   # no SBD: train on VOC's own train list


def _object_mask(size: tuple[int, int], objects) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask with a one-pixel 255 band on every object's outline), as VOC draws them."""
    w, h = size
    rng = np.random.default_rng(w * 1000 + h)
    image = rng.integers(100, 150, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for c, (x, y, bw, bh) in objects:
        image[y:y + bh, x:x + bw] = np.clip(np.asarray(COLOURS[c]) + rng.integers(-15, 15, (bh, bw, 3)), 0, 255)
        mask[y:y + bh, x:x + bw] = c
    inner = np.zeros_like(mask, bool)
    inner[1:-1, 1:-1] = ((mask[1:-1, 1:-1] == mask[:-2, 1:-1]) & (mask[1:-1, 1:-1] == mask[2:, 1:-1])
                         & (mask[1:-1, 1:-1] == mask[1:-1, :-2]) & (mask[1:-1, 1:-1] == mask[1:-1, 2:]))
    mask[(mask > 0) & ~inner] = 255
    return image, mask


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory) -> Path:
    """VOCdevkit/VOC2012 with 3 images (2 train, 1 val); no classes file, no labels file, no SBD."""
    root = tmp_path_factory.mktemp("voc-e2e") / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    for name, (size, objects) in IMAGES.items():
        image, mask = _object_mask(size, objects)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=95)
        write_mask(root / "SegmentationClass" / f"{name}.png", mask)
    write_split(root, "train", TRAIN)
    write_split(root, "val", VAL)
    write_split(root, "trainval", TRAIN + VAL)
    # what the reader sees: the 21 VOC classes, labels derived from the masks, borders kept
    from aepsl.data.voc import VOCTree

    tree = VOCTree(root)
    assert tree.classes == list(VOC_CLASSES)
    assert tree.labels(TRAIN[0]).nonzero()[0].tolist() == [0, 14]      # aeroplane, person
    with Image.open(root / "SegmentationClass" / f"{TRAIN[0]}.png") as png:
        assert png.mode == "P" and 255 in np.asarray(png)
    return root


def _shrink(entry: dict) -> dict:
    for key, value in SHRINK.items():
        if key in entry:
            entry[key] = copy.deepcopy(value)
    for key in ("train_split", "score_split"):
        if entry.get(key) in SPLITS:
            entry[key] = SPLITS[entry[key]]
    return entry


def shrunk_voc_profile(data_root: Path, artifacts_root: Path, name: str = PROFILE) -> dict:
    """notebooks/params/voc.yaml with every run kept and every run made tiny."""
    profile = yaml.safe_load((PARAMS_DIR / "voc.yaml").read_text())
    profile["common"].update(profile=name, device="cpu", data_root=str(data_root),
                             artifacts_root=str(artifacts_root))
    for entry in profile["notebooks"].values():
        if not entry:
            continue
        _shrink(entry)
        for run in entry.get("runs") or []:
            _shrink(run)
    return profile


def write_profile(folder: Path, data_root: Path, artifacts_root: Path) -> tuple[Path, dict]:
    profile = shrunk_voc_profile(data_root, artifacts_root)
    path = folder / f"{PROFILE}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path, profile


def run_cli(module: str, profile: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", module, "--profile", str(profile)]
    if module == "aepsl.stages":
        args.append("--no-progress")
    return subprocess.run(args, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _tail(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    err = "".join(line for line in proc.stderr.splitlines(keepends=True) if "[IPKernelApp] WARNING" not in line)
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-n:]}\n--- stderr ---\n{err[-n:]}"


def expected_rows(profile: dict) -> list[str]:
    """The rows of tables.ablation_table that this profile's runs produce."""
    rounds = profile["notebooks"]["03_pseudo_masks"]["rounds"]
    rows = ["CAM (best bg threshold)", "CAM + HFPL", "CAM + random walk (AffinityNet)"]
    rows += [f"AE, {k} round{'s' if k > 1 else ''}" for k in range(1, rounds + 1)]
    rows += [f"AE + HFPL, {rounds} rounds", "AE + random walk (AffinityNet)",
             "AE (segmenter on AE masks, no PSL)", "AE + PSL", "PSL++", "fully supervised oracle"]
    if profile["notebooks"]["04_psl"].get("crf"):
        rows += ["AE + PSL + CRF", "fully supervised oracle + CRF"]
    if profile["notebooks"]["05_psl_plus_plus"].get("crf"):
        rows += ["PSL++ + CRF"]
    return rows


def check_results(artifacts_root: Path, profile: dict) -> None:
    from aepsl.book.tables import ablation_table

    table = ablation_table(artifacts_root, PROFILE)
    missing = [r for r in expected_rows(profile) if r not in table.index]
    assert not missing, f"results table lacks {missing}; it has {list(table.index)}"
    pseudo = table["pseudo-label mIoU (train)"].astype(float)
    final = table["final mIoU (held-out)"].astype(float)
    for row in ("CAM (best bg threshold)", "CAM + HFPL", "AE, 1 round", "CAM + random walk (AffinityNet)",
                "AE + random walk (AffinityNet)"):
        assert 0 <= pseudo[row] <= 1, (row, pseudo[row])
    for row in ("AE (segmenter on AE masks, no PSL)", "AE + PSL", "PSL++", "fully supervised oracle"):
        assert 0 <= final[row] <= 1, (row, final[row])


def check_notebooks(artifacts_root: Path, profile: dict) -> None:
    """Every run of the profile has a timing in pipeline.json, and every run with a page (all
    but those marked ``_page: false``) an executed notebook."""
    runs = [run for entry in profile["notebooks"].values() for run in ((entry or {}).get("runs") or [{}])]
    pages = [run for run in runs if run.get("_page", True)]
    executed = sorted((artifacts_root / PROFILE / "notebooks").glob("*.ipynb"))
    assert len(executed) == len(pages), [p.name for p in executed]
    record = json.loads((artifacts_root / PROFILE / "pipeline.json").read_text())
    assert len(record["notebooks"]) == len(runs), record["notebooks"]
    assert all(record["notebooks"][p.stem] > 0 for p in executed)


# --------------------------------------------------------------------------- stages, then notebooks
@pytest.fixture(scope="module")
def staged(voc_tree, tmp_path_factory):
    """``python -m aepsl.stages`` on the shrunk profile: (profile path, profile, artifacts, result)."""
    tmp = tmp_path_factory.mktemp("voc-e2e-staged")
    path, profile = write_profile(tmp, voc_tree, tmp / "artifacts")
    return path, profile, tmp / "artifacts", run_cli("aepsl.stages", path)


def test_the_profile_keeps_every_run_of_voc_yaml(voc_tree, tmp_path):
    voc = yaml.safe_load((PARAMS_DIR / "voc.yaml").read_text())
    _, tiny = write_profile(tmp_path, voc_tree, tmp_path / "artifacts")
    assert list(tiny["notebooks"]) == list(voc["notebooks"])
    for name, entry in voc["notebooks"].items():
        assert len((entry or {}).get("runs") or [{}]) == len((tiny["notebooks"][name] or {}).get("runs") or [{}])
        assert set(entry or {}) == set(tiny["notebooks"][name] or {})   # nothing dropped, nothing added
    text = yaml.safe_dump(tiny)
    assert "train_aug" not in text and "vgg16" not in text


def test_stages_runner_computes_every_stage(staged):
    _, profile, artifacts, proc = staged
    assert proc.returncode == 0, _tail(proc)
    folder = artifacts / PROFILE
    for stage in ("data", "cam", "cam_hfpl", "erasing/round3", "erasing_hfpl/round3", "pseudo_masks",
                  "pseudo_masks_erasing_hfpl", "ae_segmenter", "psl", "oracle", "psl_plus_plus", "affinity_cam",
                  "affinity_ae", "hfpl"):
        assert (folder / stage / "metrics.json").is_file(), stage


def _stage_records(folder: Path) -> dict[str, dict]:
    """Every finished stage under a profile's folder (archived ``name@hash`` folders left out)."""
    return {p.parent.relative_to(folder).as_posix(): json.loads(p.read_text())
            for p in sorted(folder.rglob("metrics.json")) if "@" not in p.parent.name}


def test_notebooks_alone_compute_every_stage_as_the_stages_runner_does(staged, voc_tree, tmp_path):
    _, _, staged_artifacts, stages_proc = staged
    assert stages_proc.returncode == 0, "python -m aepsl.stages failed first:\n" + _tail(stages_proc)
    path, profile = write_profile(tmp_path, voc_tree, tmp_path / "artifacts")
    proc = run_cli("aepsl", path)
    assert proc.returncode == 0, _tail(proc)
    check_notebooks(tmp_path / "artifacts", profile)
    check_results(tmp_path / "artifacts", profile)
    # the same stages, with the same parameters and code, whichever runner computed them (the
    # artifacts' folder and the hashes of the inputs, which include it, aside)
    alone, staged_records = _stage_records(tmp_path / "artifacts" / PROFILE), _stage_records(staged_artifacts / PROFILE)
    assert sorted(alone) == sorted(staged_records)
    for stage, record in alone.items():
        mine = {k: v for k, v in record["params"].items() if k not in ("artifacts_root", "inputs")}
        theirs = {k: v for k, v in staged_records[stage]["params"].items() if k not in ("artifacts_root", "inputs")}
        assert mine == theirs, stage
        assert record["code_hash"] == staged_records[stage]["code_hash"], stage
