"""The tables the book shows, built only from saved JSON (metrics.json files and the benchmark
records)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..engine.artifacts import current_metrics_files
from .records import PATH_PARAMETERS, RUNTIME_PARAMETERS, VARIANTS_PROFILE, same_data, shown_path, stage_metrics


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


def book_recipe_table(path: str | Path) -> pd.DataFrame:
    """The classifier settings measured for the book's time budget, in the order tried, from
    ``benchmarks/book_recipe.json`` (``python benchmarks/book_recipe.py``)."""
    data = json.loads(Path(path).read_text())
    rows = []
    for name, v in data.items():
        if name.startswith("_"):
            continue
        load = v.get("load_average") or {}
        rows.append({"order": v.get("order", len(rows)), "setting": name, "train scenes": v.get("n_train"),
                     "epochs": v["epochs"], "lr": v["lr"], "CAM scales": " / ".join(f"{x:g}" for x in v["cam_scales"]),
                     "val mAP": v["val_map"], "CAM seed mIoU": v["seed_miou"], "wall (s)": v["wall_s"],
                     "CPU (s)": v.get("cpu_s"), "load start / end": f"{load.get('start')} / {load.get('end')}"})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("order").drop(columns="order").set_index("setting")


# The version of the training's float rounding on the CPU: bumped when a change of the code makes
# the same seed train to slightly different numbers (1: until session 12 of issue 16; 2: EfficientNet's
# depthwise convolutions with the flipped-kernel input gradient, backbones.DepthwiseConv2d).
# benchmarks/erasing_design.py records it with each design; the tables mark older rows.
NUMERICS = 2


def _earlier(v: dict) -> str:
    """'' for a design record measured by this code on this kind of machine, else the mark."""
    if not v.get("cpu"):   # recorded before the CPU model was: another machine
        return " (earlier machine)"
    return " (earlier code)" if v.get("numerics", 1) < NUMERICS else ""


def erasing_design_table(path: str | Path) -> pd.DataFrame:
    """The scene designs and erasing recipes tried for the embedded default (issue 16), in the
    order recorded by ``benchmarks/erasing_design.py`` (``benchmarks/erasing_design.json``):
    the CAM's val mAP and best-threshold seed mIoU, what round 1 (the CAM at the mining
    threshold) covers of the discs and bodies, the later rounds' val mAP and precision, the
    pseudo masks after each round and the best of them against the CAM. Rows recorded without a
    CPU model were measured on an earlier machine, rows of an older :data:`NUMERICS` by earlier
    code, and say so (the same seed trains to slightly different numbers on another CPU model, or
    after a change of the float rounding)."""
    data = json.loads(Path(path).read_text())
    rows = []
    for key, v in data.items():
        if key.startswith("_"):
            continue
        r = v["rounds"]
        cov = (r[0].get("part_coverage") or {}).get("this_round") or {}
        hue = (v.get("scenes") or {}).get("class_hue")
        rows.append({"order": v.get("order", len(rows)), "design / merge": key,
                     "item hues": "any" if hue in (None, 1.0) else f"class bands {hue:g}",
                     "CAM val mAP": v["cam"]["val_map"], "CAM mIoU (best cut)": v["cam"]["seed_miou"],
                     "round 1 covers disc / body": (f"{cov['disc']:.2f} / {cov['body']:.2f}" if cov else "–"),
                     "val mAP, rounds 2+": " / ".join(f"{x['val_map']:.2f}" for x in r[1:]) or "–",
                     "precision per round": " / ".join(f"{x['region_precision']:.3f}" for x in r
                                                       if x.get("region_precision") is not None),
                     "AE mIoU after 1, 2, ... rounds": " / ".join(f"{x:.3f}" for x in v["ae_miou_per_rounds"]),
                     "best AE − CAM": v["ae_best_minus_cam"]})
        rows[-1]["design / merge"] += _earlier(v)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("order").drop(columns="order").set_index("design / merge")


ERASING_RECIPE = ("mine_threshold", "erase_value", "init", "clean_fraction", "round_epochs", "erase_margin",
                  "decoys", "mine_prior")   # the erasing parameters a design may change (recorded per design)


def paper_erasing() -> dict:
    """Wei et al.'s erasing recipe: the :data:`ERASING_RECIPE` parameters at their defaults."""
    from ..methods.erasing import ErasingConfig

    defaults = ErasingConfig()
    return {k: getattr(defaults, k) for k in ERASING_RECIPE}


def erasing_prior_table(path: str | Path, class_hue: float, priors) -> pd.DataFrame:
    """The paper's erasing recipe beside the background priors ``priors``, every training seed
    recorded, on scenes of ``class_hue``: the designs of ``benchmarks/erasing_design.json``
    whose ``recipe`` departs from the paper's in ``mine_prior`` and ``mine_threshold`` alone,
    indexed by (recipe, training seed). An item of ``priors`` is a ``mine_prior`` value (mining
    at the paper's threshold) or a (``mine_prior``, ``mine_threshold``) pair. A recipe measured
    on an earlier machine or by earlier code says so in its name."""
    data = json.loads(Path(path).read_text())
    paper = paper_erasing()
    at = paper["mine_threshold"]
    wanted = {(0.0, at), *((float(p[0]), float(p[1])) if isinstance(p, (tuple, list)) else (float(p), at)
                           for p in priors)}
    rows = []
    for key, v in data.items():
        rec = v.get("recipe") if not key.startswith("_") else None
        if not rec or (v.get("scenes") or {}).get("class_hue") != class_hue:
            continue
        if any(rec.get(k, d) != d for k, d in paper.items() if k not in ("mine_prior", "mine_threshold")):
            continue
        prior, threshold = float(rec.get("mine_prior", 0.0)), float(rec.get("mine_threshold", at))
        if (prior, threshold) not in wanted:
            continue
        name = ", ".join(([f"background prior {prior:g}"] if prior else [])
                         + ([f"mining at {threshold:g}"] if threshold != at else [])) or "the paper's"
        r = v["rounds"]
        rows.append({"recipe": name + _earlier(v),
                     "training seed": v.get("seed"),
                     "precision per round": " / ".join(f"{x['region_precision']:.3f}" for x in r
                                                       if x.get("region_precision") is not None),
                     "AE mIoU after 1, 2, ... rounds": " / ".join(f"{x:.3f}" for x in v["ae_miou_per_rounds"]),
                     "CAM mIoU (best cut)": v["cam"]["seed_miou"], "best AE − CAM": v["ae_best_minus_cam"],
                     "_order": (threshold, prior)})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).sort_values(["_order", "training seed"]).drop(columns="_order")
    return table.set_index(["recipe", "training seed"])


def book_segmenter_table(path: str | Path) -> pd.DataFrame:
    """The segmenter recipes tried under the book's time budget, each a whole default-profile run:
    the four segmenters' held-out mIoU and training seconds (``_segmenters`` of
    ``benchmarks/book_recipe.json``)."""
    runs = json.loads(Path(path).read_text()).get("_segmenters", {})
    rows = []
    for label, v in sorted(runs.items(), key=lambda kv: kv[1].get("order", 0)):
        row = {"recipe": label, "epochs": v["epochs"], "crop (px)": v["crop"], "lr": v["lr"]}
        for stage, name in (("ae_segmenter", "AE"), ("psl", "AE + PSL"), ("psl_plus_plus", "PSL++"),
                            ("oracle", "oracle")):
            row[f"{name} mIoU"] = v[stage]["val_miou"]
        row["oracle train (s)"] = v["oracle"]["train_s"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("recipe") if rows else pd.DataFrame()


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
    from ..engine.artifacts import load_metrics

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
                     "mining threshold": rounds[0]["params"]["mine_threshold"],
                     "rounds 2+ start": rounds[0]["params"].get("init", "fresh"),
                     "shown clean": rounds[0]["params"].get("clean_fraction", 0.0), "rounds": k,
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


def drop_sweep_table(artifacts_root: str | Path, profile: str, stages: list[str]) -> pd.DataFrame:
    """Each segmenter stage's held-out mIoU at every test-time drop threshold, as the stage saved
    it (``metrics.drop_sweep``, computed once with its model): one row per stage, one column per
    threshold, plus the threshold the stage itself uses and what it gains or loses against
    dropping nothing."""
    from ..engine.artifacts import load_metrics

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


def parameters_table(params: dict, columns: int = 3):
    """A page's run parameters, once, as a small table: ``columns`` (parameter, value) pairs a row,
    in the dataclass's order, paths relative to the repository, runtime settings (device, batch
    size at inference, workers, force) left out. ``params`` is what ``config.collect`` gives."""
    items = [(k, shown_path(v) if k in PATH_PARAMETERS and isinstance(v, str) else v)
             for k, v in params.items() if k not in RUNTIME_PARAMETERS]
    items = [(k, ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list)
              else ("''" if v == "" else v)) for k, v in items]
    columns = max(1, min(columns, -(-len(items) // 3)))   # at least three rows a column
    rows = -(-len(items) // columns) if items else 0
    table = []
    for r in range(rows):
        row = {}
        for c in range(columns):
            i = c * rows + r
            k, v = items[i] if i < len(items) else ("", "")
            row[("parameter", c)], row[("value", c)] = k, str(v)
        table.append(row)
    df = pd.DataFrame(table)
    df = df[[(name, c) for c in range(columns) for name in ("parameter", "value")]]
    df.columns = [name for _, name in ((c, n) for c in range(columns) for n in ("parameter", "value"))]
    profile = params.get("profile", "")
    caption = (f"This page's run: profile <code>{profile}</code> "
               f"(<code>notebooks/params/{profile}.yaml</code> sets what differs from the defaults)")
    return (df.style.hide(axis="index").set_caption(caption)
            .set_table_styles([{"selector": "caption", "props": "caption-side: top; text-align: left;"},
                               {"selector": "td", "props": "font-size: 0.8em; padding: 1px 6px;"},
                               {"selector": "th", "props": "font-size: 0.8em; padding: 1px 6px;"}]))


def variants_table(artifacts_root: str | Path, profile: str, data_root: str | None = None,
                   first: str = "pseudo_masks") -> tuple[pd.DataFrame, str | None]:
    """:func:`merge_variants_table` of this profile when it ran erasing variants (more than the
    book's own merge), else of the variants profile on the same scenes; ``(table, profile)``."""
    table = merge_variants_table(artifacts_root, profile, first)
    if len(table) > 1:
        return table, profile
    if profile != VARIANTS_PROFILE and (Path(artifacts_root) / VARIANTS_PROFILE).is_dir():
        rec, source = stage_metrics(artifacts_root, VARIANTS_PROFILE, first, data_root, fallback=None)
        if rec is not None and (data_root is None or same_data(rec, data_root, Path(artifacts_root) / VARIANTS_PROFILE)):
            other = merge_variants_table(artifacts_root, VARIANTS_PROFILE, first)
            if len(other) > 1:
                return other, VARIANTS_PROFILE
    return table, None if table.empty else profile


AFFINITY_STAGES = {"affinity_cam": "CAM, PSA's alphas", "affinity_ae": "AE pseudo masks",
                   "affinity_cam_cut": "CAM, our alphas"}


def affinity_table(artifacts_root: str | Path, profile: str, data_root: str | None = None) -> pd.DataFrame:
    """One row per AffinityNet run on these scenes: this profile's, else the variants profile's
    (column 'measured in'): its seeds, walk steps, seed mIoU before and after the walk."""
    rows = []
    for stage, what in AFFINITY_STAGES.items():
        rec, source = stage_metrics(artifacts_root, profile, stage, data_root)
        if rec is None or "miou_after" not in rec["metrics"]:
            continue
        m = rec["metrics"]
        rows.append({"run": stage, "seeds": what, "walk steps": m["walk"]["steps"],
                     "mIoU before": m["miou_before"], "mIoU after": m["miou_after"],
                     "change": m["miou_after"] - m["miou_before"],
                     "uncertain pixels": m["labels"].get("uncertain_fraction"), "measured in": source})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def ablation_parts(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`ablation_table` as two narrow tables that fit a page's column: the pseudo labels
    (rows with a training-split mIoU: mIoU, time, published) and the segmenters (rows with a
    held-out mIoU: mIoU, share of the oracle's, time, published). Times in whole seconds;
    a missing time is None. Both empty for an empty table."""
    if table.empty:
        return pd.DataFrame(), pd.DataFrame()

    def seconds(col):
        return [None if v is None or v != v else int(round(float(v))) for v in col]

    pseudo = table[table["pseudo-label mIoU (train)"].notna()]
    pseudo = pd.DataFrame({"mIoU (train)": pseudo["pseudo-label mIoU (train)"].astype(float),
                           "time (s)": seconds(pseudo["wall time (s)"]),
                           "published (VOC)": pseudo["published (VOC 2012)"]}, index=pseudo.index)
    final = table[table["final mIoU (held-out)"].notna()]
    final = pd.DataFrame({"mIoU (held-out)": final["final mIoU (held-out)"].astype(float),
                          "of oracle": final["ratio to oracle"].astype(float),
                          "time (s)": seconds(final["wall time (s)"]),
                          "published (VOC)": final["published (VOC 2012)"]}, index=final.index)
    return pseudo, final


ABLATION_FORMAT = {"mIoU (train)": "{:.3f}", "mIoU (held-out)": "{:.3f}", "of oracle": "{:.0%}",
                   "time (s)": "{:.0f}"}
