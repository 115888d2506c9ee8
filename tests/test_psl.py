"""PSL loss, online labels, test-time class dropping, and the dense CRF."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aepsl.methods import psl
from aepsl.methods.crf import crf_labels, crf_pool


def _logits_from_probs(p):
    return torch.log(torch.tensor(p, dtype=torch.float32))


def test_online_labels_weight_classes_by_confidence_and_keep_background_weight_one():
    # one image, 2 foreground classes, 1x3 pixels; probabilities over (bg, c1, c2)
    probs = torch.tensor([[[[0.2, 0.5, 0.3]],      # bg
                           [[0.7, 0.1, 0.1]],      # c1
                           [[0.1, 0.4, 0.6]]]])    # c2
    labels = torch.tensor([[1.0, 1.0]])
    conf = torch.tensor([[0.25, 1.0]])
    s_hat = psl.online_labels(probs, conf, labels)
    # pixel 0: bg 0.2*1 vs c1 0.7*0.25=0.175 vs c2 0.1 -> bg (the low-confidence class loses)
    # pixel 1: bg 0.5 vs c1 0.025 vs c2 0.4 -> bg;  pixel 2: bg 0.3 vs c2 0.6 -> c2
    assert s_hat.tolist() == [[[0, 0, 2]]]
    # a class missing from the image labels can never win, however confident
    s_hat = psl.online_labels(probs, torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    assert s_hat.tolist() == [[[1, 0, 0]]]


def test_psl_loss_matches_hand_computation_with_ignore_and_normalisation():
    p = [[[[0.6, 0.2, 0.2, 0.5]]],      # bg      (1 image, 1x4 pixels)
         [[[0.3, 0.7, 0.1, 0.4]]],      # c1
         [[[0.1, 0.1, 0.7, 0.1]]]]      # c2
    logits = _logits_from_probs(p).squeeze(1).unsqueeze(0)   # [1,3,1,4]
    target = torch.tensor([[[0, 1, 255, 2]]])              # pixel 2 ignored
    labels = torch.tensor([[1.0, 1.0]])
    cls_logits = torch.tensor([[0.0, 0.0]])                # confidences 0.5, 0.5
    loss, logs = psl.psl_loss(logits, cls_logits, target, labels, online=False, cls_weight=1.0)
    ce_s = -(math.log(0.6) + math.log(0.7) + math.log(0.1)) / 3       # 3 labelled pixels
    cls = (0.5 - 1) ** 2 * 2                                            # squared loss, summed over classes
    assert logs["ce_s"].item() == pytest.approx(ce_s, rel=1e-5)
    assert loss.item() == pytest.approx(ce_s + cls, rel=1e-5)
    # online: Ŝ with weights [1, .5, .5]: px0 bg(.6) ; px1 c1 .35 vs bg .2 -> c1 ; px3 bg .5 vs .2,.05 -> bg
    # and px2, which S leaves unlabelled: c2 .35 vs bg .2 -> c2. The paper's Ŝ labels every pixel
    # (4 here), the "labelled" variant only the 3 that S labels; each CE is divided by its own count
    loss_on, logs_on = psl.psl_loss(logits, cls_logits, target, labels, online=True, cls_weight=1.0,
                                    online_pixels="all")
    ce_hat = -(math.log(0.6) + math.log(0.7) + math.log(0.7) + math.log(0.5)) / 4
    assert logs_on["ce_hat"].item() == pytest.approx(ce_hat, rel=1e-5)
    assert loss_on.item() == pytest.approx(ce_s + cls + ce_hat, rel=1e-5)
    _, logs_lab = psl.psl_loss(logits, cls_logits, target, labels, online=True)   # the default
    assert logs_lab["ce_hat"].item() == pytest.approx(-(math.log(0.6) + math.log(0.7) + math.log(0.5)) / 3, rel=1e-5)
    # crop padding (inside False) is never labelled by Ŝ
    inside = torch.tensor([[[True, True, False, True]]])
    _, logs_in = psl.psl_loss(logits, cls_logits, target, labels, online=True, inside=inside, online_pixels="all")
    assert logs_in["ce_hat"].item() == pytest.approx(-(math.log(0.6) + math.log(0.7) + math.log(0.5)) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="online_pixels"):
        psl.psl_loss(logits, cls_logits, target, labels, online=True, online_pixels="some")


def test_psl_loss_all_ignored_is_finite_and_gradients_flow():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss, _ = psl.psl_loss(logits, torch.zeros(2, 2), target, torch.ones(2, 2))
    assert torch.isfinite(loss)
    target[0, 0, 0] = 1
    loss, _ = psl.psl_loss(logits, torch.zeros(2, 2), target, torch.ones(2, 2))
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_test_time_threshold_removes_a_low_confidence_class():
    probs = torch.tensor([[[[0.1]], [[0.6]], [[0.3]]]])   # bg, c1, c2 at one pixel: c1 would win
    conf = torch.tensor([[0.2, 0.9]])
    kept = psl.drop_unconfident(probs, conf, threshold=0.5)
    assert kept[0, 1].item() == 0
    assert kept.argmax(1).item() == 2
    assert kept.sum(1).item() == pytest.approx(1.0)
    # background is kept even when every class is dropped
    none = psl.drop_unconfident(probs, torch.tensor([[0.1, 0.1]]), threshold=0.5)
    assert none.argmax(1).item() == 0


def test_crf_moves_a_noisy_mask_towards_the_colour_edge():
    h, w = 32, 32
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 16:] = (220, 40, 40)           # a sharp vertical colour edge at x = 16
    image[:, :16] = (30, 60, 200)
    # a soft, misplaced prediction: class 1 probability ramps from x=8 to x=24 (edge blurred)
    ramp = np.clip((np.arange(w) - 8) / 16, 0, 1)[None, :].repeat(h, 0)
    rng = np.random.default_rng(0)
    p1 = np.clip(ramp + rng.normal(0, 0.15, (h, w)), 0.02, 0.98)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    truth = np.zeros((h, w), np.uint8)
    truth[:, 16:] = 1
    before = (probs.argmax(0) == truth).mean()
    after = (crf_labels(image, probs) == truth).mean()
    assert after > before
    assert after > 0.95


def test_psl_parameters_are_checked():
    with pytest.raises(ValueError, match="labels"):
        psl.run({"labels": "nonsense"})
    with pytest.raises(ValueError, match="test_threshold"):
        psl.run({"test_threshold": 1.5})
    with pytest.raises(ValueError, match="parameter crf_keep"):
        psl.run({"crf_keep": 1.0})


def test_a_class_the_crf_erases_keeps_its_predicted_pixels():
    """The guard on the CRF's labels: a labelled class of which the CRF kept less than the share
    gets its predicted pixels back; one it kept enough of, background, and a class the image is not
    labelled with are left as the CRF made them."""
    from aepsl.methods.crf import keep_erased_classes

    pred = np.zeros((4, 6), np.uint8)
    pred[:2, :3] = 1          # 6 pixels of class 1
    pred[2:, 3:] = 2          # 6 pixels of class 2
    pred[0, 5] = 3            # 1 pixel of class 3, not a label of the image
    crf = np.zeros_like(pred)
    crf[0, 0] = 1             # the CRF kept 1 of class 1's 6 pixels (< 0.25)
    crf[2:, 4:] = 2           # and 4 of class 2's 6 (>= 0.25)
    out = keep_erased_classes(pred, crf, [1, 2], 0.25)
    assert (out[pred == 1] == 1).all()                     # put back
    assert (out == 2).sum() == 4 and (out[2:, 3] == 0).all()   # left as the CRF made it
    assert out[0, 5] == 0                                  # not labelled: not put back
    assert (keep_erased_classes(pred, crf, [1, 2], 0.0) == crf).all()   # keep 0: the CRF as it is
    assert (keep_erased_classes(pred, crf, [1, 2], 0.1) == crf).all()   # 1/6 >= 0.1: kept enough


def test_psl_stage_trains_and_writes_train_predictions(scene_tree, tmp_path):
    base = dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), backbone="small",
                backbone_weights="", width=4, head_channels=16, epochs=1, batch_size=8, crop=32,
                eval_batch_size=8, crf_workers=0)
    with pytest.raises(FileNotFoundError, match="labels"):
        psl.run({**base, "labels": "pseudo_masks/masks"}, progress=False)
    rec = psl.run({**base, "stage": "oracle", "labels": "ground_truth"}, progress=False)
    m = rec["metrics"]
    assert 0 <= m["eval"]["miou"] <= 1 and 0 <= m["eval"]["crf_miou"] <= 1
    names = (scene_tree / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for sub in ("train_pred", "train_crf"):
        files = sorted(p.stem for p in (tmp_path / "t" / "oracle" / sub).glob("*.png"))
        assert files == sorted(names)
    # the labels for the next stage erase no labelled class: each keeps at least crf_keep of the pixels
    # the segmenter gave it, or all of them
    from PIL import Image
    from aepsl.data.voc import VOCTree

    keep, tree = psl.PSLConfig().crf_keep, VOCTree(scene_tree)
    for name in names:
        pred = np.asarray(Image.open(tmp_path / "t" / "oracle" / "train_pred" / f"{name}.png"))
        crf = np.asarray(Image.open(tmp_path / "t" / "oracle" / "train_crf" / f"{name}.png"))
        for c in np.flatnonzero(tree.labels(name)) + 1:
            n, kept = (pred == c).sum(), (crf == c).sum()
            assert kept >= keep * n
    assert m["train"]["crf_restored_images"] >= 0 and "crf_restored_images" not in m["eval"]
    # the test-time drop sweep, computed by the stage with its model: its own threshold (0.5)
    # reproduces the stage's score, nothing dropped at 0, more dropped as the threshold grows
    sweep = m["drop_sweep"]
    assert sweep["used"] == 0.5
    assert sweep["miou"]["0.5"] == pytest.approx(m["eval"]["miou"], abs=1e-9)
    shares = [sweep["dropped_true"][t] for t in ("0.0", "0.5", "0.9")]
    assert shares[0] == 0.0 and shares == sorted(shares) and shares[-1] <= 1.0
    # scored from the evaluation's own forward passes, it equals a sweep of its own passes
    from aepsl.data.voc import VOCTree
    from aepsl.models.fold import fold_batchnorm

    model, cfg = psl.load_segmenter(tmp_path / "t" / "oracle")
    alone = psl.drop_sweep(fold_batchnorm(model), VOCTree(scene_tree), "val", cfg, torch.device("cpu"))
    assert alone["dropped_true"] == sweep["dropped_true"]
    assert alone["miou"] == pytest.approx(sweep["miou"], abs=1e-9)
    from aepsl.book import records, tables

    table = tables.drop_sweep_table(tmp_path, "t", ["oracle"])
    assert list(table.columns)[:3] == ["its threshold", "nothing dropped", "drop < 0.1"]
    assert table.loc["oracle", "its gain over nothing dropped"] == pytest.approx(
        sweep["miou"]["0.5"] - sweep["miou"]["0.0"])
    # the held-out predictions are saved, and the results chapter ranks them without a model
    val = (scene_tree / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert sorted(p.stem for p in (tmp_path / "t" / "oracle" / "eval_pred").glob("*.png")) == sorted(val)
    ranked = records.ranked_predictions(tmp_path, "t", ["oracle"], scene_tree, "val")
    assert sorted(r["name"] for r in ranked) == sorted(val)
    # and the CRF-refined ones, which the PSL page draws beside them: the page runs no CRF
    assert sorted(p.stem for p in (tmp_path / "t" / "oracle" / "eval_crf").glob("*.png")) == sorted(val)
    from aepsl.data.voc import VOCTree

    rows, titles = records.saved_mask_rows(
        tmp_path, "t", VOCTree(scene_tree), val[:2],
        [("never run", "ae_segmenter", "eval_pred"), ("oracle + CRF", "oracle", "eval_crf")])
    assert titles == [["image", "oracle + CRF", "ground truth"]] * 2   # the stage not run: left out
    assert rows[0][1].shape == rows[0][0].shape[:2] and rows[0][1].max() < len(VOCTree(scene_tree).classes) + 1
    assert records.stages_with_saved(tmp_path, "t", ["ae_segmenter", "oracle"]) == ["oracle"]
    scores = [r["miou"]["oracle"] for r in ranked]
    assert scores == sorted(scores, key=lambda v: -v if v == v else 1)
    # PSL++-style: a second stage trains on the first one's CRF masks
    rec2 = psl.run({**base, "stage": "pp", "labels": "oracle/train_crf", "predict_train": False}, progress=False)
    assert rec2["params"]["inputs"] == {"oracle": rec["params_hash"]}
    assert not (tmp_path / "t" / "pp" / "train_pred").exists()


def test_stride4_decoder_gives_stride4_logits_and_a_psl_step_runs():
    from aepsl.models.segmenter import LargeFOVSegmenter

    torch.manual_seed(0)
    plain = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2)
    model = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2, decoder="stride4",
                              low_channels=8, decoder_channels=16)
    x = torch.rand(2, 3, 32, 32)
    assert plain(x)["seg"].shape == (2, 4, 4, 4)
    out = model(x)
    assert out["seg"].shape == (2, 4, 8, 8) and out["cls"].shape == (2, 3)
    # the backbone is shared, not copied: the decoder model's backbone keys are the plain one's
    backbone_keys = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert backbone_keys == {k for k in plain.state_dict() if k.startswith("backbone.")}
    new = {id(p) for p in model.param_groups()[1][0]}
    assert {id(p) for m in (model.top, model.low, model.fuse) for p in m.parameters()} <= new
    # a PSL training step (online labels on) at the masks' resolution, then inference
    cfg = psl.PSLConfig(decoder="stride4", online=True)
    batch = {"image": x, "mask": torch.randint(0, 4, (2, 32, 32)), "labels": torch.ones(2, 3)}
    batch["mask"][:, :4] = 255
    loss, logs = psl._loss_fn(cfg)[0](model, batch)
    loss.backward()
    assert torch.isfinite(loss) and "ce_hat" in logs
    assert model.fuse[0].weight.grad.abs().sum() > 0 and model.low[0].weight.grad.abs().sum() > 0
    probs, conf = psl.predict(model.eval(), x, threshold=0.5)
    assert probs.shape == (2, 4, 32, 32) and conf.shape == (2, 3)
    assert torch.allclose(probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    with pytest.raises(ValueError, match="decoder"):
        psl.PSLConfig(decoder="stride2").validate()


def test_online_warmup_keeps_s_hat_out_of_the_loss_until_its_epoch():
    from aepsl.models.segmenter import LargeFOVSegmenter

    torch.manual_seed(0)
    model = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2).eval()
    x = torch.rand(2, 3, 32, 32)
    batch = {"image": x, "mask": torch.randint(0, 4, (2, 32, 32)), "labels": torch.ones(2, 3)}
    batch["mask"][:, :8] = 255
    plain, _ = psl._loss_fn(psl.PSLConfig(online=False))[0](model, batch)
    loss_fn, on_epoch = psl._loss_fn(psl.PSLConfig(online=True, online_warmup=2, epochs=4))
    with torch.no_grad():
        warm = []
        for e in range(4):
            on_epoch(e)
            loss, logs = loss_fn(model, batch)
            warm.append(loss.item())
            assert "ce_hat" in logs   # still logged during the warm-up
    # epochs 0-1: S alone (the plain loss); from epoch 2: plus CE against Ŝ, which is > 0
    assert warm[0] == pytest.approx(plain.item()) and warm[1] == pytest.approx(plain.item())
    assert warm[2] == pytest.approx(plain.item() + logs["ce_hat"].item()) and warm[2] > warm[1] + 1e-3
    with pytest.raises(ValueError, match="online_warmup"):
        psl.PSLConfig(online_warmup=6, epochs=6).validate()


def test_runtime_parameters_stay_out_of_the_hash():
    # declared once on the dataclass (field metadata): workers and batch size of inference change
    # how the stage runs, not what it computes
    base = psl.PSLConfig().hashed()
    for k in ("force", "num_workers", "eval_batch_size", "crf_workers"):
        assert k not in base
    assert psl.PSLConfig(crf_workers=7, eval_batch_size=3).hashed() == base
    assert psl.PSLConfig(decoder="none").hashed()["decoder"] == "none" != base["decoder"]


def test_branch_starts_at_half_confidence_and_learns_at_its_own_rate():
    from aepsl.models.segmenter import LargeFOVSegmenter

    model = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2, cls_lr=0.5)
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.equal(torch.sigmoid(out["cls"]), torch.full((2, 3), 0.5))
    groups = model.param_groups()
    cls_ids = {id(p) for p in model.cls.parameters()}
    (branch,) = [m for ps, m in groups if {id(p) for p in ps} == cls_ids]
    assert branch == 0.5
    assert all(m == 10.0 for ps, m in groups if ps is not groups[0][0] and {id(p) for p in ps} != cls_ids)
    # every parameter is in exactly one group
    ids = [id(p) for ps, _ in groups for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="cls_lr"):
        psl.run({"cls_lr": 0.0})
    with pytest.raises(ValueError, match="online_pixels"):
        psl.run({"online_pixels": "some"})


def test_train_view_marks_crop_padding_outside_the_image():
    from aepsl.data.transforms import TrainView

    class Base:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": np.full((20, 30, 3), 7, np.uint8), "mask": np.zeros((20, 30), np.uint8),
                    "labels": np.zeros(2, np.float32), "name": "a"}

    view = TrainView(Base(), crop=40, scale=(1.0, 1.0), seed=3)
    s = view[0]
    assert s["inside"].shape == (40, 40) and s["inside"].dtype == bool
    assert s["inside"].sum() == 20 * 30
    assert (s["mask"][s["inside"]] == 0).all() and (s["mask"][~s["inside"]] == 255).all()


def test_window_starts_cover_the_axis_at_most_half_a_window_apart():
    assert psl.window_starts(64, 64) == [0] and psl.window_starts(40, 64) == [0]
    assert psl.window_starts(96, 64) == [0, 32]
    for size, win in ((500, 321), (97, 64), (200, 30)):
        starts = psl.window_starts(size, win)
        assert starts[0] == 0 and starts[-1] == size - win
        assert all(0 < b - a <= win / 2 for a, b in zip(starts, starts[1:]))


def test_window_confidence_is_the_largest_over_crop_sized_windows():
    from aepsl.models.segmenter import LargeFOVSegmenter

    torch.manual_seed(0)
    for decoder in ("none", "stride4"):
        model = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2, decoder=decoder).eval()
        torch.nn.init.normal_(model.cls.weight)   # away from the zero start, so windows differ
        x = torch.randn(2, 3, 48, 48)
        with torch.no_grad():
            # classify() is the branch of the full forward pass
            assert torch.allclose(model.classify(x), model(x)["cls"], atol=1e-5)
            by_hand = torch.stack([torch.sigmoid(model.classify(x[:, :, y:y + 32, z:z + 32]))
                                   for y in (0, 16) for z in (0, 16)]).max(0).values
            assert torch.allclose(psl.window_confidence(model, x, 32), by_hand, atol=1e-5)
            # a window as large as the image: the whole image's confidence
            assert torch.allclose(psl.window_confidence(model, x, 48), torch.sigmoid(model(x)["cls"]), atol=1e-5)
            # predict() uses the windows when asked, and only then
            _, whole = psl.predict(model, (x.clamp(-2, 2) * 50 + 128).to(torch.uint8), 0.5)
            _, windowed = psl.predict(model, (x.clamp(-2, 2) * 50 + 128).to(torch.uint8), 0.5, window=32)
            assert not torch.allclose(windowed, whole)


def test_online_crf_replaces_the_arg_max_of_s_hat_by_the_refined_map():
    torch.manual_seed(0)
    seg = torch.randn(2, 4, 8, 8)
    cls = torch.zeros(2, 3)
    target = torch.randint(0, 4, (2, 8, 8))
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    seen = {}

    def to_background(scores):
        seen["scores"] = scores
        return torch.zeros(scores.shape[0], *scores.shape[2:], dtype=torch.long)

    _, logs = psl.psl_loss(seg, cls, target, labels, refine=to_background)
    # the refine step gets background and the labelled classes only, each pixel summing to 1
    assert torch.allclose(seen["scores"].sum(1), torch.ones(2, 8, 8), atol=1e-5)
    assert seen["scores"][0, 2].abs().max() == 0 and seen["scores"][1, 1].abs().max() == 0
    expected = F.nll_loss(F.log_softmax(seg, 1), torch.zeros_like(target))
    assert logs["ce_hat"].item() == pytest.approx(expected.item(), rel=1e-5)
    # and the real thing: a dense CRF on the crops, through the stage's loss
    from aepsl.models.segmenter import LargeFOVSegmenter

    model = LargeFOVSegmenter(4, "small", width=4, head_channels=16, head_dilation=2)
    batch = {"image": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
             "mask": torch.randint(0, 4, (2, 32, 32)), "labels": torch.ones(2, 3)}
    loss, logs = psl._loss_fn(psl.PSLConfig(online=True, online_crf=True))[0](model, batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["ce_hat"] > 0


def test_crf_online_map_weighs_only_the_image_classes_and_returns_class_ids():
    # image 0 holds class 3 on its left half, image 1 class 1 on its right; the scores say so,
    # and a stray plane (class 2, absent from both) must not reach the CRF
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0, :, :, :8] = 200
    images[1, :, :, 8:] = 200
    scores = torch.full((2, 4, 16, 16), 0.0)
    scores[0, 0], scores[1, 0] = 0.3, 0.3
    scores[0, 3, :, :8], scores[0, 0, :, :8] = 0.7, 0.1
    scores[1, 1, :, 8:], scores[1, 0, :, 8:] = 0.7, 0.1
    scores[:, 2] = 0.9
    labels = torch.tensor([[0.0, 0, 1], [1.0, 0, 0]])
    out = psl.crf_online_map(images, scores, labels)
    assert out.dtype == torch.long and out.shape == (2, 16, 16)
    assert set(out[0].unique().tolist()) == {0, 3} and set(out[1].unique().tolist()) == {0, 1}
    assert (out[0, :, :8] == 3).all() and (out[1, :, 8:] == 1).all()
    # the same answer from two worker processes
    with crf_pool(2) as pool:
        assert torch.equal(psl.crf_online_map(images, scores, labels, pool=pool), out)
        assert torch.equal(psl.crf_online_map(images, scores, labels, pool=pool), out)   # the pool serves again


def test_crf_pool_workers_end_with_the_process_that_made_them(tmp_path):
    # a stage killed with -9 mid-training must not leave its CRF workers idling behind it
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time\n"
            "from aepsl.methods.crf import crf_pool\n"
            "with crf_pool(2) as pool:\n"
            "    print(' '.join(str(p.pid) for p in pool._pool), flush=True)\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(os.path.exists(f"/proc/{p}") for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def alive(pid):
        try:
            return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False
    deadline = time.time() + 30   # a generous wait for the kernel's signal, not a timing claim
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


# ------------------------------------------------------------------ the chapter's equations, term by term
def test_online_map_is_the_arg_max_of_one_and_v_times_f_in_both_forms():
    """Ŝ = argmax over {0} ∪ Y of [1, v] ⊗ f, computed by hand, against the package's arg-max form
    (online_labels, psl_loss without online_crf) and its CRF form (the weighted scores psl_loss
    hands to ``refine``). Pixel 0 is chosen so that the background weight decides it: bg 0.4·1
    = 0.40 beats c1 0.6·0.5 = 0.30, but with a background weight of 0.5 (0.20 < 0.30) c1 would
    win and the first assertion would fail; the refine form would see a background plane of
    0.2/0.5 instead of 0.4/0.7 and fail the second."""
    f = torch.tensor([[[[0.4, 0.1, 0.2]],       # background
                       [[0.6, 0.3, 0.1]],       # c1
                       [[0.0, 0.6, 0.7]]]])     # c2 (absent from the image: never a label)
    v = torch.tensor([[0.5, 0.9]])
    y = torch.tensor([[1.0, 0.0]])
    weighted = torch.stack([1.0 * f[0, 0], v[0, 0] * f[0, 1], v[0, 1] * f[0, 2]])   # [1, v] ⊗ f
    allowed = torch.tensor([True, True, False])                                      # {0} ∪ Y
    by_hand = weighted.masked_fill(~allowed[:, None, None], -1).argmax(0)
    assert by_hand.tolist() == [[0, 1, 0]]
    assert psl.online_labels(f, v, y)[0].tolist() == by_hand.tolist()

    # the same map inside the loss, both forms: the arg-max one and the CRF one
    seg_logits, cls_logits = torch.log(f.clamp(min=1e-6)), torch.logit(v)
    target = torch.tensor([[[0, 1, 0]]])
    _, logs = psl.psl_loss(seg_logits, cls_logits, target, y)
    assert logs["agree"].item() == pytest.approx(1.0)       # Ŝ = [0, 1, 0] = S on every pixel
    seen = {}

    def refine(scores):
        seen["scores"] = scores
        return scores.argmax(1)

    psl.psl_loss(seg_logits, cls_logits, target, y, refine=refine)
    p = torch.softmax(seg_logits, 1)[0]                     # f as the loss sees it
    hand = torch.stack([p[0], v[0, 0] * p[1], 0 * p[2]])    # absent class: weight 0
    hand = hand / hand.sum(0, keepdim=True)
    assert torch.allclose(seen["scores"][0], hand, atol=1e-5)


def test_each_cross_entropy_is_divided_by_the_pixels_it_labels():
    """L = CE(S)/|S| + CE(Ŝ)/|Ŝ| + L_cls: the same labelled pixels twice over (an image twice as
    wide, its copy unlabelled by S) leave ce_s unchanged; a sum, or a mean over all pixels,
    would not."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 2, 3, generator=g)
    target = torch.tensor([[[0, 1, 255], [2, 255, 1]]])
    labels = torch.tensor([[1.0, 1.0]])
    cls_logits = torch.zeros(1, 2)
    _, one = psl.psl_loss(logits, cls_logits, target, labels)
    wide_logits = torch.cat([logits, logits], -1)
    wide_target = torch.cat([target, target], -1)
    _, two = psl.psl_loss(wide_logits, cls_logits, wide_target, labels)
    assert two["ce_s"].item() == pytest.approx(one["ce_s"].item(), rel=1e-5)
    assert two["ce_hat"].item() == pytest.approx(one["ce_hat"].item(), rel=1e-5)
    logp = torch.log_softmax(logits, 1)[0]
    labelled = [(0, 0, 0), (1, 0, 1), (2, 1, 0), (1, 1, 2)]   # (class, row, column) of S's 4 pixels
    by_hand = -sum(logp[c, i, j] for c, i, j in labelled) / 4
    assert one["ce_s"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    # the squared classification loss: sum over classes of (v_c - y_c)^2, v = sigmoid(0) = 1/2
    assert one["cls"].item() == pytest.approx(2 * (0.5 - 1.0) ** 2)


def test_test_time_drop_keeps_background_and_the_classes_at_or_above_tau():
    """f̃_c ∝ f_c · 1[c = 0 or v_c ≥ τ]: a class exactly at τ is kept, one just below is not."""
    f = torch.tensor([[[[0.2]], [[0.5]], [[0.3]]]])
    kept = psl.drop_unconfident(f, torch.tensor([[0.5, 0.4999]]), threshold=0.5)
    assert torch.allclose(kept[0, :, 0, 0], torch.tensor([0.2, 0.5, 0.0]) / 0.7)


def test_dense_crf_without_pairwise_terms_returns_its_unary_probabilities():
    """ψ_u = -log P: with both pairwise weights 0, mean-field inference gives back P."""
    from aepsl.methods.crf import CRFParams, crf_refine

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=(6, 5)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    out = crf_refine(image, probs, CRFParams(gauss_compat=0.0, bi_compat=0.0))
    assert np.allclose(out, probs, atol=1e-4)
    smoothed = crf_refine(image, probs, CRFParams())   # the pairwise terms do change it
    assert not np.allclose(smoothed, probs, atol=1e-2)
