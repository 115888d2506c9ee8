"""Metrics on hand-computed cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aepsl.methods.metrics import (ConfusionMeter, average_precision, cam_to_mask, confusion_matrix,
                           error_shares, foreground_precision_recall, iou_per_class, mean_average_precision,
                           mean_iou, pixel_accuracy, segmentation_scores, threshold_sweep)

# 2x3 example, 3 classes
GT = np.array([[0, 0, 1],
               [1, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1],
                 [1, 2, 0]], dtype=np.uint8)


def test_confusion_and_iou_by_hand():
    conf = confusion_matrix(PRED, GT, 3)
    # rows = gt, cols = pred
    # gt0 -> pred {0, 1}; gt1 -> pred {1, 1}; gt2 -> pred {2, 0}
    np.testing.assert_array_equal(conf, [[1, 1, 0],
                                         [0, 2, 0],
                                         [1, 0, 1]])
    assert conf.dtype == np.int64
    # IoU_c = TP / (gt_c + pred_c - TP)
    # class 0: TP=1, gt=2, pred=2 -> 1/3; class 1: TP=2, gt=2, pred=3 -> 2/3
    # class 2: TP=1, gt=2, pred=1 -> 1/2
    np.testing.assert_allclose(iou_per_class(conf), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(conf) == pytest.approx(4 / 6)
    # torch tensors and other shapes give the same answer
    conf_t = confusion_matrix(torch.from_numpy(PRED).long(), torch.from_numpy(GT), 3)
    np.testing.assert_array_equal(conf_t, conf)
    np.testing.assert_array_equal(confusion_matrix(PRED.ravel(), GT.ravel(), 3), conf)


def test_ignore_and_absent_classes():
    gt = np.array([[0, 255, 1], [1, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 3, 1], [0, 3, 1]], dtype=np.uint8)  # pred under ignore is anything
    conf = confusion_matrix(pred, gt, 4)
    assert conf.sum() == 4
    iou = iou_per_class(conf)
    # class 0: TP=1, gt=1, pred=2 -> 1/2; class 1: TP=2, gt=3, pred=2 -> 2/3
    # classes 2 and 3: absent from gt and (non-ignored) pred -> NaN
    np.testing.assert_allclose(iou[:2], [1 / 2, 2 / 3])
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((1 / 2 + 2 / 3) / 2)
    scores = segmentation_scores(conf, ["bg", "a", "b", "c"])
    assert scores["iou"]["b"] is None and scores["iou"]["a"] == pytest.approx(2 / 3)
    json.dumps(scores)  # JSON friendly


def test_confusion_errors():
    with pytest.raises(ValueError, match="pred contains 3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="pred contains -1"):
        confusion_matrix(np.array([-1]), np.array([0]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_meter():
    m = ConfusionMeter(3)
    m.update(PRED, GT)
    m.update(torch.from_numpy(PRED), torch.from_numpy(GT))
    np.testing.assert_array_equal(m.matrix, 2 * confusion_matrix(PRED, GT, 3))
    m.reset()
    assert m.matrix.sum() == 0


def test_fg_precision_recall_by_hand():
    gt = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    pred = np.array([0, 1, 1, 2, 2, 0, 0, 2])
    conf = confusion_matrix(pred, gt, 3)
    # predicted fg: indices 1,2,3,4,7 -> 5 pixels; gt fg: indices 2..6 -> 5 pixels
    # fg on both (class-agnostic): indices 2,3,4 -> 3 pixels
    p, r = foreground_precision_recall(conf)
    assert p == pytest.approx(3 / 5) and r == pytest.approx(3 / 5)
    # no predicted foreground -> precision undefined
    p, r = foreground_precision_recall(confusion_matrix(np.zeros(3), np.array([0, 1, 1]), 2))
    assert math.isnan(p) and r == 0.0


def test_error_shares_by_hand():
    gt = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    pred = np.array([0, 1, 1, 2, 2, 0, 0, 2])
    # background called an object: indices 1, 7; object called background: 5, 6; object given
    # another class: 3; correct: 0, 2, 4
    shares = error_shares(confusion_matrix(pred, gt, 3))
    assert shares == pytest.approx({"bg_as_object": 2 / 8, "object_as_bg": 2 / 8, "object_as_other": 1 / 8})


def test_average_precision_by_hand():
    scores = np.array([[0.9, 0.1], [0.8, 0.4], [0.7, 0.35], [0.6, 0.8]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    ap = average_precision(scores, targets)
    # class 0 ranking: +, -, +, -  -> precision at the hits: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(ap[1])  # no positives
    assert mean_average_precision(scores, targets) == pytest.approx(5 / 6)


def test_average_precision_ties_match_sklearn():
    # ties: the top two share a score; one positive and one negative among them
    scores = np.array([0.5, 0.5, 0.3, 0.2, 0.2, 0.1])
    targets = np.array([1, 0, 1, 0, 1, 0])
    # thresholds 0.5: P=1/2 R=1/3; 0.3: P=2/3 R=2/3; 0.2: P=3/5 R=1; 0.1: P=1/2 R=1
    # AP = 1/3*1/2 + 1/3*2/3 + 1/3*3/5
    expected = (1 / 2 + 2 / 3 + 3 / 5) / 3
    assert average_precision(scores, targets)[0] == pytest.approx(expected)
    # brute force of the same definition on tie-heavy random data
    rng = np.random.default_rng(0)
    s = np.round(rng.random((50, 4)), 1)
    t = (rng.random((50, 4)) < 0.4).astype(int)
    ref = []
    for c in range(4):
        ap, prev_r = 0.0, 0.0
        for tau in sorted(set(s[:, c]), reverse=True):
            sel = s[:, c] >= tau
            p, r = t[sel, c].mean(), t[sel, c].sum() / t[:, c].sum()
            ap, prev_r = ap + (r - prev_r) * p, r
        ref.append(ap)
    np.testing.assert_allclose(average_precision(s, t), ref)
    metrics = pytest.importorskip("sklearn.metrics")
    assert metrics.average_precision_score(targets, scores) == pytest.approx(expected)
    ref = [metrics.average_precision_score(t[:, c], s[:, c]) for c in range(4)]
    np.testing.assert_allclose(average_precision(s, t), ref)


def test_cam_to_mask_rule():
    cam = np.array([[[0.2, 0.6, 0.3]],
                    [[0.1, 0.7, 0.3]]], dtype=np.float32)  # K=2, H=1, W=3
    # t=0.25: px0 max 0.2 < t -> bg; px1 class 5 (0.7); px2 tie 0.3/0.3 -> first (class 2)
    np.testing.assert_array_equal(cam_to_mask(cam, [2, 5], 0.25), [[0, 5, 2]])
    # a value equal to the threshold stays background
    np.testing.assert_array_equal(cam_to_mask(cam, [2, 5], 0.3), [[0, 5, 0]])
    np.testing.assert_array_equal(cam_to_mask(np.zeros((0, 1, 3)), [], 0.1), [[0, 0, 0]])


def _sweep_case():
    """Image 1: gt class 1 on a 2x2 block whose CAM is 0.6; background CAM values 0.2
    and 0.4.  Best threshold: any t in [0.4, 0.6) -> perfect mask."""
    gt1 = np.array([[1, 1, 0], [1, 1, 0]], dtype=np.uint8)
    cam1 = np.array([[[0.6, 0.6, 0.2], [0.6, 0.6, 0.4]]], dtype=np.float32)
    # Image 2: no labelled class (K=0), all background except one ignore pixel
    gt2 = np.array([[0, 0, 255]], dtype=np.uint8)
    cam2 = np.zeros((0, 1, 3), dtype=np.float32)
    # Image 3: two classes; class 2 region CAM 0.9, class 1 CAM weak 0.35 there
    gt3 = np.array([[2, 2, 0, 0]], dtype=np.uint8)
    cam3 = np.array([[[0.35, 0.35, 0.1, 0.0]], [[0.9, 0.9, 0.05, 0.3]]], dtype=np.float32)
    return [(cam1, [1], gt1), (cam2, [], gt2), (cam3, np.array([1, 2]), gt3)]


def test_threshold_sweep_by_hand():
    thresholds = [0.5, 0.1, 0.3, 0.7]  # unsorted on purpose
    out = threshold_sweep(iter(_sweep_case()), thresholds, num_classes=3)
    assert out["thresholds"] == thresholds
    # t=0.5: every pixel right -> mIoU 1.  t=0.3: bg px with 0.4 (img1) -> class 1 wrong
    # t=0.1: more bg wrong;  t=0.7: class-1 block lost -> worse
    assert out["best_threshold"] == 0.5
    assert out["best_miou"] == pytest.approx(1.0)
    assert out["miou"][thresholds.index(0.5)] == pytest.approx(1.0)
    assert all(m < 1.0 for t, m in zip(thresholds, out["miou"]) if t != 0.5)
    # t=0.3 by hand: img1 px(1,2)=0.4 -> class 1 (gt 0); img3 px3: 0.3 is not > 0.3 -> bg
    # conf rows gt: 0: [2+2+1, 1, 0] ... class0: gt0 px = 2 (img1) + 2 (img2) + 2 (img3) = 6
    # pred0 & gt0 = 5, gt0->pred1 = 1; class1: gt 4, all pred1; class2: gt 2, all pred2
    # IoU0 = 5/6, IoU1 = 4/5, IoU2 = 1
    assert out["miou"][thresholds.index(0.3)] == pytest.approx((5 / 6 + 4 / 5 + 1) / 3)
    assert out["confusion"].sum() == 6 + 2 + 4  # one ignore pixel skipped
    assert out["best_scores"]["miou"] == pytest.approx(1.0)
    json.dumps({k: v for k, v in out.items() if k != "confusion"})


def test_threshold_sweep_matches_cam_to_mask():
    rng = np.random.default_rng(1)
    cases = []
    for k in (0, 1, 2, 3):
        ids = rng.choice(np.arange(1, 5), size=k, replace=False)
        cam = np.round(rng.random((k, 6, 7)), 1).astype(np.float32)  # ties with thresholds
        gt = rng.integers(0, 5, size=(6, 7)).astype(np.uint8)
        gt[0, 0] = 255
        cases.append((cam, ids, gt))
    thresholds = [0.0, 0.2, 0.3, 0.5, 0.55, 0.9, 1.0]
    out = threshold_sweep(cases, thresholds, num_classes=5)
    for t, miou in zip(thresholds, out["miou"]):
        meter = ConfusionMeter(5)
        for cam, ids, gt in cases:
            meter.update(cam_to_mask(cam, ids, t), gt)
        assert miou == pytest.approx(mean_iou(meter.matrix))
        if t == out["best_threshold"]:
            np.testing.assert_array_equal(out["confusion"], meter.matrix)


def test_threshold_sweep_only_k0():
    gt = np.array([[0, 1]], dtype=np.uint8)
    out = threshold_sweep([(np.zeros((0, 1, 2)), [], gt)], [0.2, 0.4], num_classes=2)
    # everything background: IoU0 = 1/2, IoU1 = 0
    assert out["miou"] == [pytest.approx(0.25), pytest.approx(0.25)]
    assert out["best_threshold"] == 0.2
    np.testing.assert_array_equal(out["confusion"], [[1, 0], [1, 0]])


def test_threshold_sweep_errors():
    with pytest.raises(ValueError, match="thresholds"):
        threshold_sweep([], [], num_classes=2)
    with pytest.raises(ValueError, match="cam"):
        threshold_sweep([(np.zeros((2, 2, 2)), [1], np.zeros((2, 2), np.uint8))], [0.5], 2)


def test_boundary_meter_scores_contours_and_reads_voc_bands():
    from aepsl.methods import metrics as M

    gt = np.zeros((12, 12), np.uint8)
    gt[3:9, 3:9] = 1
    exact = M.BoundaryMeter(tolerance=0)
    exact.update(gt, gt)
    assert exact.scores() == {"contour_precision": 1.0, "contour_recall": 1.0, "contour_f": 1.0}
    shifted = np.roll(gt, 2, axis=1)   # two pixels off: missed at tolerance 1, not at 2
    near, far = M.BoundaryMeter(tolerance=2), M.BoundaryMeter(tolerance=1)
    near.update(shifted, gt)
    far.update(shifted, gt)
    assert near.scores()["contour_f"] == 1.0 and far.scores()["contour_f"] < 0.7
    # PASCAL VOC style: a 255 band on the object's outline. The contour is scored (not dropped),
    # and a prediction whose edge lies anywhere inside the band matches it.
    voc = gt.copy()
    voc[3, 3:9] = voc[8, 3:9] = voc[3:9, 3] = voc[3:9, 8] = 255
    band = M.BoundaryMeter(tolerance=1)
    band.update(gt, voc)
    s = band.scores()
    assert s["contour_recall"] is not None and s["contour_precision"] == 1.0 and s["contour_f"] > 0.9
    empty = M.BoundaryMeter()
    empty.update(np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8))
    assert empty.scores()["contour_f"] is None
