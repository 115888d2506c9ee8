"""Segmentation and classification metrics.

Confusion matrices are ``int64 [C, C]`` with rows = ground truth, columns = prediction.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "confusion_matrix", "ConfusionMeter", "iou_per_class", "mean_iou", "pixel_accuracy",
    "foreground_precision_recall", "segmentation_scores", "average_precision",
    "mean_average_precision", "cam_to_mask", "threshold_sweep", "boundaries", "BoundaryMeter",
]


def _to_numpy(x: Any) -> np.ndarray:
    """np.asarray that also accepts torch tensors (on any device, with grad)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    valid = ~np.isnan(x)
    return float(x[valid].mean()) if valid.any() else float("nan")


# --------------------------------------------------------------------------- confusion
def confusion_matrix(pred: Any, gt: Any, num_classes: int,
                     ignore_index: int | None = 255) -> np.ndarray:
    """int64 [num_classes, num_classes] confusion matrix (rows = gt, cols = pred).

    Pixels whose gt equals ``ignore_index`` are skipped.
    """
    pred = _to_numpy(pred)
    gt = _to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"confusion_matrix: pred shape {pred.shape} != gt shape {gt.shape}")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    pred = pred.reshape(-1).astype(np.int64)
    gt = gt.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
    if gt.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    if pred.min() < 0 or pred.max() >= num_classes:
        bad = pred[(pred < 0) | (pred >= num_classes)][0]
        raise ValueError(f"confusion_matrix: pred contains {bad}, outside [0, {num_classes})")
    if gt.min() < 0 or gt.max() >= num_classes:
        bad = gt[(gt < 0) | (gt >= num_classes)][0]
        raise ValueError(f"confusion_matrix: gt contains {bad}, outside [0, {num_classes}) "
                         f"and not the ignore index {ignore_index}")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


class ConfusionMeter:
    """Accumulates a confusion matrix over many (pred, gt) pairs."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        self._conf += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    @property
    def matrix(self) -> np.ndarray:
        return self._conf.copy()

    def reset(self) -> None:
        self._conf[:] = 0


# --------------------------------------------------------------------------- scores
def _check_conf(conf: Any) -> np.ndarray:
    conf = _to_numpy(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {conf.shape}")
    return conf.astype(np.float64)


def iou_per_class(conf: Any) -> np.ndarray:
    """IoU of every class; NaN for classes absent from both gt and prediction."""
    conf = _check_conf(conf)
    tp = np.diag(conf)
    return _safe_div(tp, conf.sum(0) + conf.sum(1) - tp)


def mean_iou(conf: Any) -> float:
    """Mean IoU over classes present in gt or prediction."""
    return _nanmean(iou_per_class(conf))


def pixel_accuracy(conf: Any) -> float:
    """Fraction of (non-ignored) pixels predicted correctly; NaN if there are none."""
    conf = _check_conf(conf)
    return float(_safe_div(np.trace(conf), conf.sum()))


def foreground_precision_recall(conf: Any, background: int = 0) -> tuple[float, float]:
    """Class-agnostic foreground-vs-background precision and recall."""
    conf = _check_conf(conf)
    fg = np.ones(conf.shape[0], dtype=bool)
    fg[background] = False
    tp = conf[np.ix_(fg, fg)].sum()
    precision = float(_safe_div(tp, conf[:, fg].sum()))
    recall = float(_safe_div(tp, conf[fg, :].sum()))
    return precision, recall


def error_shares(conf: Any, background: int = 0) -> dict:
    """Where the wrong pixels go, each as a share of all scored pixels: ``bg_as_object`` (true
    background predicted as some class), ``object_as_bg`` (an object pixel predicted as
    background) and ``object_as_other`` (an object pixel given another class). With the correct
    share they sum to 1."""
    conf = _check_conf(conf).astype(np.float64)
    total = conf.sum()
    fg = np.ones(conf.shape[0], dtype=bool)
    fg[background] = False
    between = conf[np.ix_(fg, fg)]
    return {"bg_as_object": float(_safe_div(conf[background, fg].sum(), total)),
            "object_as_bg": float(_safe_div(conf[fg, background].sum(), total)),
            "object_as_other": float(_safe_div(between.sum() - np.trace(between), total))}


def _none_if_nan(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def segmentation_scores(conf: Any, class_names: Sequence[str] | None = None) -> dict:
    """JSON-friendly summary: miou, pixel_acc, fg_precision, fg_recall, per-class iou."""
    iou = iou_per_class(conf)
    if class_names is None:
        class_names = [str(i) for i in range(len(iou))]
    if len(class_names) != len(iou):
        raise ValueError(f"segmentation_scores: {len(class_names)} class_names for a "
                         f"{len(iou)}-class confusion matrix")
    precision, recall = foreground_precision_recall(conf)
    return {
        "miou": _none_if_nan(_nanmean(iou)),
        "pixel_acc": _none_if_nan(pixel_accuracy(conf)),
        "fg_precision": _none_if_nan(precision),
        "fg_recall": _none_if_nan(recall),
        "iou": {str(n): _none_if_nan(v) for n, v in zip(class_names, iou)},
    }


# --------------------------------------------------------------------------- classification
def _ap_one(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class, ties treated as one threshold (as sklearn)."""
    n_pos = targets.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], targets[order]
    # last index of each run of equal scores = one operating point per distinct threshold
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1.0)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class AP for [N, C] multilabel scores and {0,1} targets; NaN without positives."""
    scores = _to_numpy(scores).astype(np.float64)
    targets = _to_numpy(targets)
    if scores.ndim == 1:
        scores = scores[:, None]
    if targets.ndim == 1:
        targets = targets[:, None]
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"average_precision: scores shape {scores.shape} and targets shape "
                         f"{targets.shape} must be equal [N, C]")
    if not np.isfinite(scores).all():
        raise ValueError("average_precision: scores contain NaN or inf")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("average_precision: targets must be 0 or 1")
    targets = targets.astype(np.float64)
    return np.array([_ap_one(scores[:, c], targets[:, c]) for c in range(scores.shape[1])],
                    dtype=np.float64)


def mean_average_precision(scores: Any, targets: Any) -> float:
    """Mean of the per-class APs over classes with at least one positive."""
    return _nanmean(average_precision(scores, targets))


# --------------------------------------------------------------------------- CAM -> mask
def _cam_peak(cam: Any, class_ids: Any, shape: tuple[int, ...] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the highest CAM value (-inf when K = 0) and its class index.

    The value keeps the CAM's float dtype; thresholds are rounded to that dtype before
    comparing, so a float32 CAM value of 0.3 counts as equal to the threshold 0.3.
    """
    cam = _to_numpy(cam)
    if not np.issubdtype(cam.dtype, np.floating):
        cam = cam.astype(np.float64)
    class_ids = _to_numpy(class_ids).astype(np.int64).reshape(-1)
    if cam.ndim == 2 and class_ids.size == 1:
        cam = cam[None]
    if cam.ndim != 3 or cam.shape[0] != class_ids.size:
        raise ValueError(f"cam must be [K, H, W] with K = len(class_ids) = {class_ids.size}, "
                         f"got shape {cam.shape}")
    if shape is not None and cam.shape[1:] != tuple(shape):
        raise ValueError(f"cam spatial size {cam.shape[1:]} != gt size {tuple(shape)}")
    if class_ids.size == 0:
        hw = cam.shape[1:]
        return np.full(hw, -np.inf), np.zeros(hw, dtype=np.int64)
    if (class_ids < 1).any():
        raise ValueError(f"class_ids must be foreground indices >= 1, got {class_ids.tolist()}")
    if not np.isfinite(cam).all():
        raise ValueError("cam contains NaN or inf")
    arg = cam.argmax(0)
    peak = np.take_along_axis(cam, arg[None], 0)[0]
    return peak, class_ids[arg]


def cam_to_mask(cam: Any, class_ids: Any, bg_threshold: float) -> np.ndarray:
    """uint8 HxW pseudo mask: argmax over [bg_threshold, cam_1..cam_K] -> [0, class_ids].

    Ties go to the earlier plane, so a pixel equal to the threshold is background.
    """
    peak, cls = _cam_peak(cam, class_ids)
    return np.where(peak > np.asarray(bg_threshold, dtype=peak.dtype), cls, 0).astype(np.uint8)


def threshold_sweep(cams_iter: Iterable[tuple[Any, Any, Any]], thresholds: Sequence[float],
                    num_classes: int, ignore_index: int | None = 255,
                    class_names: Sequence[str] | None = None) -> dict:
    """Score ``cam_to_mask`` at every background threshold in one pass over the images.

    ``cams_iter`` yields ``(cam [K,H,W], class_ids [K], gt [H,W])``.  Returns thresholds,
    miou per threshold, the best threshold, its miou, its scores and confusion matrix.
    """
    thr = np.asarray([float(t) for t in thresholds], dtype=np.float64)
    if thr.size == 0:
        raise ValueError("threshold_sweep: thresholds is empty")
    order = np.argsort(thr, kind="mergesort")
    sorted_thr = thr[order]
    n_t, nc = thr.size, int(num_classes)
    # hist[k, g, c]: pixels with gt g, peak class c, and exactly k sorted thresholds below
    # the peak -> such a pixel is class c for sorted thresholds 0..k-1, background after.
    hist = np.zeros((n_t + 1) * nc * nc, dtype=np.int64)
    for cam, class_ids, gt in cams_iter:
        gt = _to_numpy(gt).astype(np.int64)
        peak, cls = _cam_peak(cam, class_ids, gt.shape)
        if cls.size and cls.max(initial=0) >= nc:
            raise ValueError(f"threshold_sweep: class id {int(cls.max())} >= num_classes {nc}")
        if ignore_index is not None:
            keep = gt != ignore_index
            gt, peak, cls = gt[keep], peak[keep], cls[keep]
        else:
            gt, peak, cls = gt.reshape(-1), peak.reshape(-1), cls.reshape(-1)
        if gt.size and (gt.min() < 0 or gt.max() >= nc):
            bad = gt[(gt < 0) | (gt >= nc)][0]
            raise ValueError(f"threshold_sweep: gt contains {bad}, outside [0, {nc})")
        # number of thresholds strictly below the peak, compared in the CAM's precision
        k = np.searchsorted(sorted_thr.astype(peak.dtype), peak, side="left")
        hist += np.bincount((k * nc + gt) * nc + cls, minlength=hist.size)
    hist = hist.reshape(n_t + 1, nc, nc)
    above = np.cumsum(hist[::-1], axis=0)[::-1]      # above[j] = sum_{k >= j} hist[k]
    total = above[0]
    fg = above[1:]                                    # [n_t, nc, nc] pixels still foreground
    conf_sorted = fg.copy()
    conf_sorted[:, :, 0] = 0
    # pixels whose peak class is c but which fell to background (fg[..., 0] is always 0
    # unless K = 0, where class 0 means "no CAM": those are background too)
    conf_sorted[:, :, 0] = (total[None] - fg).sum(-1) + fg[:, :, 0]
    conf = np.empty_like(conf_sorted)
    conf[order] = conf_sorted
    mious = np.array([mean_iou(c) for c in conf])
    best = int(np.nanargmax(mious)) if not np.isnan(mious).all() else 0
    return {
        "thresholds": thr.tolist(),
        "miou": [_none_if_nan(m) for m in mious],
        "best_threshold": float(thr[best]),
        "best_miou": _none_if_nan(mious[best]),
        "best_scores": segmentation_scores(conf[best], class_names),
        "confusion": conf[best],
    }


# --------------------------------------------------------------------------- contours
def boundaries(labels: Any) -> np.ndarray:
    """Boolean HxW: pixels whose right or lower neighbour has another label."""
    lab = _to_numpy(labels)
    out = np.zeros(lab.shape, bool)
    out[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    out[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return out


class BoundaryMeter:
    """Contour precision / recall / F-score accumulated over images (a boundary pixel counts as
    matched when the other map has a boundary within ``tolerance`` pixels, chessboard distance).

    Ignore pixels (255 in the ground truth) take the class of their nearest labelled pixel before
    the ground truth's contour is drawn, so on PASCAL VOC, whose annotators draw a 255 band along
    every object outline, the true contour runs through the middle of the band; a predicted
    contour pixel inside the band (or within ``tolerance`` of it) counts as matched."""

    def __init__(self, tolerance: int = 1, ignore_index: int = 255):
        self.tolerance, self.ignore_index = int(tolerance), ignore_index
        self.counts = np.zeros(4, np.int64)   # matched pred, pred, matched gt, gt

    def update(self, pred: Any, gt: Any) -> None:
        from scipy.ndimage import binary_dilation, distance_transform_edt

        pred, gt = _to_numpy(pred), _to_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"BoundaryMeter: pred shape {pred.shape} != gt shape {gt.shape}")
        unknown = gt == self.ignore_index
        if unknown.all():
            return
        if unknown.any():   # every ignore pixel takes the class of the nearest labelled one
            nearest = distance_transform_edt(unknown, return_distances=False, return_indices=True)
            gt = gt[tuple(nearest)]
        size = 2 * self.tolerance + 1
        grow = (lambda m: binary_dilation(m, np.ones((size, size), bool))) if self.tolerance else (lambda m: m)
        bp, bg = boundaries(pred), boundaries(gt)
        self.counts += [(bp & (grow(bg) | grow(unknown))).sum(), bp.sum(), (bg & grow(bp)).sum(), bg.sum()]

    def scores(self) -> dict:
        mp, p, mg, g = (float(c) for c in self.counts)
        precision = mp / p if p else float("nan")
        recall = mg / g if g else float("nan")
        if precision != precision or recall != recall:
            f = float("nan")
        else:
            f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {"contour_precision": _none_if_nan(precision), "contour_recall": _none_if_nan(recall),
                "contour_f": _none_if_nan(f)}


def image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """mIoU of one image over the classes present in its ground truth or its prediction
    (pixels marked 255 ignored): how a qualitative grid ranks its best and worst cases."""
    conf = confusion_matrix(pred, gt, num_classes)
    present = (conf.sum(0) + conf.sum(1)) > 0
    iou = iou_per_class(conf)
    return float(np.nanmean(iou[present])) if present.any() else float("nan")
