"""PASCAL VOC 2012 + SBD in their real formats: a tiny VOCdevkit and SBD release written by the
test (JPEGs of mixed sizes, palette PNGs with 255 borders, ImageSets lists, SBD .mat masks),
prepared by aepsl.data.sbd, read by the one reader, through CAM, two erasing rounds, the merge
and PSL with the VOC protocol (train on train_aug, score on train, evaluate on val)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from aepsl.methods import cam

from aepsl.methods import erasing

from aepsl.methods import psl
from aepsl.engine.artifacts import read_json, write_text
from aepsl.data import sbd
from aepsl.data import stage as data_stage
from aepsl.data.voc import AUG_MASK_DIR, VOC_CLASSES, VOCTree, check_tree, write_image, write_mask, write_split
from aepsl.engine.train import inference_loader, size_batches

SIZES = [(40, 32), (32, 40), (36, 36)]           # (W, H): VOC images come in a few sizes
CLASSES = (1, 8, 15)                             # aeroplane, cat, person
COLOURS = {1: (220, 40, 40), 8: (40, 200, 60), 15: (40, 80, 230)}
VOC_TRAIN = [f"2007_{i:06d}" for i in range(1, 9)]
VOC_VAL = [f"2007_{i:06d}" for i in range(101, 105)]
SBD_ONLY = [f"2008_{i:06d}" for i in range(1, 11)]
SBD_TRAIN = VOC_TRAIN[:3] + [VOC_VAL[0]] + SBD_ONLY[:7]   # SBD overlaps VOC train and VOC val
SBD_VAL = SBD_ONLY[7:]
TRAIN_AUG = sorted(set(VOC_TRAIN) | set(SBD_ONLY))       # (SBD train + SBD val + VOC train) - VOC val


def _scene(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, SBD-style mask without borders, VOC-style mask with a 255 border)."""
    rng = np.random.default_rng(index)
    w, h = SIZES[index % len(SIZES)]
    image = rng.integers(90, 140, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for j, c in enumerate(CLASSES):
        if (index + j) % 3 == 0 or j == index % 3:
            y, x = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
            image[y:y + 12, x:x + 12] = COLOURS[c]
            mask[y:y + 12, x:x + 12] = c
    bordered = mask.copy()
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] == mask[:-2, 1:-1]) & (mask[1:-1, 1:-1] == mask[2:, 1:-1]) & \
        (mask[1:-1, 1:-1] == mask[1:-1, :-2]) & (mask[1:-1, 1:-1] == mask[1:-1, 2:])
    bordered[(mask > 0) & (inner == 0)] = 255
    return image, mask, bordered


def write_release(root: Path) -> tuple[Path, Path]:
    """VOCdevkit/VOC2012 (VOC's own part) and benchmark_RELEASE (SBD's), as downloaded."""
    voc, sbd_root = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE"
    names = VOC_TRAIN + VOC_VAL + SBD_ONLY
    for i, name in enumerate(names):
        image, plain, bordered = _scene(i)
        write_image(voc / "JPEGImages" / f"{name}.jpg", image)
        if name in VOC_TRAIN or name in VOC_VAL:
            write_mask(voc / "SegmentationClass" / f"{name}.png", bordered)
        if name in SBD_TRAIN or name in SBD_VAL:
            (sbd_root / "dataset" / "cls").mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(sbd_root / "dataset" / "cls" / f"{name}.mat",
                             {"GTcls": {"Segmentation": plain, "Boundaries": np.zeros(1),
                                        "CategoriesPresent": np.unique(plain[plain > 0]).astype(np.uint8)}})
    write_split(voc, "train", VOC_TRAIN)
    write_split(voc, "val", VOC_VAL)
    write_split(voc, "trainval", VOC_TRAIN + VOC_VAL)
    write_text(sbd_root / "dataset" / "train.txt", "".join(n + "\n" for n in SBD_TRAIN))
    write_text(sbd_root / "dataset" / "val.txt", "".join(n + "\n" for n in SBD_VAL))
    return voc, sbd_root


def _mask_of(name: str, bordered: bool) -> np.ndarray:
    order = VOC_TRAIN + VOC_VAL + SBD_ONLY
    return _scene(order.index(name))[2 if bordered else 1]


# --------------------------------------------------------------------------- SBD preparation
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    voc, sbd_root = write_release(tmp_path_factory.mktemp("release"))
    counts = sbd.prepare(voc, sbd_root, progress=False)
    return voc, sbd_root, counts


def test_sbd_prepare_writes_train_aug_masks_and_labels(prepared):
    voc, _, counts = prepared
    tree = VOCTree(voc)
    assert tree.num_classes == 21 and tree.classes == list(VOC_CLASSES)
    assert tree.ids("train_aug") == TRAIN_AUG
    assert VOC_VAL[0] not in tree.ids("train_aug")        # in SBD train, but VOC val: left out
    assert counts["train_aug"] == len(TRAIN_AUG) and counts["masks"]["voc"] == len(VOC_TRAIN + VOC_VAL)
    aug = VOCTree(voc, mask_dir=AUG_MASK_DIR)
    for name in TRAIN_AUG + VOC_VAL:
        # VOC's own annotation (with its 255 borders) wherever VOC has one, else SBD's
        np.testing.assert_array_equal(aug.mask(name), _mask_of(name, bordered=name not in SBD_ONLY))
    for name in TRAIN_AUG:
        want = np.zeros(20, np.float32)
        present = np.unique(_mask_of(name, False))
        want[present[present > 0] - 1] = 1
        np.testing.assert_array_equal(tree.labels(name), want)   # from cls_labels.npy
    assert tree._labels_source == voc / "cls_labels.npy"
    assert check_tree(tree, ["train_aug", "train", "val"]) == {"train_aug": 18, "train": 8, "val": 4}


def test_sbd_prepare_keeps_existing_masks_unless_forced(prepared, tmp_path):
    voc, sbd_root, _ = prepared
    copy = tmp_path / "VOC2012"
    shutil.copytree(voc, copy)
    target = copy / AUG_MASK_DIR / f"{SBD_ONLY[0]}.png"
    write_mask(target, np.zeros_like(_mask_of(SBD_ONLY[0], False)))
    again = sbd.prepare(copy, sbd_root, progress=False)
    assert again["masks"]["kept"] == len(TRAIN_AUG) + len(VOC_VAL)
    assert not VOCTree(copy, mask_dir=AUG_MASK_DIR).mask(SBD_ONLY[0]).any()
    sbd.prepare(copy, sbd_root, force=True, progress=False)
    np.testing.assert_array_equal(VOCTree(copy, mask_dir=AUG_MASK_DIR).mask(SBD_ONLY[0]), _mask_of(SBD_ONLY[0], False))


def test_sbd_errors_name_the_missing_file(tmp_path):
    voc, sbd_root = write_release(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cls/.*benchmark"):
        sbd.prepare(voc, tmp_path / "nowhere", progress=False)
    (sbd_root / "dataset" / "cls" / f"{SBD_ONLY[2]}.mat").unlink()
    with pytest.raises(FileNotFoundError, match=rf"SBD mask file not found: .*{SBD_ONLY[2]}\.mat"):
        sbd.prepare(voc, sbd_root, progress=False)
    scipy.io.savemat(sbd_root / "dataset" / "cls" / f"{SBD_ONLY[2]}.mat",
                     {"GTcls": {"Segmentation": np.zeros((5, 5), np.uint8)}})
    with pytest.raises(ValueError, match=rf"{SBD_ONLY[2]}\.mat is 5x5 .*{SBD_ONLY[2]}\.jpg"):
        sbd.prepare(voc, sbd_root, progress=False)
    scipy.io.savemat(sbd_root / "dataset" / "cls" / f"{SBD_ONLY[2]}.mat", {"something": np.zeros(3)})
    with pytest.raises(ValueError, match=r"corrupt SBD mask file .*GTcls"):
        sbd.load_sbd_mask(sbd_root / "dataset" / "cls" / f"{SBD_ONLY[2]}.mat")
    assert sbd.main(["--voc", str(voc), "--sbd", str(tmp_path / "nowhere")]) == 2


def test_missing_sbd_parts_are_named(tmp_path):
    voc, _ = write_release(tmp_path)
    tree = VOCTree(voc)
    with pytest.raises(FileNotFoundError, match=r"train_aug\.txt.*aepsl\.data\.sbd"):
        tree.ids("train_aug")
    write_split(voc, "train_aug", TRAIN_AUG)
    # SBD images have no mask in SegmentationClass: their labels need SegmentationClassAug or cls_labels.npy
    with pytest.raises(FileNotFoundError, match=rf"{SBD_ONLY[0]}.*{AUG_MASK_DIR}.*SBD"):
        check_tree(VOCTree(voc), ["train_aug"])
    with pytest.raises(FileNotFoundError, match=r"train_aug.*SegmentationClassAug"):
        data_stage.run({"profile": "v", "source": "voc", "data_root": str(voc), "artifacts_root": str(tmp_path / "a")},
                       progress=False)
    (voc / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{VOC_TRAIN[1]}\.jpg.*train\.txt"):
        check_tree(VOCTree(voc), ["train"])


# --------------------------------------------------------------------------- batching by size
def test_size_batches_group_equal_sizes_in_order():
    sizes = [(4, 3), (3, 4), (4, 3), (4, 3), (3, 4)]
    assert size_batches(sizes, 2) == [[0, 2], [3], [1, 4]]
    assert size_batches([(1, 1)] * 5, 2) == [[0, 1], [2, 3], [4]]


def test_inference_loader_batches_mixed_sizes(prepared):
    voc, _, _ = prepared
    from aepsl.data.voc import SegDataset

    ds = SegDataset(VOCTree(voc), "train_aug", with_masks=False)
    seen = []
    for batch in inference_loader(ds, 4):
        assert len({tuple(batch["image"].shape[-2:])}) == 1 and batch["image"].shape[0] <= 4
        seen += batch["name"]
    assert sorted(seen) == TRAIN_AUG and len(seen) == len(set(seen))


# --------------------------------------------------------------------------- the stages on it
@pytest.fixture(scope="module")
def voc_run(prepared, tmp_path_factory):
    """The data check, CAM, erasing rounds 1-2, the merge and PSL with the VOC protocol and the
    lists as PSA's repository ships them (``/JPEGImages/x.jpg /SegmentationClassAug/x.png``)."""
    voc, _, _ = prepared
    write_text(voc / "ImageSets" / "Segmentation" / "train_aug.txt",
               "".join(f"/JPEGImages/{n}.jpg /{AUG_MASK_DIR}/{n}.png\n" for n in TRAIN_AUG))
    artifacts = tmp_path_factory.mktemp("voc-artifacts")
    common = {"profile": "v", "seed": 0, "device": "cpu", "data_root": str(voc), "artifacts_root": str(artifacts)}
    data = data_stage.run({**common, "source": "voc", "mask_dir": "SegmentationClass"}, progress=False)
    c = cam.run({**common, "backbone": "small", "backbone_weights": "", "width": 4, "epochs": 1, "batch_size": 6,
                 "crop": 32, "cam_scales": [1.0, 0.5], "eval_batch_size": 16, "train_split": "train_aug",
                 "score_split": "train"}, progress=False)
    rounds = [erasing.run_round({**common, "round": k, "mine_threshold": 0.3, "eval_batch_size": 16}, progress=False)
              for k in (1, 2)]
    merged = erasing.merge({**common, "rounds": 2}, progress=False)
    seg = psl.run({**common, "backbone": "small", "backbone_weights": "", "width": 4, "head_channels": 8,
                   "head_dilation": 2, "epochs": 1, "batch_size": 6, "crop": 32, "crf_workers": 0,
                   "eval_batch_size": 16, "train_split": "train_aug", "score_split": "train"}, progress=False)
    return voc, artifacts / "v", data, c, rounds, merged, seg


def test_data_stage_checks_the_voc_tree(voc_run):
    _, _, data, *_ = voc_run
    m = data["metrics"]
    assert m["split_sizes"] == {"train": 8, "train_aug": 18, "trainval": 12, "val": 4}
    assert m["splits"]["train"]["images"] == 8 and m["generator"] is None


def test_cams_for_every_train_aug_image_at_its_own_size(voc_run):
    voc, folder, _, c, *_ = voc_run
    tree = VOCTree(voc)
    assert sorted(p.stem for p in (folder / "cam" / "cams").glob("*.npy")) == TRAIN_AUG
    for name in TRAIN_AUG:
        arr = np.load(folder / "cam" / "cams" / f"{name}.npy")
        w, h = tree.image_size(name)
        assert arr.shape == (int(tree.labels(name).sum()), h, w), name
    m = c["metrics"]
    assert m["train_split"] == "train_aug" and m["cam_count"] == 18
    assert m["scored_count"] == len(VOC_TRAIN)           # seeds scored on VOC train only
    assert 0 <= m["seed_miou"] <= 1
    # the reported seed mIoU is that of the 8 train images' saved maps, not of all 18
    from aepsl.methods import metrics as M

    acc = M.ConfusionMeter(21)
    for name in VOC_TRAIN:
        ids = np.flatnonzero(tree.labels(name)) + 1
        acc.update(M.cam_to_mask(cam.load_cam(folder / "cam", name), ids, m["best_threshold"]), tree.mask(name))
    assert M.mean_iou(acc.matrix) == pytest.approx(m["seed_miou"], abs=1e-6)


def test_erasing_and_merge_cover_train_aug_and_score_train(voc_run):
    voc, folder, _, _, rounds, merged, _ = voc_run
    for k, r in enumerate(rounds, start=1):
        assert sorted(p.stem for p in (folder / "erasing" / f"round{k}" / "regions").glob("*.png")) == TRAIN_AUG
        assert r["metrics"]["train_split"] == "train_aug" and "region_precision" in r["metrics"]
    assert (folder / "erasing" / "round2" / "model.pt").exists()
    assert sorted(p.stem for p in (folder / "pseudo_masks" / "masks").glob("*.png")) == TRAIN_AUG
    m = merged["metrics"]
    assert m["mask_count"] == 18 and len(m["per_rounds"]) == 2
    assert np.asarray(m["confusion"]).sum() == sum(VOCTree(voc).mask(n).size - (VOCTree(voc).mask(n) == 255).sum()
                                                   for n in VOC_TRAIN)


def test_psl_trains_on_train_aug_and_evaluates_on_val(voc_run):
    voc, folder, *_, seg = voc_run
    m = seg["metrics"]
    assert m["eval"]["scored_count"] == len(VOC_VAL) and 0 <= m["eval"]["miou"] <= 1
    assert m["train"]["scored_count"] == len(VOC_TRAIN)
    assert sorted(p.stem for p in (folder / "psl" / "train_crf").glob("*.png")) == TRAIN_AUG
    state = torch.load(folder / "psl" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1


def test_score_split_must_lie_in_train_split(voc_run):
    voc, *_ = voc_run
    with pytest.raises(ValueError, match=r"score_split.*'val'.*train_aug"):
        cam.scored_names(VOCTree(voc), "train_aug", "val")


def test_voc_profile_builds_every_stage_config():
    """notebooks/params/voc.yaml: the published protocol, and every stage accepts its parameters."""
    from aepsl.engine.config import from_params, notebook_runs, stage_params

    c = from_params(cam.CAMConfig, stage_params("voc", "01_cam"), "cam")
    assert (c.train_split, c.score_split, c.crop) == ("train_aug", "train", 321)
    assert c.cam_scales == [1.0, 0.5, 1.5, 2.0] and c.cam_flip
    assert c.backbone in ("vgg16", "resnet50") and c.backbone_weights.endswith(".pth")
    runs = notebook_runs("voc", "02_erasing")
    assert [r["round"] for r in runs if r.get("stage", "erasing") == "erasing"] == [1, 2, 3]
    assert [r["round"] for r in runs if r.get("stage") == "erasing_hfpl"] == [1, 2, 3]
    runs = notebook_runs("voc", "01_cam")
    h = from_params(cam.CAMConfig, stage_params("voc", "01_cam", [r.get("_name") for r in runs].index("01_cam_hfpl")),
                    "cam")
    assert h.hfpl and (h.hfpl_weight, h.hfpl_samples, h.hfpl_sigma) == (0.2, 10, 5.0)
    from aepsl.methods import randomwalk
    for run in range(2):
        a = from_params(randomwalk.AffinityConfig, stage_params("voc", "06_affinity", run), "affinity")
        assert (a.alpha_low, a.alpha_high, a.alpha_infer, a.beta, a.logt, a.radius) == (4, 32, 16, 8, 8, 5)
        assert (a.train_split, a.score_split) == ("train_aug", "train")
    assert stage_params("voc", "03_pseudo_masks")["rounds"] == 3
    for run in range(len(notebook_runs("voc", "04_psl"))):
        p = from_params(psl.PSLConfig, stage_params("voc", "04_psl", run), "psl")
        assert p.eval_split == "val"
    p = from_params(psl.PSLConfig, stage_params("voc", "05_psl_plus_plus"), "psl")
    assert p.train_split == "train_aug" and p.score_split == "train"
