"""The tables the book shows, built only from saved JSON (metrics.json files and the benchmark
records)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from ..engine.artifacts import current_metrics_files
from .records import PATH_PARAMETERS, RUNTIME_PARAMETERS, VARIANTS_PROFILE, same_data, shown_path, stage_metrics


# The version of the training's float rounding on the CPU: bumped when a change of the code makes
# the same seed train to slightly different numbers (1: PyTorch's own depthwise-convolution
# backward; 2: EfficientNet's depthwise convolutions with the flipped-kernel input gradient,
# backbones.DepthwiseConv2d). benchmarks/erasing_design.py records it with each design.
NUMERICS = 2


ERASING_RECIPE = ("mine_threshold", "erase_value", "init", "clean_fraction", "round_epochs", "erase_margin",
                  "decoys", "mine_prior")   # the erasing parameters a design may change (recorded per design)


def paper_erasing() -> dict:
    """Wei et al.'s erasing recipe: the :data:`ERASING_RECIPE` parameters at their defaults."""
    from ..methods.erasing import ErasingConfig

    defaults = ErasingConfig()
    return {k: getattr(defaults, k) for k in ERASING_RECIPE}


def book_erasing_changes() -> dict:
    """The :data:`ERASING_RECIPE` parameters in which the book's erasing run departs from the
    paper's recipe (``mine_prior`` and ``mine_threshold`` in the default profile)."""
    from .records import book_parameters

    book, paper = book_parameters("02_erasing"), paper_erasing()
    return {k: book[k] for k in ERASING_RECIPE if book.get(k, paper[k]) != paper[k]}


# ----------------------------------------------------------------------------------------------
# The design appendix: the records of benchmarks/*.json as short, readable tables. Every function
# takes the record as a dict (records.design_record gives {} where the file is missing) and
# returns an empty frame where there is nothing to show.

def show(table: pd.DataFrame, caption: str = ""):
    """``table`` as the book shows a table: mIoU, mAP and other fractions to 3 decimals, a column
    whose name ends in '(s)' in whole seconds, a difference ('−' or 'gain' in its name) with its
    sign, missing values as '–', the caption above, small type."""
    def fmt(name):
        name = str(name)
        if name.endswith("(s)") or name.endswith("(MiB)"):
            return lambda x: "–" if pd.isna(x) else f"{x:,.0f}"
        if "−" in name or "gain" in name:
            return lambda x: "–" if pd.isna(x) else f"{x:+.3f}"
        return lambda x: "–" if pd.isna(x) else (f"{x:.3f}" if isinstance(x, float) else str(x))

    styler = table.style.format({c: fmt(c) for c in table.columns})
    if caption:
        styler = styler.set_caption(caption)
    return styler.set_table_styles([
        {"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.85em;"},
        {"selector": "td", "props": "font-size: 0.85em; padding: 1px 6px;"},
        {"selector": "th", "props": "font-size: 0.85em; padding: 1px 6px;"}])


def _entries(record: dict) -> list[tuple[str, dict]]:
    from .records import design_entries

    return design_entries(record or {})


def calibration_table(record: dict) -> pd.DataFrame:
    """``benchmarks/calibration.json`` (``python benchmarks/calibrate.py``): one row per setting
    measured on the first scenes, classifiers (val mAP, CAM mIoU at the best cut) and fully
    supervised oracles (held-out mIoU) alike, with the scenes each ran on and its seconds."""
    backbones = {"efficientnet_lite0": "Lite0", "small": "small CNN"}
    rows = []
    for _, v in _entries(record):
        ds, p = v.get("dataset", {}), v.get("params", {})
        if "val_miou" in v:
            head = {"largefov": "LargeFOV head"}.get(p.get("head"), "1x1 head")
            setting = f"oracle, {head}"
        else:
            optimizer = {"adamw": "AdamW"}.get(p.get("optimizer", "sgd"), "SGD")
            setting = f"classifier, {backbones.get(p.get('backbone'), p.get('backbone'))}, {optimizer}"
        rows.append({"setting": setting,
                     "scenes": f"{len(ds.get('classes', []))} classes, {ds.get('n_train', 0):,}",
                     "epochs": p.get("epochs"), "val mAP": v.get("val_map"),
                     "CAM mIoU": v.get("seed_miou"), "oracle mIoU": v.get("val_miou"),
                     "train (s)": v.get("train_seconds")})
    return pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()


def book_recipe_tables(record: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``benchmarks/book_recipe.json`` (``python benchmarks/book_recipe.py``): (the classifier
    settings tried for the time budget, in the order tried: val mAP, CAM mIoU, wall and CPU
    seconds and the machine's load around the run; the segmenter recipes, each a whole run of
    the default profile: the four segmenters' held-out mIoU and the oracle's seconds)."""
    rows = []
    for name, v in _entries(record):
        load = v.get("load_average") or {}
        rows.append({"setting": name, "val mAP": v.get("val_map"), "CAM mIoU": v.get("seed_miou"),
                     "wall (s)": v.get("wall_s"), "CPU (s)": v.get("cpu_s"),
                     "load": f"{load.get('start', '–')}–{load.get('end', '–')}"})
    classifiers = pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()
    rows = []
    for name, v in _entries((record or {}).get("_segmenters") or {}):
        row = {"recipe": name}
        for stage, column in (("ae_segmenter", "AE"), ("psl", "PSL"), ("psl_plus_plus", "PSL++"),
                              ("oracle", "oracle")):
            row[column] = (v.get(stage) or {}).get("val_miou")
        row["oracle (s)"] = (v.get("oracle") or {}).get("train_s")
        rows.append(row)
    segmenters = pd.DataFrame(rows).set_index("recipe") if rows else pd.DataFrame()
    return classifiers, segmenters


def segmenter_study_table(record: dict) -> pd.DataFrame:
    """``benchmarks/segmenter_recipe.json`` as the appendix shows it: one row per oracle recipe
    tried, in order, named by what it changed (head, epochs, learning rate, augmentation and
    weight decay, thread count); held-out mIoU with PSL's test-time drop below 0.5, with
    nothing dropped and with the CRF, its training seconds and the code revision that ran it."""
    rows = []
    for _, v in _entries(record):
        parts = ["stride-4 decoder" if v.get("decoder") == "stride4" else "LargeFOV", f"{v.get('epochs')} ep"]
        if v.get("lr") not in (None, 0.001):
            parts.append(f"lr {v['lr']:g}")
        if v.get("scale_range") and list(v["scale_range"]) != [0.9, 1.1]:
            parts.append("scale {:g}-{:g}".format(*v["scale_range"]))
        if v.get("weight_decay") not in (None, 0.0001):
            parts.append(f"wd {v['weight_decay']:g}")
        if v.get("threads") == 1:
            parts.append("1 thread")
        rows.append({"recipe": ", ".join(parts), "drop < 0.5": v.get("val_miou_drop05"),
                     "nothing dropped": v.get("val_miou_nodrop"), "+ CRF": v.get("val_miou_crf"),
                     "train (s)": v.get("train_seconds"), "revision": (v.get("git_revision") or "–")[:7]})
    return pd.DataFrame(rows).set_index("recipe") if rows else pd.DataFrame()


# The scene generator's defaults, for the fields the oldest design records did not write.
_SCENE_DEFAULTS = {"part_size": [20, 26], "item_size": [48, 72], "max_items": 3, "class_hue": 1.0}


def scene_label(scenes: dict | None) -> str:
    """A short name of a design's scenes, from its recorded fields: the discs' size, the items'
    size where it is not the default, at most N items where not 3, and the items' hues."""
    s = {k: v for k, v in (scenes or {}).items() if v is not None}
    s = {**_SCENE_DEFAULTS, **s}
    part = list(s["part_size"])
    parts = ["no discs" if part == [0, 0] else "discs {}-{} px".format(*part)]
    if list(s["item_size"]) != _SCENE_DEFAULTS["item_size"]:
        parts.append("items {}-{} px".format(*s["item_size"]))
    if s["max_items"] != _SCENE_DEFAULTS["max_items"]:
        parts.append(f"≤ {s['max_items']} items")
    hue = float(s["class_hue"])
    parts.append("any hue" if hue >= 1 else f"hue band {hue:g}")
    return ", ".join(parts)


def recipe_label(recipe: dict | None) -> str:
    """A short name of an erasing recipe: what it changes from the paper's (mining threshold,
    fill, warm start, clean share, epochs, grown holes, decoys, background prior)."""
    paper, r = paper_erasing(), {**paper_erasing(), **(recipe or {})}
    parts = []
    if r["mine_prior"] != paper["mine_prior"]:
        parts.append(f"prior {r['mine_prior']:g}")
    if r["mine_threshold"] != paper["mine_threshold"]:
        parts.append(f"mining at {r['mine_threshold']:g}")
    if r["erase_value"] != paper["erase_value"]:
        parts.append(f"{r['erase_value']} fill")
    if r["init"] != paper["init"]:
        parts.append("warm start")
    if r["clean_fraction"] != paper["clean_fraction"]:
        parts.append(f"{100 * r['clean_fraction']:.0f}% clean")
    if r["round_epochs"] != paper["round_epochs"]:
        parts.append(f"{r['round_epochs']}-epoch rounds")
    if r["erase_margin"] != paper["erase_margin"]:
        parts.append(f"holes grown {r['erase_margin']} px")
    if r["decoys"] != paper["decoys"]:
        parts.append(f"{r['decoys']} decoy hole{'s' if r['decoys'] > 1 else ''}")
    return ", ".join(parts) or "paper's recipe"


def measured_on(v: dict) -> str:
    """Which machine and code measured a design record: the CPU model (where recorded) and
    whether the training's float rounding was the current one (:data:`NUMERICS`)."""
    cpu = v.get("cpu") or "CPU not recorded"
    return cpu + ("" if (v.get("numerics") or 1) >= NUMERICS else ", older float rounding")


def erasing_designs(record: dict) -> pd.DataFrame:
    """Every design of ``benchmarks/erasing_design.json`` (``python benchmarks/erasing_design.py``),
    one row per recorded run, in the order recorded: its scenes and recipe (short names from the
    recorded fields), training seed, rounds, the CAM's mIoU at its best cut, what round 1 takes
    of the discs and bodies, round 2's precision, the best pseudo masks against the CAM, and
    which machine and code measured it."""
    rows = []
    for key, v in _entries(record):
        r = v.get("rounds") or []
        cov = ((r[0].get("part_coverage") or {}).get("this_round") or {}) if r else {}
        rows.append({"scenes": scene_label(v.get("scenes")), "recipe": recipe_label(v.get("recipe")),
                     "seed": v.get("seed", 0), "rounds": len(r),
                     "class_hue": float({**_SCENE_DEFAULTS, **{k: x for k, x in (v.get("scenes") or {}).items()
                                                              if x is not None}}["class_hue"]),
                     "recipe_fields": {**paper_erasing(), **(v.get("recipe") or {})},
                     "CAM mIoU": (v.get("cam") or {}).get("seed_miou"),
                     "round 1 disc": cov.get("disc"), "round 1 body": cov.get("body"),
                     "round-2 precision": r[1].get("region_precision") if len(r) > 1 else None,
                     "best AE − CAM": v.get("ae_best_minus_cam"), "measured on": measured_on(v)})
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def _seeds(values) -> str:
    return ", ".join(str(s) for s in sorted(set(values)))


def erasing_scene_table(designs: pd.DataFrame) -> pd.DataFrame:
    """The scene designs, each run with the paper's erasing recipe: per scenes (means over the
    runs recorded), the CAM's mIoU, what round 1 takes of discs and bodies, round 2's precision
    and the best pseudo masks against the CAM, with the training seeds and the number of runs."""
    if designs.empty:
        return pd.DataFrame()
    paper = designs[designs["recipe"] == recipe_label({})]
    if paper.empty:
        return pd.DataFrame()
    columns = ["CAM mIoU", "round 1 disc", "round 1 body", "round-2 precision", "best AE − CAM"]
    grouped = paper.groupby("scenes", sort=False)
    table = grouped[columns].mean()
    table.insert(0, "runs", grouped.size())
    table["seeds"] = grouped["seed"].agg(_seeds)
    return table[["seeds", "runs", "CAM mIoU", "round 1 body", "round-2 precision", "best AE − CAM"]]


def erasing_recipe_table(designs: pd.DataFrame, class_hue: float, recipes: list[dict] | None = None) -> pd.DataFrame:
    """The erasing recipes measured on the scenes of ``class_hue`` (discs of the default size),
    one row per recipe with every training seed recorded: round 2's precision and the best
    pseudo masks against the CAM, as means over the seeds and for the worst seed. ``recipes``
    (dicts of :data:`ERASING_RECIPE` parameters that depart from the paper's) keeps those
    recipes only, in that order."""
    if designs.empty:
        return pd.DataFrame()
    rows = designs[(designs["class_hue"] == float(class_hue))
                   & (designs["scenes"] == scene_label({"class_hue": class_hue}))]
    if recipes is not None:
        wanted = [recipe_label(r) for r in recipes]
        rows = rows[rows["recipe"].isin(wanted)]
    if rows.empty:
        return pd.DataFrame()
    grouped = rows.groupby("recipe", sort=False)
    table = pd.DataFrame({"seeds": grouped["seed"].agg(_seeds),
                          "round-2 precision": grouped["round-2 precision"].mean(),
                          "AE − CAM, mean": grouped["best AE − CAM"].mean(),
                          "AE − CAM, worst seed": grouped["best AE − CAM"].min()})
    if recipes is not None:
        table = table.reindex([w for w in dict.fromkeys(wanted) if w in table.index])
    else:
        table = table.sort_values("round-2 precision")
    table.index.name = "recipe"
    return table


def psl_design_table(record: dict) -> pd.DataFrame:
    """``benchmarks/psl_design.json`` (``python benchmarks/psl_design.py``): one row per design
    of PSL's online labels (and its variants: Ŝ on every pixel, a warm-up on S alone), the
    held-out mIoU of the AE segmenter, PSL and PSL++ as means over the training seeds recorded."""
    rows = []
    for _, v in _entries(record):
        stage = v.get("stage", "")
        kind = ("PSL++" if stage.startswith("psl_plus_plus") else "PSL" if stage.startswith("psl")
                else "AE segmenter" if stage.startswith("ae_segmenter") else None)
        if kind is None:
            continue
        variant = ([f"Ŝ after a {v['online_warmup']}-epoch warm-up"] if v.get("online_warmup") else []) \
            + (["Ŝ on every pixel"] if v.get("online_pixels") == "all" else [])
        if variant:   # a variant of PSL's online labels: named by what it changes and the masks it learns from
            masks = "paper's" if str(v.get("profile", "")).startswith("paper") else "book's"
            design = f"PSL, {', '.join(variant)} ({masks} masks)"
        else:
            design = v.get("design", "")
        rows.append({"design": design, "kind": kind,
                     "seed": v.get("seed", 0), "miou": v.get("miou")})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="design", columns="kind", values="miou", aggfunc="mean", sort=False)
    table = table.reindex(columns=[c for c in ("AE segmenter", "PSL", "PSL++") if c in table.columns])
    table.insert(0, "seeds", frame.groupby("design", sort=False)["seed"].agg(_seeds))
    table.columns.name = None
    return table


def body_recognition_table(record: dict) -> pd.DataFrame:
    """``benchmarks/body_recognition.json`` (``python benchmarks/body_recognition.py``): per
    erasing round, each classifier's val mAP on clean held-out scenes and on the same scenes
    with their discs erased, one pair of columns per recorded run (its training seed)."""
    columns = {}
    for key, v in _entries(record):
        who = f"seed {v['seed']}" if "seed" in v else key
        for r in v.get("rounds") or []:
            columns.setdefault(f"clean, {who}", {})[r["round"]] = r.get("val_map")
            columns.setdefault(f"discs erased, {who}", {})[r["round"]] = r.get("val_map_discs_erased")
    if not columns:
        return pd.DataFrame()
    table = pd.DataFrame(columns)
    table.index.name = "round"
    return table


def book_time_runs(record: dict) -> pd.DataFrame:
    """``benchmarks/book_time.json`` (``python benchmarks/book_time.py``, ``make book-time``):
    one row per timed build from empty, in the order run: its profile, date, code revision,
    cores, wall and CPU seconds, peak memory and the reference workload's seconds before it."""
    rows = [{"profile": v.get("profile"), "date": (v.get("finished_at") or "")[:10],
             "revision": (v.get("git_revision") or "–")[:7], "cores": v.get("cores"),
             "wall (s)": v.get("wall_s"), "CPU (s)": v.get("cpu_s"), "memory (MiB)": v.get("peak_rss_mib"),
             "reference (s)": (v.get("reference_s") or {}).get("before")}
            for v in (record or {}).get("runs") or [] if isinstance(v, dict)]
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def latest_book_times(runs: pd.DataFrame) -> pd.DataFrame:
    """The last timed build of each profile (:func:`book_time_runs`), one row a profile."""
    if runs.empty:
        return pd.DataFrame()
    last = runs.groupby("profile", sort=False).tail(1).set_index("profile")
    return last[["date", "revision", "cores", "wall (s)", "CPU (s)", "memory (MiB)"]]


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
                   "psl", "psl_plus_plus", "oracle", "cam_variants", "cam_variant_segmenter")


def _m(root: Path, profile: str, stage: str) -> dict | None:
    if stage not in ABLATION_STAGES and not stage.startswith("erasing/round"):
        raise ValueError(f"the ablation table reads stage {stage!r}: list it in ABLATION_STAGES")
    from ..engine.artifacts import load_metrics

    return load_metrics(Path(root) / profile / stage, profile)   # another profile's folder: an error


def _best_variant(record: dict | None) -> tuple[str, float | None, bool] | None:
    """The CAM-variants stage's method whose seeds it wrote (``masks_method``), else its best-scored
    method: (label, best seed mIoU, whether every training image was scored); None without a
    later method scored."""
    if not record:
        return None
    m = record["metrics"]
    methods = {k: v for k, v in (m.get("methods") or {}).items()
               if k not in ("cam", "cam_stage") and isinstance(v, dict) and v.get("best_miou") is not None}
    chosen = (m.get("masks") or {}).get("method")
    if chosen not in methods:
        if not methods:
            return None
        chosen = max(methods, key=lambda k: methods[k]["best_miou"])
    return methods[chosen].get("label", chosen), methods[chosen]["best_miou"], m.get("images") == m.get("of_images")


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
        add("CAM + random walk, PSA's background, our alphas", cut["metrics"]["miou_after"], None,
            cut["wall_time_s"], "")
    variants = _m(root, profile, "cam_variants")
    best = _best_variant(variants)
    if best and best[2]:   # only a score over every training image compares with the CAM's
        add(f"best later CAM: {best[0]}", best[1], None, None, "")
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
    vs = _m(root, profile, "cam_variant_segmenter")
    if vs:
        add(f"segmenter on {best[0] if best else 'a later CAM'}'s seeds, no PSL", None,
            vs["metrics"]["eval"].get("miou"), vs["wall_time_s"], "")
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
    profile ran), ``first`` on top: its recipe in a few words (erase value, mining threshold, the
    start of rounds 2+ and the share of images shown clean where they depart from the paper), the
    number of rounds, the last round's val mAP on clean images, the pseudo-mask mIoU after 1 and
    after all merged rounds. Few, short columns: the table fits the book's column."""
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
        recipe = {p: v for p, v in rounds[0]["params"].items() if p in ERASING_RECIPE}
        rows.append({"merge stage": str(path.parent.relative_to(root)), "recipe": recipe_label(recipe), "rounds": k,
                     "last val mAP": last.get("val_map"), "mIoU, 1 round": per[0].get("miou"),
                     "mIoU, all": per[k - 1].get("miou") if len(per) >= k else None})
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


def short_revision(revision) -> str:
    """A git revision as a page shows it: 7 hex digits, and ``+`` where the checkout had
    uncommitted changes (recorded as ``+dirty``); ``–`` where none was recorded."""
    if not revision:
        return "–"
    revision = str(revision)
    return revision[:7] + ("+" if revision.endswith("+dirty") else "")


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


AFFINITY_STAGES = {"affinity_cam": "CAM", "affinity_ae": "AE pseudo masks",
                   "affinity_cam_cut": "CAM, PSA's background, our alphas"}


def affinity_table(artifacts_root: str | Path, profile: str, data_root: str | None = None) -> pd.DataFrame:
    """One row per AffinityNet run on these scenes: this profile's, else the variants profile's
    (column 'measured in'): its seeds, walk steps, seed mIoU before and after the walk."""
    rows = []
    for stage, what in AFFINITY_STAGES.items():
        rec, source = stage_metrics(artifacts_root, profile, stage, data_root)
        if rec is None or "miou_after" not in rec["metrics"]:
            continue
        m = rec["metrics"]
        background = m["walk"].get("background", "power")
        label = what if m.get("seed_kind") != "cams" or stage == "affinity_cam_cut" else \
            f"{what}, {'the cut after the walk' if background == 'cut' else 'PSA background'}"
        rows.append({"run": stage, "seeds": label, "walk steps": m["walk"]["steps"],
                     "mIoU before": m["miou_before"], "mIoU after": m["miou_after"],
                     "change": m["miou_after"] - m["miou_before"],
                     "uncertain pixels": m["labels"].get("uncertain_fraction"), "measured in": source})
        if "power_walk" in m:   # PSA's background on the same walk, scored beside it
            rows.append({**rows[-1], "run": f"{stage} (PSA background)", "seeds": f"{what}, PSA background",
                         "mIoU after": m["power_walk"]["miou"],
                         "change": m["power_walk"]["miou"] - m["miou_before"]})
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


def frozen_stages_table(record: dict) -> pd.DataFrame:
    """benchmarks/frozen_stages.json as a table: one row per number of frozen stages, per network
    the seconds of a training step and, in brackets, their share of the step with nothing frozen."""
    rows = record.get("rows") or []
    if not rows:
        return pd.DataFrame()
    nets = [k for k in rows[0] if k != "frozen_stages" and not k.endswith("parameters")]
    base = rows[0]
    return pd.DataFrame([{"frozen stages": r["frozen_stages"],
                          **{n: f"{r[n]:.3f} s ({r[n] / base[n]:.0%})" for n in nets}} for r in rows])


ALLOCATOR_WAYS = {"glibc": "glibc as it comes", "kept": "freed memory kept", "tcmalloc": "tcmalloc"}
ALLOCATOR_WORKLOADS = {"reference": "reference workload", "cam stage": "CAM stage", "training": "its training",
                       "CAM inference": "its CAM inference"}


def allocator_run(record: dict | None) -> dict | None:
    """The latest run of benchmarks/allocator.json that timed every way of
    :data:`ALLOCATOR_WAYS` (None without one)."""
    runs = [r for r in (record or {}).get("runs") or [] if "over_glibc" in r]
    return runs[-1] if runs else None


def allocator_table(record: dict | None) -> pd.DataFrame:
    """:func:`allocator_run` as a table: one row per workload timed (the reference workload, the
    CAM stage and its two parts), the median seconds with glibc's malloc as it comes, and each
    other way as a share of them. Empty without such a run."""
    run = allocator_run(record)
    if run is None:
        return pd.DataFrame()
    rows = []
    for name, shown in ALLOCATOR_WORKLOADS.items():
        by_way = run["seconds"].get(name)
        if not by_way:
            continue
        base = statistics.median(by_way["glibc"])
        row = {"workload": shown, f"{ALLOCATOR_WAYS['glibc']} (s)": round(base, 1)}
        for way in list(ALLOCATOR_WAYS)[1:]:
            row[ALLOCATOR_WAYS[way]] = f"{statistics.median(by_way[way]) / base:.0%}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("workload")


def cpu_amp_table(record: dict | None) -> pd.DataFrame:
    """benchmarks/cpu_amp.json as a table: one row per workload timed, the median seconds in
    float32 and the bfloat16 time as a share of them. Empty without a record."""
    rows = [{"workload": r["workload"], "float32 (s)": round(r["float32_s"], 3),
             "bfloat16": f"{r['bfloat16_s'] / r['float32_s']:.0%}"} for r in (record or {}).get("rows") or []]
    return pd.DataFrame(rows).set_index("workload") if rows else pd.DataFrame()


def _nearest(values: list[float], target: float) -> int:
    return min(range(len(values)), key=lambda i: abs(values[i] - target))


def cam_variants_table(record: dict) -> pd.DataFrame:
    """The CAM-variants stage's seeds, one row per method in the stage's order: mIoU on the scored
    training images at the method's best background threshold ``t``, the share of disc and of
    body pixels the seed gives the right class there (None without part maps), and the seconds
    per image the method took in the run (from the record's ``timings_s``)."""
    if not record:
        return pd.DataFrame()
    m = record["metrics"]
    rows = []
    for key in m["order"]:
        r = m["methods"][key]
        cov = r.get("part_coverage")
        i = cov["thresholds"].index(r["best_threshold"]) if cov else None
        rows.append({"method": r["label"], "mIoU": r["best_miou"], "t": r["best_threshold"],
                     "disc": cov["disc"][i] if cov else None, "body": cov["body"][i] if cov else None,
                     "s / image": _seconds_per_image(record, key)})
    return pd.DataFrame(rows).set_index("method")


def cam_variants_seeds_table(record: dict) -> pd.DataFrame:
    """The CAM-variants comparison over training seeds (``benchmarks/cam_variants_seeds.json``):
    one row per method, then the erasing rounds; per row the mean ± sd over the seeds of the seed
    mIoU and of the share of body pixels found at the method's best cut, and of the share of body
    pixels above the erasing threshold (what a first erasing round would mine; for the rounds,
    what they mined). An empty table without records."""
    runs = (record or {}).get("runs") or []
    if not runs:
        return pd.DataFrame()

    def spread(values) -> str:
        values = [v for v in values if v is not None]
        if len(values) < 2:
            return f"{values[0]:.3f}" if values else "–"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    cut = runs[0].get("mining_threshold")
    names = runs[0].get("order") or list(runs[0]["seeds"]) + [k for k in runs[0]["mining"] if k not in runs[0]["seeds"]]
    rows = {}
    for name in names:
        seeds = [r["seeds"].get(name) or {} for r in runs]
        mined = [r["mining"].get(name) or {} for r in runs]
        rows[name] = {"seed mIoU": spread([s.get("mIoU") for s in seeds]),
                      "body at its cut": spread([s.get("body") for s in seeds]),
                      f"body above {cut:.2f}": spread([m.get("body") for m in mined])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"over {len(runs)} seeds")


def _seconds_per_image(record: dict, key: str) -> float | None:
    """A CAM-variants method's seconds per image in its run; for the CAM stage's saved maps, what
    inferring them cost that stage per image."""
    m = record["metrics"]
    if key == "cam_stage":
        return m.get("cam_stage_seconds_per_image")
    seconds = record.get("timings_s", {}).get(key)
    return seconds / max(m["methods"][key]["images"], 1) if seconds is not None else None


def cam_variants_mining_table(record: dict, artifacts_root: str | Path, profile: str,
                              data_root: str | None = None, rounds: int = 3) -> tuple[pd.DataFrame, float]:
    """What each method would mine as an erasing round's first region, beside what the erasing
    rounds mined: the share of disc and of body pixels given the right class above the erasing
    stage's mining threshold (the sweep's threshold nearest to it), per method on the stage's
    images, and for the erasing rounds (this profile's, else the variants profile's) round 1 alone
    and rounds 1..k together on every training image. Column ``s / image``: a method's seconds per
    image; for the rounds, their wall time (training included) per training image.
    Returns the table and the threshold used."""
    if not record:
        return pd.DataFrame(), float("nan")
    from .records import stage_metrics

    m = record["metrics"]
    first, _ = stage_metrics(artifacts_root, profile, "erasing/round1", data_root)
    wanted = (first or {}).get("params", {}).get("mine_threshold", 0.5)
    rows = []
    cut = float("nan")
    for key in m["order"]:
        r = m["methods"][key]
        cov = r.get("part_coverage")
        if not cov:
            continue
        i = _nearest(cov["thresholds"], wanted)
        cut = cov["thresholds"][i]
        rows.append({"seeds": r["label"], "disc": cov["disc"][i], "body": cov["body"][i],
                     "images": r["images"], "s / image": _seconds_per_image(record, key)})
    total = 0.0
    for k in range(1, rounds + 1):
        rec, _ = stage_metrics(artifacts_root, profile, f"erasing/round{k}", data_root)
        cov = ((rec or {}).get("metrics", {}).get("part_coverage") or {}).get("so_far")
        if not cov:
            break
        total += rec.get("wall_time_s") or 0.0
        count = m.get("of_images") or None
        rows.append({"seeds": "erasing, round 1" if k == 1 else f"erasing, rounds 1–{k}", "disc": cov["disc"],
                     "body": cov["body"], "images": count, "s / image": total / count if count else None})
    return (pd.DataFrame(rows).set_index("seeds") if rows else pd.DataFrame()), cut


CAM_VARIANT_SEGMENTERS = {"cam_variant_segmenter": "cam_variants", "ae_segmenter": "pseudo_masks"}


def cam_variant_segmenter_table(artifacts_root: str | Path, profile: str,
                                data_root: str | None = None) -> tuple[pd.DataFrame, str | None]:
    """The segmenter trained on the best CAM variant's seeds beside the one trained on the erasing
    masks (both plain segmenters, no PSL), this profile's runs, else the variants profile's:
    rows 'seeds' (what the segmenter learned from), columns the seeds' mIoU on the training split
    and the segmenter's held-out mIoU. ``(table, profile it came from)``; empty without the run."""
    from .records import stage_metrics

    seg, source = stage_metrics(artifacts_root, profile, "cam_variant_segmenter", data_root)
    if seg is None:
        return pd.DataFrame(), None
    rows = []
    for stage, seeds_stage in CAM_VARIANT_SEGMENTERS.items():
        rec, _ = stage_metrics(artifacts_root, source, stage, data_root, fallback=None)
        seeds, _ = stage_metrics(artifacts_root, source, seeds_stage, data_root, fallback=None)
        if rec is None or seeds is None:
            continue
        sm = seeds["metrics"]
        if stage == "cam_variant_segmenter":
            masks = sm.get("masks") or {}
            what = f"{masks.get('label', '?')} seeds (t = {masks.get('threshold', float('nan')):.2f})"
            miou = (sm["methods"].get(masks.get("method")) or {}).get("best_miou")
        else:
            what, miou = f"erasing masks ({sm.get('rounds')} rounds)", sm.get("miou")
        rows.append({"seeds": what, "seed mIoU": miou, "segmenter mIoU": rec["metrics"]["eval"].get("miou")})
    return (pd.DataFrame(rows).set_index("seeds") if rows else pd.DataFrame()), source


def cam_variant_segmenter_seeds_table(record: dict) -> pd.DataFrame:
    """Per training seed of the CAM-variants seeds record that has the segmenter comparison: the
    method whose seeds trained the plain segmenter, that segmenter's held-out mIoU, the AE
    segmenter's of the same seed, and the difference; a last row with the means. Empty without."""
    rows = {}
    for r in (record or {}).get("runs") or []:
        seg = r.get("segmenter")
        if seg:
            rows[f"seed {r['seed']}"] = {"variant": seg["method"], "on its seeds": seg["variant segmenter"],
                                         "on the AE masks": seg["AE segmenter"],
                                         "AE − variant": seg["AE segmenter"] - seg["variant segmenter"]}
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(rows, orient="index")
    if len(table) > 1:
        table.loc["mean"] = ["", *table[["on its seeds", "on the AE masks", "AE − variant"]].mean()]
    return table.rename_axis("training seed")


CAM_VARIANTS_FORMAT = {"on its seeds": "{:.3f}", "on the AE masks": "{:.3f}", "AE − variant": "{:+.3f}",
                       "seed mIoU": "{:.3f}", "segmenter mIoU": "{:.3f}", "mIoU": "{:.3f}", "t": "{:.2f}", "disc": "{:.0%}", "body": "{:.0%}",
                       "s / image": "{:.3f}", "images": "{:,.0f}"}
