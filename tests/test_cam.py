"""CAM inference and normalisation, the CAM stage end to end on the tiny tree, its config."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from aepsl.methods import cam
from aepsl.methods import metrics as M
from aepsl.engine.artifacts import read_json
from aepsl.engine.config import ParameterError
from aepsl.data.voc import SegDataset, VOCTree
from aepsl.models import CAMClassifier

OLD = 1_000_000_000


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return CAMClassifier(3, "small", width=4).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 32, 40), dtype=torch.uint8, generator=g)


# --------------------------------------------------------------------------- inference
@pytest.mark.parametrize("scales", [(1.0,), (0.5, 1.5), (1.0, 2.0, 0.75)])
@pytest.mark.parametrize("flip", [False, True])
def test_infer_cams_shape_and_sign(tiny_model, images, scales, flip):
    out = cam.infer_cams(tiny_model, images, scales, flip)
    assert out.shape == (2, 3, 32, 40)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    assert out.sum() > 0


def test_infer_cams_single_scale_is_upsampled_cams(tiny_model, images):
    """At scale 1 without flip the result is the model's CAMs resized to the input."""
    from aepsl.data.transforms import normalize

    with torch.no_grad():
        raw = tiny_model.cams(normalize(images))
    assert raw.shape[-2:] == (4, 5)  # output stride 8
    want = torch.nn.functional.interpolate(raw, size=(32, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cam.infer_cams(tiny_model, images, (1.0,), False), want)


def test_infer_cams_scales_add_up(tiny_model, images):
    a = cam.infer_cams(tiny_model, images, (1.0,), False)
    b = cam.infer_cams(tiny_model, images, (1.5,), False)
    torch.testing.assert_close(cam.infer_cams(tiny_model, images, (1.0, 1.5), False), a + b)


def test_normalise_cams():
    g = torch.Generator().manual_seed(1)
    cams = torch.zeros(2, 3, 6, 7)
    cams[0, 0] = torch.rand(6, 7, generator=g) * 5
    cams[0, 2] = torch.rand(6, 7, generator=g) * 0.3
    cams[1, 1] = torch.rand(6, 7, generator=g) * 120
    # cams[0, 1], cams[1, 0], cams[1, 2] stay all zero
    out = cam.normalise_cams(cams)
    assert out.shape == cams.shape
    for b, c in [(0, 0), (0, 2), (1, 1)]:
        assert out[b, c].max().item() == pytest.approx(1.0, abs=1e-3)
        assert out[b, c].max().item() <= 1.0
        # a rescaling: the arg-max and the ordering of pixels are kept
        assert torch.argmax(out[b, c]) == torch.argmax(cams[b, c])
        torch.testing.assert_close(out[b, c] * cams[b, c].max(), cams[b, c], rtol=1e-4, atol=1e-4)
    for b, c in [(0, 1), (1, 0), (1, 2)]:
        assert (out[b, c] == 0).all()


# --------------------------------------------------------------------------- the stage
def _params(tree, artifacts, **overrides) -> dict:
    params = {"profile": "t", "seed": 0, "device": "cpu", "data_root": str(tree),
              "artifacts_root": str(artifacts), "backbone": "small", "backbone_weights": "",
              "width": 4, "epochs": 1, "batch_size": 8, "crop": 32, "cam_scales": [1.0],
              "eval_batch_size": 8}
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def cam_run(scene_tree, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("cam-artifacts")
    record = cam.run(_params(scene_tree, artifacts), progress=False)
    return record, artifacts / "t" / "cam", artifacts


def test_cam_metrics(cam_run):
    record, folder, _ = cam_run
    saved = read_json(folder / "metrics.json")
    assert saved["params_hash"] == record["params_hash"]
    m = saved["metrics"]
    for key in ("train_map", "val_map", "seed_miou", "best_threshold"):
        assert key in m
    assert 0 <= m["train_map"] <= 1 and 0 <= m["val_map"] <= 1
    assert 0 <= m["seed_miou"] <= 1
    thresholds = cam.CAMConfig(sweep=[0.05, 0.95, 0.05]).thresholds()
    assert m["best_threshold"] in thresholds
    assert m["seed"]["thresholds"] == thresholds
    assert m["seed_miou"] == pytest.approx(max(m["seed"]["miou"]))
    assert len(m["history"]) == 1 and m["history"][0]["epoch"] == 1
    assert m["classes"] == ["background", "disc", "square", "triangle"]
    assert np.asarray(m["seed_confusion"]).shape == (4, 4)
    assert saved["device"] == "cpu" and saved["stage"] == "cam"


def test_cam_files(cam_run, scene_tree):
    _, folder, _ = cam_run
    tree = VOCTree(scene_tree)
    names = tree.ids("train")
    files = sorted((folder / "cams").glob("*.npy"))
    assert sorted(f.stem for f in files) == sorted(names)
    assert read_json(folder / "metrics.json")["metrics"]["cam_count"] == len(names)
    for name in names:
        arr = np.load(folder / "cams" / f"{name}.npy")
        k = int(tree.labels(name).sum())
        assert arr.shape == (k, 32, 32), name
        assert arr.dtype == np.float16
        assert arr.min() >= 0 and arr.max() <= 1
        loaded = cam.load_cam(folder, name)
        assert loaded.dtype == np.float32 and loaded.shape == arr.shape
    with pytest.raises(FileNotFoundError, match="no_such_image"):
        cam.load_cam(folder, "no_such_image")


def test_seed_miou_recomputed_from_saved_cams(cam_run, scene_tree):
    """The reported seed mIoU is what the saved float16 CAMs give at the best threshold."""
    _, folder, _ = cam_run
    m = read_json(folder / "metrics.json")["metrics"]
    tree = VOCTree(scene_tree)
    acc = M.ConfusionMeter(tree.num_classes)
    for name in tree.ids("train"):
        ids = np.flatnonzero(tree.labels(name)) + 1
        pred = M.cam_to_mask(cam.load_cam(folder, name), ids, m["best_threshold"])
        acc.update(pred, tree.mask(name))
    assert M.mean_iou(acc.matrix) == pytest.approx(m["seed_miou"], abs=1e-6)


def test_cams_bring_the_image_level_logits_of_their_scale_1_pass(cam_run, scene_tree):
    """The training split's logits come from the CAM pass (no second forward pass): the same as
    the plain forward pass gives, and the stage's train mAP is theirs."""
    _, folder, _ = cam_run
    from aepsl.models.fold import fold_batchnorm

    model = fold_batchnorm(cam.load_model(folder))
    ds = SegDataset(VOCTree(scene_tree), "train", with_masks=False)
    classified: dict = {}
    for _ in cam.iterate_cams(model, ds, torch.device("cpu"), [0.5, 1.0], True, 4, False, classified=classified):
        pass
    scores, targets = cam.predict_logits(model, ds, torch.device("cpu"))
    np.testing.assert_allclose(np.concatenate(classified["scores"]), scores, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(classified["targets"]), targets)
    m = read_json(folder / "metrics.json")["metrics"]
    assert M.mean_average_precision(scores, targets) == pytest.approx(m["train_map"], abs=1e-4)
    with pytest.raises(ValueError, match="scale 1"):
        next(cam.iterate_cams(model, ds, torch.device("cpu"), [0.5], False, 4, False, classified={}))


def test_load_model_rebuilds_trained_classifier(cam_run, scene_tree):
    _, folder, _ = cam_run
    model = cam.load_model(folder)
    assert not model.training
    # the weights training ended with, as fit's checkpoint holds them
    ckpt = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    trained = CAMClassifier(3, "small", width=4)
    trained.load_state_dict(ckpt["model"])
    trained.eval()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    from aepsl.data.transforms import normalize

    with torch.no_grad():
        torch.testing.assert_close(model(normalize(x)), trained(normalize(x)))
    # and the image-level scores give back the reported validation mAP
    scores, targets = cam.predict_logits(model, SegDataset(VOCTree(scene_tree), "val", with_masks=False),
                                         torch.device("cpu"))
    m = read_json(folder / "metrics.json")["metrics"]
    assert M.mean_average_precision(scores, targets) == pytest.approx(m["val_map"], abs=1e-6)


def test_load_model_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        cam.load_model(tmp_path)


def test_cam_rerun_skips_and_force_retrains(cam_run, scene_tree):
    record, folder, artifacts = cam_run
    watched = [folder / "metrics.json", folder / "model.pt", folder / "checkpoint.pt",
               next((folder / "cams").glob("*.npy"))]
    for f in watched:
        os.utime(f, (OLD, OLD))
    again = cam.run(_params(scene_tree, artifacts), progress=False)
    assert again["finished_at"] == record["finished_at"]
    assert [f.stat().st_mtime for f in watched] == [OLD] * len(watched), "same parameters: nothing redone"
    # parameters that do not change the results (force aside) do not trigger a rerun either
    cam.run(_params(scene_tree, artifacts, eval_batch_size=4, num_workers=0), progress=False)
    assert (folder / "metrics.json").stat().st_mtime == OLD

    forced = cam.run(_params(scene_tree, artifacts, force=True), progress=False)
    assert [f.name for f in watched if f.stat().st_mtime == OLD] == [], "force=True must retrain and rewrite"
    assert forced["params_hash"] == record["params_hash"]
    assert forced["metrics"]["history"][0]["epoch"] == 1
    # CPU training is deterministic: the retrained classifier scores the same
    assert forced["metrics"]["val_map"] == pytest.approx(record["metrics"]["val_map"], abs=1e-6)
    assert forced["metrics"]["seed_miou"] == pytest.approx(record["metrics"]["seed_miou"], abs=1e-6)


# --------------------------------------------------------------------------- config
def test_cam_config_empty_scales():
    with pytest.raises(ValueError, match="cam_scales"):
        cam.CAMConfig(cam_scales=[]).validate()


def test_cam_config_negative_scale():
    with pytest.raises(ValueError, match="cam_scales"):
        cam.CAMConfig(cam_scales=[1.0, -0.5]).validate()


def test_cam_config_bad_sweep():
    with pytest.raises(ValueError, match="sweep"):
        cam.CAMConfig(sweep=[0.5, 0.1, 0.1]).validate()


def test_cam_config_sweep_zero_step():
    with pytest.raises(ValueError, match="sweep"):
        cam.CAMConfig(sweep=[0.1, 0.5, 0.0]).validate()


def test_cam_config_thresholds():
    assert cam.CAMConfig(sweep=[0.1, 0.5, 0.1]).thresholds() == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_cam_run_rejects_bad_parameters(scene_tree, tmp_path):
    with pytest.raises(ParameterError, match="epochz"):
        cam.run(_params(scene_tree, tmp_path, epochz=3), progress=False)
    with pytest.raises(ParameterError, match="epochs"):
        cam.run(_params(scene_tree, tmp_path, epochs="two"), progress=False)
    with pytest.raises(ValueError, match="sweep"):
        cam.run(_params(scene_tree, tmp_path, sweep=[0.5, 0.1, 0.1]), progress=False)
    assert not (tmp_path / "t").exists()
