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


# The stage folders the ablation table reads (the runs of the default profile write them; a test
# keeps the two in step, so a renamed stage cannot silently drop a row).
ABLATION_STAGES = ("cam", "cam_hfpl", "affinity_cam", "affinity_cam_cut", "pseudo_masks", "erasing/round1",
                   "erasing/round2", "erasing/round3", "pseudo_masks_erasing_hfpl", "affinity_ae", "ae_segmenter",
                   "psl", "psl_plus_plus", "oracle")


def _m(root: Path, profile: str, stage: str) -> dict | None:
    if stage not in ABLATION_STAGES and not stage.startswith("erasing/round"):
        raise ValueError(f"the ablation table reads stage {stage!r}: list it in ABLATION_STAGES")
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


def merge_variants_table(artifacts_root: str | Path, profile: str, first: str = "pseudo_masks") -> pd.DataFrame:
    """One row per finished merge stage of ``profile`` (the book's and every erasing variant the
    profile ran), ``first`` on top: the erase value, the last round's train mAP on erased images
    and val mAP on clean ones, the pseudo-mask mIoU after 1 and after all merged rounds."""
    root = Path(artifacts_root) / profile
    rows = []
    for path in current_metrics_files(root):
        rec = json.loads(path.read_text())
        params = rec.get("params") or {}
        if "erasing_stage" not in params or "bg_cue" not in params:
            continue
        k, per = rec["metrics"]["rounds"], rec["metrics"].get("per_rounds") or [{}]
        rounds = [json.loads((root / params["erasing_stage"] / f"round{j}" / "metrics.json").read_text())
                  for j in (1, k)]
        last = rounds[-1]["metrics"] if k > 1 else {}
        rows.append({"merge stage": str(path.parent.relative_to(root)), "erasing stage": params["erasing_stage"],
                     "erase value": rounds[0]["params"]["erase_value"],
                     "mining threshold": rounds[0]["params"]["mine_threshold"], "rounds": k,
                     "last round train mAP (erased)": last.get("train_map"),
                     "last round val mAP (clean)": last.get("val_map"),
                     "mIoU after 1 round": per[0].get("miou"), "mIoU after all rounds": per[k - 1].get("miou")
                     if len(per) >= k else None})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).set_index("merge stage")
    order = [first] + sorted(i for i in df.index if i != first)
    return df.loc[[i for i in order if i in df.index]].round(3)


def _load_text(load: dict | None) -> str:
    """'1.02 / 2.10': the 1-minute load average when a stage started and ended ('' if unrecorded)."""
    if not load:
        return ""
    return " / ".join("–" if v is None else f"{v:.2f}" for v in (load.get("start"), load.get("end")))


def provenance_table(artifacts_root: str | Path, profile: str) -> pd.DataFrame:
    """One row per finished stage: parameters hash, code hash, seed, git revision, device, wall time."""
    root = Path(artifacts_root) / profile
    rows = []
    for path in current_metrics_files(root):   # folders kept aside for old parameters left out
        rec = json.loads(path.read_text())
        rows.append({"stage": str(path.parent.relative_to(root)), "params hash": rec.get("params_hash"),
                     "code hash": rec.get("code_hash"), "seed": rec.get("seed"), "git revision": rec.get("git_revision"), "device": rec.get("device"),
                     "wall time (s)": rec.get("wall_time_s"), "CPU time (s)": rec.get("cpu_time_s"),
                     "load at start / end": _load_text(rec.get("load_average")), "finished": rec.get("finished_at")})
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    """mIoU of one image over the classes present in its ground truth or its prediction
    (pixels marked 255 ignored): how a qualitative grid ranks its best and worst cases."""
    from . import metrics as M

    conf = M.confusion_matrix(pred, gt, num_classes)
    present = (conf.sum(0) + conf.sum(1)) > 0
    iou = M.iou_per_class(conf)
    return float(np.nanmean(iou[present])) if present.any() else float("nan")


DROP_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)   # as aepsl.psl.DROP_THRESHOLDS (the stage sweeps them)


def drop_sweep_table(artifacts_root: str | Path, profile: str, stages: list[str]) -> pd.DataFrame:
    """Each segmenter stage's held-out mIoU at every test-time drop threshold, as the stage saved
    it (``metrics.drop_sweep``, computed once with its model): one row per stage, one column per
    threshold, plus the threshold the stage itself uses and what it gains or loses against
    dropping nothing."""
    from .artifacts import load_metrics

    rows = []
    for stage in stages:
        rec = load_metrics(Path(artifacts_root) / profile / stage, profile)
        sweep = (rec or {}).get("metrics", {}).get("drop_sweep")
        if not sweep:
            continue
        miou = {float(t): v for t, v in sweep["miou"].items()}
        row = {"stage": stage, "its threshold": sweep["used"]}
        row.update({f"drop < {t:g}" if t else "nothing dropped": v for t, v in sorted(miou.items())})
        own, none = miou.get(float(sweep["used"])), miou.get(0.0)
        row["its gain over nothing dropped"] = own - none if own is not None and none is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()


def ranked_predictions(artifacts_root: str | Path, profile: str, stages: list[str], data_root: str | Path,
                       split: str = "val") -> list[dict]:
    """Every ``split`` image as each segmenter stage in ``stages`` predicted it at test time (its
    own ``test_threshold``, no CRF; the PNGs the stage saved in ``eval_pred/``), ranked by the
    first stage's per-image mIoU, best first: ``[{name, image, gt, preds: {stage: mask},
    miou: {stage: float}}]``. Nothing is recomputed."""
    from PIL import Image

    from .data.voc import VOCTree

    tree = VOCTree(data_root)
    folders = {s: Path(artifacts_root) / profile / s / "eval_pred" for s in stages}
    for s, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"no saved predictions of stage {s!r} in {folder}: rerun its notebook")
    out = []
    for name in tree.ids(split):
        gt = tree.mask(name)
        preds = {s: np.asarray(Image.open(folder / f"{name}.png")) for s, folder in folders.items()}
        out.append({"name": name, "image": tree.image(name), "gt": gt, "preds": preds,
                    "miou": {s: image_miou(p, gt, tree.num_classes) for s, p in preds.items()}})
    first = stages[0]
    return sorted(out, key=lambda r: -np.nan_to_num(r["miou"][first], nan=-1.0))
