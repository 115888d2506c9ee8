"""Tables the book shows, built only from saved JSON (metrics.json, benchmark records), and what
the book measures on saved segmenters: their ranked predictions for its qualitative grids and
their held-out mIoU under several test-time drop thresholds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import current_metrics_files


def calibration_tables(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(classifier settings, oracle settings) from ``benchmarks/calibration.json``."""
    data = json.loads(Path(path).read_text())
    clf, ora = [], []
    for name, v in data.items():
        if name.startswith("_"):
            continue
        ds = v["dataset"]
        base = {"setting": name, "classes": len(ds["classes"]), "train images": ds["n_train"],
                "image px": ds["image_size"], "epochs": v["params"].get("epochs")}
        if "val_miou" in v:
            ora.append({**base, "head": v["params"].get("head", "1x1"), "val mIoU": v["val_miou"],
                        "fg precision": v["fg_precision"], "fg recall": v["fg_recall"],
                        "train s": v["train_seconds"]})
        else:
            clf.append({**base, "backbone": v["params"].get("backbone"), "optimizer": v["params"].get("optimizer", "sgd"),
                        "val mAP": v["val_map"], "train mAP": v["train_map"], "CAM seed mIoU": v["seed_miou"],
                        "best bg threshold": v["best_threshold"], "train s": v["train_seconds"]})
    frame = lambda rows: pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()  # noqa: E731
    return frame(clf), frame(ora)



def segmenter_recipe_table(path: str | Path) -> pd.DataFrame:
    """The oracle under the segmenter recipes we tried, in the order tried, from
    ``benchmarks/segmenter_recipe.json`` (``python benchmarks/segmenter_recipe.py``): held-out
    mIoU with PSL's test-time drop at 0.5 and with nothing dropped, the CRF score and the
    per-class IoUs as the run itself was made."""
    data = json.loads(Path(path).read_text())
    rows = []
    for name, v in data.items():
        if name.startswith("_"):
            continue
        fg = {c: x for c, x in v["iou"].items() if c != "background"}
        worst = min(fg, key=fg.get)
        rows.append({"order": v.get("order", len(rows)), "setting": name,
                     "head": "LargeFOV + stride-4 decoder" if v["decoder"] == "stride4" else "LargeFOV",
                     "epochs": v["epochs"], "lr": v.get("lr"), "weight decay": v.get("weight_decay"),
                     "scale range": "-".join(str(x) for x in v.get("scale_range", [])),
                     "test-time drop in the run": v["test_threshold"],
                     "val mIoU, drop < 0.5": v["val_miou_drop05"], "val mIoU, nothing dropped": v["val_miou_nodrop"],
                     "val mIoU + CRF (as run)": v["val_miou_crf"],
                     "true classes dropped at 0.5": v["true_classes_dropped_05"],
                     "train mIoU (300 images)": v.get("train_miou_300"), "CPU threads": v.get("threads"),
                     "background IoU": v["iou"].get("background"), "worst class": worst, "its IoU": fg[worst],
                     "train s": v["train_seconds"]})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("order").drop(columns="order").set_index("setting")


# Published PASCAL VOC 2012 numbers (mIoU, %), shown beside ours and labelled as published.
PUBLISHED = {
    "CAM": "48.0 train (PSA) · 48.3 train (IRN)",
    "AE (3 rounds, saliency bg) + PSL": "54.1 val (Wei et al.)",
    "PSL++": "55.0 val / 55.7 test (Wei et al.)",
    "AE seeds (pseudo masks)": "50.9 val (Wei et al., segmenter on AE masks)",
    "CAM + random walk": "59.7 train (PSA)",
}


def _m(root: Path, profile: str, stage: str) -> dict | None:
    from .artifacts import load_metrics

    return load_metrics(Path(root) / profile / stage, profile)   # another profile's folder: an error


def ablation_table(artifacts_root: str | Path, profile: str) -> pd.DataFrame:
    """The results chapter's table, built only from the stages' metrics.json files.

    Columns: pseudo-label mIoU on the train split, final mIoU on the held-out split, ratio of
    the final mIoU to the oracle's, wall time of the stage, the published VOC number.
    """
    root = Path(artifacts_root)
    rows = []

    def add(method, pseudo=None, final=None, seconds=None, published=""):
        rows.append({"method": method, "pseudo-label mIoU (train)": pseudo, "final mIoU (held-out)": final,
                     "wall time (s)": seconds, "published (VOC 2012)": published})

    cam = _m(root, profile, "cam")
    if cam:
        add("CAM (best bg threshold)", cam["metrics"].get("seed_miou"), None, cam["wall_time_s"], PUBLISHED["CAM"])
    cam_h = _m(root, profile, "cam_hfpl")
    if cam_h:
        add("CAM + HFPL", cam_h["metrics"].get("seed_miou"), None, cam_h["wall_time_s"], "")
    aff = _m(root, profile, "affinity_cam")
    if aff and "miou_after" in aff["metrics"]:
        add("CAM + random walk (AffinityNet)", aff["metrics"]["miou_after"], None, aff["wall_time_s"],
            PUBLISHED["CAM + random walk"])
    cut = _m(root, profile, "affinity_cam_cut")
    if cut and "miou_after" in cut["metrics"]:
        add("CAM + random walk, alphas and steps matched to our CAMs", cut["metrics"]["miou_after"], None,
            cut["wall_time_s"], "")
    pm = _m(root, profile, "pseudo_masks")
    if pm and "per_rounds" in pm["metrics"]:
        for k, p in enumerate(pm["metrics"]["per_rounds"], start=1):
            rd = _m(root, profile, f"erasing/round{k}")
            add(f"AE, {k} round{'s' if k > 1 else ''}", p["miou"], None, rd["wall_time_s"] if rd else None, "")
    pm_h = _m(root, profile, "pseudo_masks_erasing_hfpl")
    if pm_h and "miou" in pm_h["metrics"]:
        k = pm_h["metrics"]["rounds"]
        add(f"AE + HFPL, {k} round{'s' if k > 1 else ''}", pm_h["metrics"]["miou"], None, None, "")
    aff = _m(root, profile, "affinity_ae")
    if aff and "miou_after" in aff["metrics"]:
        add("AE + random walk (AffinityNet)", aff["metrics"]["miou_after"], None, aff["wall_time_s"], "")
    ae = _m(root, profile, "ae_segmenter")
    if ae:
        add("AE (segmenter on AE masks, no PSL)", None, ae["metrics"]["eval"].get("miou"), ae["wall_time_s"],
            PUBLISHED["AE seeds (pseudo masks)"])
    ps = _m(root, profile, "psl")
    if ps:
        ev, tr = ps["metrics"]["eval"], ps["metrics"].get("train", {})
        add("AE + PSL", tr.get("miou"), ev.get("miou"), ps["wall_time_s"], PUBLISHED["AE (3 rounds, saliency bg) + PSL"])
        if "crf_miou" in ev:
            add("AE + PSL + CRF", tr.get("crf_miou"), ev.get("crf_miou"), None, "")
    pp = _m(root, profile, "psl_plus_plus")
    if pp:
        ev = pp["metrics"]["eval"]
        add("PSL++", None, ev.get("miou"), pp["wall_time_s"], PUBLISHED["PSL++"])
        if "crf_miou" in ev:
            add("PSL++ + CRF", None, ev.get("crf_miou"), None, "")
    orc = _m(root, profile, "oracle")
    oracle_miou = oracle_crf = None
    if orc:
        oracle_miou = orc["metrics"]["eval"].get("miou")
        oracle_crf = orc["metrics"]["eval"].get("crf_miou")
        add("fully supervised oracle", None, oracle_miou, orc["wall_time_s"], "")
        if oracle_crf is not None:
            add("fully supervised oracle + CRF", None, oracle_crf, None, "")
    df = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    if not df.empty:
        # a CRF row is compared with the oracle + CRF, every other row with the plain oracle
        ceiling = [oracle_crf if m.endswith("+ CRF") else oracle_miou for m in df.index]
        ratio = [f / c if (c and f is not None and f == f) else float("nan")
                 for f, c in zip(df["final mIoU (held-out)"].astype(float), ceiling)]
        df.insert(2, "ratio to oracle", ratio)
    return df


def provenance_table(artifacts_root: str | Path, profile: str) -> pd.DataFrame:
    """One row per finished stage: parameters hash, code hash, seed, git revision, device, wall time."""
    root = Path(artifacts_root) / profile
    rows = []
    for path in current_metrics_files(root):   # folders kept aside for old parameters left out
        rec = json.loads(path.read_text())
        rows.append({"stage": str(path.parent.relative_to(root)), "params hash": rec.get("params_hash"),
                     "code hash": rec.get("code_hash"), "seed": rec.get("seed"), "git revision": rec.get("git_revision"), "device": rec.get("device"),
                     "wall time (s)": rec.get("wall_time_s"), "finished": rec.get("finished_at")})
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """mIoU of one image over the classes present in its ground truth or its prediction
    (pixels marked 255 ignored): how a qualitative grid ranks its best and worst cases."""
    from . import metrics as M

    conf = M.confusion_matrix(pred, gt, num_classes)
    present = (conf.sum(0) + conf.sum(1)) > 0
    iou = M.iou_per_class(conf)
    return float(np.nanmean(iou[present])) if present.any() else float("nan")


def _image_batches(tree, names: list[str], batch_size: int, device):
    """(names, their HxWx3 images, the same as uint8 [B,3,H,W] on ``device``), in chunks of
    at most ``batch_size`` images of one size each."""
    import torch

    by_shape: dict[tuple, list[str]] = {}
    for name in names:   # images of one size go through the models together
        by_shape.setdefault(tree.image(name).shape, []).append(name)
    for group in by_shape.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            images = [tree.image(n) for n in chunk]
            yield chunk, images, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)


DROP_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def drop_sweep(folder: str | Path, data_root: str | Path, split: str = "val",
               thresholds=DROP_THRESHOLDS, device: str = "auto", batch_size: int = 64) -> dict:
    """Held-out mIoU of the saved segmenter in ``folder`` for each test-time drop threshold
    (0 drops nothing; PSL drops the classes whose classification-branch confidence is below
    the threshold), no CRF: ``{"miou": {threshold: mIoU}, "used": its own test_threshold,
    "dropped_true": {threshold: share of the true (image, class) pairs dropped}}``. The network
    runs once per image; every threshold reuses its scores."""
    import torch

    from . import metrics as M
    from .data.voc import VOCTree
    from .psl import drop_unconfident, load_segmenter, predict
    from .train import pick_device

    device = pick_device(device)
    tree = VOCTree(data_root)
    if not tree.has_masks(split):
        raise ValueError(f"split {split!r} of {data_root} has no ground-truth masks to score against")
    model, cfg = load_segmenter(folder, device)
    meters = {t: M.ConfusionMeter(tree.num_classes) for t in thresholds}
    dropped = {t: 0 for t in thresholds}
    present = 0
    for chunk, _, x in _image_batches(tree, tree.ids(split), batch_size, device):
        with torch.no_grad():
            probs, conf = predict(model, x, 0.0)          # threshold 0: nothing dropped yet
        gts = [tree.mask(n) for n in chunk]
        truth = torch.from_numpy(np.stack([tree.labels(n) for n in chunk])).to(conf.device) > 0.5
        present += int(truth.sum())
        for t in thresholds:
            pred = drop_unconfident(probs, conf, t).argmax(1).cpu().numpy().astype(np.uint8)
            dropped[t] += int((truth & (conf < t)).sum())
            for p, g in zip(pred, gts):
                meters[t].update(p, g)
    return {"miou": {t: M.segmentation_scores(m.matrix, tree.classes)["miou"] for t, m in meters.items()},
            "used": cfg.test_threshold, "dropped_true": {t: dropped[t] / max(present, 1) for t in thresholds}}


def drop_sweep_table(artifacts_root: str | Path, profile: str, stages: list[str], data_root: str | Path,
                     split: str = "val", thresholds=DROP_THRESHOLDS, device: str = "auto") -> pd.DataFrame:
    """:func:`drop_sweep` for each segmenter stage: one row per stage, one column per threshold,
    plus the threshold the stage itself uses and the mIoU it gains or loses against dropping nothing."""
    rows = []
    for stage in stages:
        sweep = drop_sweep(Path(artifacts_root) / profile / stage, data_root, split, thresholds, device)
        row = {"stage": stage, "its threshold": sweep["used"]}
        row.update({f"drop < {t:g}" if t else "nothing dropped": v for t, v in sweep["miou"].items()})
        own, none = sweep["miou"].get(sweep["used"]), sweep["miou"].get(0.0)
        row["its gain over nothing dropped"] = own - none if own is not None and none is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def ranked_predictions(artifacts_root: str | Path, profile: str, stages: list[str], data_root: str | Path,
                       split: str = "val", device: str = "auto", batch_size: int = 32) -> list[dict]:
    """Every ``split`` image predicted by each segmenter stage in ``stages`` (as at test time:
    each stage's own ``test_threshold``, no CRF), ranked by the first stage's per-image mIoU, best first:
    ``[{name, image, gt, preds: {stage: mask}, miou: {stage: float}}]``. ``device`` as the
    stages' parameter ("auto": CUDA when there is one)."""
    import torch

    from .data.voc import VOCTree
    from .psl import load_segmenter, predict
    from .train import pick_device

    device = pick_device(device)
    tree = VOCTree(data_root)
    models = {s: load_segmenter(Path(artifacts_root) / profile / s, device) for s in stages}
    out = []
    for chunk, images, x in _image_batches(tree, tree.ids(split), batch_size, device):
        with torch.no_grad():
            preds = {s: predict(model, x, cfg.test_threshold)[0].argmax(1).cpu().numpy().astype(np.uint8)
                     for s, (model, cfg) in models.items()}
        for j, name in enumerate(chunk):
            gt = tree.mask(name)
            out.append({"name": name, "image": images[j], "gt": gt,
                        "preds": {s: p[j] for s, p in preds.items()},
                        "miou": {s: image_miou(p[j], gt, tree.num_classes) for s, p in preds.items()}})
    first = stages[0]
    return sorted(out, key=lambda r: -np.nan_to_num(r["miou"][first], nan=-1.0))
