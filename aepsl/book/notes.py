"""The sentences pages write from saved numbers: what a drop or a CRF changed, where a number came
from, what a variant run would add, and the "Try it" box that ends a chapter."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .records import VARIANTS_COMMAND, VARIANTS_PROFILE


def drop_note(cost: pd.Series, threshold: float) -> str:
    """A sentence on PSL's test-time drop at ``threshold``: ``cost`` is each segmenter stage's
    mIoU with nothing dropped minus its mIoU with the drop (> 0: the drop loses). Changes that
    round to 0.000 count as none."""
    hurt, helped = cost[cost >= 0.0005], cost[cost <= -0.0005]
    same = [s for s in cost.index if s not in hurt.index and s not in helped.index]
    note = f" Dropping classes below {threshold:g} "
    if not len(hurt) and not len(helped):
        return note + "changes no segmenter's mIoU by 0.001 or more."
    if len(hurt):
        note += ("costs " + ", ".join(f"{s} {c:.3f}" for s, c in hurt.items())
                 + " mIoU against dropping nothing (the classification branch misses classes the "
                 "segmentation head finds)")
    if len(helped):
        note += ("; it " if len(hurt) else "") + "gains " + ", ".join(
            f"{s} {-c:.3f}" for s, c in helped.items()) + " mIoU"
    if same:
        note += " and leaves " + ", ".join(same) + (" as it was" if len(same) == 1 else " as they were")
    return note + "."


def crf_turn_note(psl_eval: dict, plus_eval: dict) -> str:
    """A sentence for the PSL++ page when the dense CRF at test time reverses PSL and PSL++
    (their ``eval`` records: ``miou`` and ``crf_miou``); '' when it does not or was not run."""
    a, b = psl_eval.get("crf_miou"), plus_eval.get("crf_miou")
    if a is None or b is None or b >= a or plus_eval["miou"] <= psl_eval["miou"]:
        return ""
    return (f"\n\nWith the CRF at test time the order turns: PSL + CRF scores {a:.3f}, PSL++ + CRF "
            f"{b:.3f}. PSL++ learned from CRF-refined labels, so the CRF has less left to fix on "
            f"its predictions (+{b - plus_eval['miou']:.3f}, against +{a - psl_eval['miou']:.3f} "
            "on PSL's): what PSL++ gains over PSL is mostly what the CRF gives PSL anyway. "
            "Without a CRF at test time, which is cheaper, PSL++ is the better segmenter.")


def seed_runs_note(artifacts_root: str | Path, profile: str) -> str:
    """A sentence on which other training seeds of ``profile`` have been run to the end: the runs
    of ``python -m aepsl --profile <profile> --seed K`` found by their records (each profile
    folder's ``profile.json``: its seed and the profile it is a seed of, see
    :func:`aepsl.engine.config.seed_runs`) with a finished ``psl_plus_plus`` stage."""
    from ..engine.artifacts import load_metrics
    from ..engine.config import seed_runs

    done = [k for k, folder in seed_runs(artifacts_root, profile).items()
            if load_metrics(folder / "psl_plus_plus") is not None]
    if not done:
        return " No other seed has been measured for the book."
    return (f" Measured: `benchmarks/results.md` has this profile's stages under training "
            f"seed{'s' if len(done) > 1 else ''} " + " and ".join(map(str, done))
            + ", one row per seed (" + ", ".join(f"`python -m aepsl --profile {profile} --seed {k}`" for k in done)
            + ").")


def source_note(source: str | None, profile: str) -> str:
    """How a page names where a number came from: '' for its own run, else the variant profile's."""
    if source is None or source == profile:
        return ""
    return f" (measured in the {source!r} profile's run, `artifacts/{source}/`, on the same scenes)"


def not_run_note(what: str) -> str:
    """The one sentence a page says about a variant that no run on its scenes has made."""
    return (f"{what} is a run of the {VARIANTS_PROFILE!r} profile, not yet made on these scenes: "
            f"`{VARIANTS_COMMAND}` computes it, and this page then quotes it.")


def try_it(parameter: str, change: str, command: str, expect: str) -> str:
    """The 'Try it' box at the end of a chapter, as MyST Markdown (the book renders Markdown
    outputs as MyST: ``nb_render_markdown_format``): one parameter, the exact command, what
    to expect."""
    return (f"````{{admonition}} Try it: {parameter}\n:class: tip\n{change}\n\n"
            f"```bash\n{command}\n```\n\n{expect}\n````")


def missing_record(name: str) -> str:
    """The one sentence a page says where a design record ``benchmarks/<name>.json`` is missing:
    which command writes it."""
    from .records import DESIGN_RECORDS

    command = DESIGN_RECORDS.get(name, f"python benchmarks/{name}.py")
    return f"`benchmarks/{name}.json` is not there: `{command}` writes it, and this page then shows it."


# ------------------------------------------------------------------ the decisions appendix
# Each function below reads one record under benchmarks/ (or a profile's metrics.json) and
# returns what the decisions page shows of it: a sentence, or a small table. A missing record or
# a record without the fields asked for gives None (a table) or the sentence naming the command
# that writes it (a note), never an error.

def read_record(path: str | Path) -> dict | None:
    """A JSON record, or None where the file is missing or not a JSON object."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def measured_note(record: dict | None) -> str:
    """Which CPU and code revision measured a record, and when ('' without a record)."""
    if not record:
        return ""
    when = str(record.get("finished_at") or "")[:10]
    return (f"Measured on {record.get('cpu') or 'an unrecorded CPU'}"
            f"{', ' + str(record['cores']) + ' cores' if record.get('cores') else ''}, code revision "
            f"{str(record.get('git_revision') or 'unrecorded')[:7]}{', ' + when if when else ''}.")


def missing_note(path: str | Path, command: str) -> str:
    """The one sentence an entry says where its record is missing (the path relative to the
    repository where it lies inside it)."""
    from .records import shown_path

    return f"No record yet: `{command}` writes `{shown_path(path)}`, and this entry then quotes it."


def _entries(record: dict | None) -> list[dict]:
    """The records of a benchmark file: the values of its object (keys starting with '_' are
    the file's own notes), or the items of a ``runs``/``designs`` list."""
    if not record:
        return []
    for key in ("runs", "designs", "records"):
        if isinstance(record.get(key), list):
            return [r for r in record[key] if isinstance(r, dict)]
    return [v for k, v in record.items() if not str(k).startswith("_") and isinstance(v, dict)]


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _seconds(x) -> str:
    return "–" if x is None else f"{round(x):,} s"


def latest_book_time(path: str | Path, profile: str = "default") -> dict | None:
    """The last timed `make book` of ``profile`` in benchmarks/book_time.json (by its
    ``finished_at``), or None."""
    runs = [r for r in _entries(read_record(path)) if r.get("profile") == profile and "wall_s" in r]
    return max(runs, key=lambda r: str(r.get("finished_at", ""))) if runs else None


def body_recognition_note(path: str | Path) -> str:
    """What the erasing rounds' classifiers recognise with the discs erased
    (benchmarks/body_recognition.json): round 1 relies on the disc, round 2 on the body."""
    rec = read_record(path)
    runs = _entries(rec)
    run = next((r for r in runs if r.get("profile") == "default"), runs[0] if runs else None)
    rounds = {r.get("round"): r for r in (run or {}).get("rounds", []) if isinstance(r, dict)}
    if 1 not in rounds or 2 not in rounds:
        return missing_note(path, "python benchmarks/body_recognition.py --profile default")
    one, two = rounds[1], rounds[2]
    return (f"Round 1's classifier scores a held-out mAP of {_f(one.get('val_map'))}, and "
            f"{_f(one.get('val_map_discs_erased'))} when the discs are erased: it relies on the disc. "
            f"Round 2's scores {_f(two.get('val_map_discs_erased'))} with the discs erased: it has "
            "learned the bodies, which is what erasing is meant to teach.")


def classes_table(path: str | Path) -> pd.DataFrame | None:
    """The classifier calibration runs (benchmarks/calibration.json), one row each: classes,
    backbone, held-out mAP and CAM seed mIoU; None without records."""
    rows = []
    for r in _entries(read_record(path)):
        if r.get("val_map") is None:
            continue
        p, d = r.get("params", {}), r.get("dataset", {})
        rows.append({"classes": len(d.get("classes", [])) or None,
                     "backbone": (f"Lite0, {p.get('backbone_depth', 'full')}" if p.get("backbone") == "efficientnet_lite0"
                                  else p.get("backbone", "?")),
                     "optimizer": p.get("optimizer", "sgd"), "val mAP": _f(r.get("val_map")),
                     "CAM mIoU": _f(r.get("seed_miou"))})
    if not rows:
        return None
    return pd.DataFrame(rows).sort_values(["classes", "val mAP"], ascending=[False, False]).reset_index(drop=True)


def cam_scales_note(path: str | Path) -> str:
    """Two-scale against three-scale CAM inference, same classifier recipe
    (benchmarks/book_recipe.json)."""
    runs = [r for r in _entries(read_record(path)) if "cam_scales" in r]
    two = [r for r in runs if len(r["cam_scales"]) == 2]
    three = [r for r in runs if len(r["cam_scales"]) == 3 and r.get("epochs") == (two[0].get("epochs") if two else None)
             and r.get("lr") == two[0].get("lr")]
    if not two or not three:
        return missing_note(path, "python benchmarks/book_recipe.py")
    a, b = two[0], three[0]
    return (f"With the same classifier ({a.get('epochs')} epochs, lr {a.get('lr')}), scales (1, 0.5) give CAM "
            f"seeds of mIoU {_f(a.get('seed_miou'))} and (1, 0.5, 1.5) give {_f(b.get('seed_miou'))}; "
            f"the CAM inference took {_seconds(a.get('timings_s', {}).get('cams'))} and "
            f"{_seconds(b.get('timings_s', {}).get('cams'))}.")


def round1_reuse_note(path: str | Path, profile: str = "default") -> str:
    """The wall time of the CAM stage against erasing round 1, which reuses its classifier, in the
    last timed book (benchmarks/book_time.json)."""
    run = latest_book_time(path, profile)
    stages = (run or {}).get("stages", {})
    if "cam" not in stages or "erasing/round1" not in stages:
        return missing_note(path, f"make book-time PROFILE={profile}")
    return (f"In the last timed book the CAM stage took {_seconds(stages['cam'].get('wall_s'))}; erasing "
            f"round 1, which reuses its classifier and CAMs, took {_seconds(stages['erasing/round1'].get('wall_s'))}.")


def _recipe_name(prior, threshold) -> str:
    if not prior and threshold == 0.5:
        return "the paper's: at 0.5, no prior"
    return f"at {threshold:g}" + (f", prior {prior:g}" if prior else "")


def erasing_recipe_table(path: str | Path, class_hue: float = 0.34, book=(0.2, 0.55)) -> pd.DataFrame | None:
    """The erasing recipes that differ from the paper's only in ``mine_prior`` and
    ``mine_threshold``, on the scenes with class hues ``class_hue``
    (benchmarks/erasing_design.json): one row per recipe with its seeds' round-2 region precision
    and best AE − CAM, seeds in order (0 / 1 / ...); the book's recipe is marked. None without
    records."""
    paper = {"erase_value": "mean", "init": "fresh", "clean_fraction": 0.0, "round_epochs": 0,
             "erase_margin": 0, "decoys": 0}
    newest = max([(r.get("numerics") or 1) for r in _entries(read_record(path))] or [1])
    groups: dict = {}
    for r in _entries(read_record(path)):
        recipe, scenes = r.get("recipe") or {}, r.get("scenes") or {}
        if (not recipe or scenes.get("class_hue") != class_hue or (r.get("numerics") or 1) != newest
                or any(recipe.get(k, v) != v for k, v in paper.items())):
            continue
        rounds = {x.get("round"): x for x in r.get("rounds", []) if isinstance(x, dict)}
        key = (recipe.get("mine_prior", 0.0), recipe.get("mine_threshold", 0.5))
        groups.setdefault(key, {})[r.get("seed", 0)] = (rounds.get(2, {}).get("region_precision"),
                                                         r.get("ae_best_minus_cam"))
    if not groups:
        return None
    rows = []
    for (prior, threshold), seeds in sorted(groups.items()):
        order = sorted(seeds)
        name = _recipe_name(prior, threshold) + (" (book)" if (prior, threshold) == tuple(book) else "")
        rows.append({"recipe": name,
                     "round-2 precision": " / ".join(_f(seeds[s][0]) for s in order),
                     "AE − CAM": " / ".join(("–" if seeds[s][1] is None else f"{seeds[s][1]:+.3f}") for s in order)})
    return pd.DataFrame(rows)


def segmenter_recipe_table(path: str | Path) -> pd.DataFrame | None:
    """The oracle runs that chose the segmenter recipe (benchmarks/segmenter_recipe.json): the
    setting, its threads and the held-out mIoU with PSL's test-time drop at 0.5 and with nothing
    dropped. None without records."""
    rows = []
    for name, r in (read_record(path) or {}).items():
        if name.startswith("_") or not isinstance(r, dict) or "val_miou_nodrop" not in r:
            continue
        parts = [p for p in name.split("/") if p != "1 thread"]
        words = {"largefov": "LargeFOV", "stride4": "decoder", "e5": "5 ep.", "e12": "12 ep.", "e16": "16 ep.",
                 "lr3e-4": "lr 3e-4", "scale0.7-1.3": "scale 0.7-1.3", "wd0.01": "wd 0.01"}
        rows.append({"setting": ", ".join(words.get(p, p) for p in parts),
                     "threads": r.get("threads"), "drop at 0.5": _f(r.get("val_miou_drop05")),
                     "nothing dropped": _f(r.get("val_miou_nodrop")), "_order": r.get("order", 0)})
    if not rows:
        return None
    return pd.DataFrame(rows).sort_values("_order").drop(columns="_order").reset_index(drop=True)


def oracle_drop_note(path: str | Path) -> str:
    """What PSL's test-time drop at 0.5 (whole-image confidence) cost the oracle runs of
    benchmarks/segmenter_recipe.json: the share of true classes dropped and the mIoU lost."""
    runs = [r for r in _entries(read_record(path)) if "val_miou_nodrop" in r and "val_miou_drop05" in r]
    if not runs:
        return missing_note(path, "python benchmarks/segmenter_recipe.py")
    share = [r["true_classes_dropped_05"] for r in runs if "true_classes_dropped_05" in r]
    cost = [r["val_miou_nodrop"] - r["val_miou_drop05"] for r in runs]
    out = f"On the {len(runs)} oracle runs of the segmenter study, the drop cost {min(cost):.3f} to {max(cost):.3f} mIoU"
    if share:
        out += f" and removed {min(share):.0%} to {max(share):.0%} of the classes the held-out scenes contain"
    return out + " (the confidence then read on the whole scene)."


def _psl_row(r: dict) -> str | None:
    """The row of :func:`psl_design_table` a PSL design record belongs to, or None."""
    stage, design = str(r.get("stage", "")), str(r.get("design", ""))
    if stage == "ae_segmenter":
        return "AE segmenter (no Ŝ)"
    if not stage.startswith("psl"):
        return None
    if r.get("online_warmup"):
        return f"{r['online_warmup']}-epoch warm-up on S" if r.get("online_pixels") == "labelled" else None
    if stage.endswith("_crf") or design.startswith("the book"):
        return "Ŝ refined by the CRF"
    if r.get("online_pixels") == "all":
        return "Ŝ on every pixel"
    if design.startswith("the paper's PSL on the book's masks"):
        return "the paper's Ŝ"
    return None


def psl_design_table(path: str | Path, profiles=("default", "default_seed1")) -> pd.DataFrame | None:
    """The PSL designs on the book's erasing masks (benchmarks/psl_design.json): held-out mIoU
    of the AE segmenter and of PSL and PSL++ with each form of PSL's online map Ŝ tried, one
    column per segmenter and training seed. None without records."""
    recs = [r for r in _entries(read_record(path)) if r.get("profile") in profiles and "miou" in r]
    rows: dict = {}
    for r in recs:
        name = _psl_row(r)
        if name is None:
            continue
        which = "PSL++" if "plus_plus" in str(r.get("stage")) else "PSL"
        if name.startswith("AE"):
            which = "PSL"   # the AE segmenter sits in PSL's columns: what Ŝ adds to it
        rows.setdefault(name, {})[(which, r.get("seed", 0))] = _f(r["miou"])
    if not rows:
        return None
    columns = sorted({c for row in rows.values() for c in row}, key=lambda c: (c[0] != "PSL", c[1]))
    order = ["AE segmenter (no Ŝ)", "the paper's Ŝ", "Ŝ on every pixel"]
    names = [n for n in order if n in rows] + sorted(n for n in rows if n not in order and "CRF" not in n) \
        + [n for n in rows if "CRF" in n]
    table = pd.DataFrame([{"online map": n, **{f"{w}, seed {k}": rows[n].get((w, k), "–") for w, k in columns}}
                          for n in names])
    return table


def test_windows_note(recipe_path: str | Path, psl_path: str | Path) -> str:
    """The share of true classes PSL's drop at 0.5 removes with the confidence read on the whole
    scene (the oracle runs of benchmarks/segmenter_recipe.json) and on crop-sized windows (the
    book's PSL runs of benchmarks/psl_design.json)."""
    whole = [r["true_classes_dropped_05"] for r in _entries(read_record(recipe_path)) if "true_classes_dropped_05" in r]
    windows = [r["dropped_true"]["0.5"] for r in _entries(read_record(psl_path))
               if isinstance(r.get("dropped_true"), dict) and "0.5" in r["dropped_true"]]
    if not whole:
        return missing_note(recipe_path, "python benchmarks/segmenter_recipe.py")
    if not windows:
        return missing_note(psl_path, "python benchmarks/psl_design.py --profile default")
    return (f"Read on the whole scene, the confidence fell below 0.5 for {min(whole):.0%} to {max(whole):.0%} of "
            f"the classes the held-out scenes contain (the segmenter study's oracle runs); read on "
            f"crop-sized windows, for {min(windows):.0%} to {max(windows):.0%} (the PSL study's runs).")


def walk_memory_note(path: str | Path) -> str:
    """Peak memory of the random walk, banded against dense (benchmarks/randomwalk_memory.json)."""
    cases = (read_record(path) or {}).get("cases", {})
    dense = next((c for c in cases.values() if c.get("method") == "dense"), None)
    band = next((c for c in cases.values() if c.get("method") == "banded" and dense
                 and c.get("cells") == dense.get("cells")), None)
    big = max((c for c in cases.values() if c.get("method") == "banded"), key=lambda c: c.get("cells", 0), default=None)
    if not dense or not band:
        return missing_note(path, "python benchmarks/randomwalk_memory.py")
    out = (f"On a {dense.get('input')} input ({dense.get('cells'):,} cells) the dense walk added "
           f"{dense.get('added_mb'):,.0f} MB and took {_seconds(dense.get('seconds'))}, the banded one "
           f"{band.get('added_mb'):,.0f} MB and {_seconds(band.get('seconds'))}")
    if big and big is not band:
        out += f"; on {big.get('input')} ({big.get('cells'):,} cells) the band added {big.get('added_mb'):,.0f} MB"
    return out + "."


def time_budget_note(path: str | Path, profile: str = "default") -> str:
    """The last timed `make book` of ``profile`` (benchmarks/book_time.json): wall and CPU time,
    cores, peak memory and date."""
    run = latest_book_time(path, profile)
    if run is None:
        return missing_note(path, f"make book-time PROFILE={profile}")
    return (f"The last timed `make book` of the {profile} profile from empty artifacts took "
            f"{_seconds(run['wall_s'])} ({_seconds(run.get('cpu_s'))} of CPU on {run.get('cores', '?')} cores, "
            f"peak memory {run.get('peak_rss_mib', 0) / 1024:.1f} GiB; {str(run.get('finished_at', ''))[:10]}).")


def segmenter_budget_table(path: str | Path) -> pd.DataFrame | None:
    """The segmenter recipes tried for the time budget (benchmarks/book_recipe.json,
    ``_segmenters``): held-out mIoU of each segmenter and the oracle's training time."""
    segs = (read_record(path) or {}).get("_segmenters")
    if not isinstance(segs, dict) or not segs:
        return None
    rows = []
    for name, r in sorted(segs.items(), key=lambda kv: kv[1].get("order", 0)):
        row = {"recipe": name}
        for stage, label in (("ae_segmenter", "AE seg."), ("psl", "PSL"), ("oracle", "oracle")):
            row[label] = _f((r.get(stage) or {}).get("val_miou"))
        row["oracle train"] = _seconds((r.get("oracle") or {}).get("train_s"))
        rows.append(row)
    return pd.DataFrame(rows)


def book_numbers_note(artifacts_root: str | Path, profile: str) -> str:
    """This build's held-out mIoU of the AE segmenter, PSL and PSL++ (the profile's metrics.json),
    or '' where they have not run."""
    from .records import pipeline_numbers

    n = pipeline_numbers(artifacts_root, profile)
    parts = [(k, n.get(k)) for k in ("AE segmenter", "PSL", "PSL++")]
    if any(v is None for _, v in parts):
        return ""
    return " In this build: " + ", ".join(f"{k} {v:.3f}" for k, v in parts) + " (held-out mIoU)."


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else (f"{v:g}" if isinstance(v, float) else str(v))


def settings_note(profile: str, notebook: str, keys, stage: str | None = None) -> str:
    """What ``profile`` sets for ``keys`` in its run of ``notebook`` that writes ``stage`` (the
    last run when ``stage`` is None or no run writes it), against the parameters' defaults."""
    from ..engine.config import notebook_runs
    from ..engine.registry import entry

    defaults = entry(notebook).parameter_defaults()
    runs = [{**defaults, **r} for r in notebook_runs(profile, notebook)]
    run = next((r for r in runs if stage is not None and r.get("stage") == stage), runs[-1])
    ours = ", ".join(f"`{k}: {_value(run[k])}`" for k in keys)
    if all(run[k] == defaults[k] for k in keys):
        return f"The {profile} profile keeps the parameters' defaults: {ours}."
    return (f"The {profile} profile sets {ours}; the parameters' defaults are "
            + ", ".join(f"`{k}: {_value(defaults[k])}`" for k in keys) + ".")


def table_or_note(table: pd.DataFrame | None, path: str | Path, command: str, precision: int | None = None):
    """What a page displays for an evidence table: the table without its row numbers (its
    numbers with ``precision`` decimals, when given), or the sentence naming the command that
    writes its record."""
    from IPython.display import Markdown

    if table is None or not len(table):
        return Markdown(missing_note(path, command))
    style = table.style.set_table_styles([{"selector": "td, th", "props": "padding: 0.1em 0.6em;"}])
    if precision is not None:
        style = style.format(precision=precision)
    return style.hide(axis="index") if isinstance(table.index, pd.RangeIndex) else style


def crf_settings_note(params=None) -> str:
    """The dense CRF's settings as a sentence (``params``: a
    :class:`aepsl.methods.crf.CRFParams`; default: the one every stage uses)."""
    from ..methods.crf import CRFParams

    p = CRFParams() if params is None else params
    return (f"The book's CRF uses PSA's settings: bilateral kernel $w_1 = {p.bi_compat:g}$, "
            f"$\\theta_\\alpha = {p.bi_sxy:g}$ px, $\\theta_\\beta = {p.bi_srgb:g}$ colour levels; "
            f"smoothness kernel $w_2 = {p.gauss_compat:g}$, $\\theta_\\gamma = {p.gauss_sxy:g}$ px; "
            f"{p.iterations} mean-field iterations.")


def recipe_note(paper: str, recipe: dict, params: dict, symbols: dict | None = None) -> str:
    """A sentence setting a run's ``params`` beside a paper's published ``recipe`` (both keyed by
    parameter name; ``symbols`` names them as the page's equations do, e.g. ``{"beta": "$\\beta$"}``):
    the published values, then whether this run keeps them or which it changes."""
    symbols = symbols or {}

    def name(k):
        return symbols.get(k, f"`{k}`")

    def value(v):
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"`{v}`"

    def differs(a, b):
        if isinstance(b, (int, float)) and not isinstance(b, bool):
            return float(a) != float(b)
        return a != b

    published = ", ".join(f"{name(k)} = {value(v)}" for k, v in recipe.items())
    changed = [k for k, v in recipe.items() if k in params and differs(params[k], v)]
    if not changed:
        return f"{paper}'s recipe: {published}. This run keeps it."
    return (f"{paper}'s recipe: {published}. This run changes "
            + ", ".join(f"{name(k)} to {value(params[k])}" for k in changed) + ".")


def hfpl_recipe_note(params: dict | None) -> str:
    """HFPL's loss settings as a sentence, from the parameters a CAM stage trained with
    (``params`` of its record, the ``hfpl_*`` entries); '' when there are none (``params`` None,
    or a stage trained without HFPL)."""
    if not params or not params.get("hfpl"):
        return ""
    return (f"The HFPL classifier trained with $w = {params['hfpl_weight']:g}$, "
            f"$K = {params['hfpl_samples']}$ samples per class, "
            f"$\\sigma = {params['hfpl_sigma']:g}$, $\\mu = {params['hfpl_mu']:g}$ and "
            f"$\\lambda = {params['hfpl_fs_weight']:g}$.")


def affinity_runs_note(runs, profile: str) -> str:
    """Sentences under the affinity runs' table (:func:`aepsl.book.tables.affinity_table`): which
    rows another profile measured on the same scenes, and which runs nobody made ('' when
    every run is this profile's own)."""
    from .tables import AFFINITY_STAGES

    text = []
    if len(runs):
        other = [r for r in runs.index if runs.loc[r, "measured in"] != profile]
        if other:
            text.append("Rows measured in another profile's run on the same scenes: "
                        + ", ".join(f"`{r}`" for r in other)
                        + source_note(runs.loc[other[0], "measured in"], profile) + ".")
    missing = [s for s in AFFINITY_STAGES if not len(runs) or s not in runs.index]
    if missing:
        text.append(not_run_note("AffinityNet on " + " and on ".join(AFFINITY_STAGES[s] for s in missing)))
    return "\n\n".join(text)


def walk_steps_note(m: dict) -> str:
    """The step sweep of an affinity stage's metrics ``m`` in words: the best number of steps and
    the longest walk, for the run's reading of the walk and for PSA's background where scored."""
    def best_and_last(sweep: dict) -> tuple[int, float, int, float]:
        steps = sorted(int(k) for k in sweep)
        best = max(steps, key=lambda k: sweep[str(k)])
        return 2 ** best, sweep[str(best)], 2 ** steps[-1], sweep[str(steps[-1])]

    mine = "Cut after the walk" if m["walk"].get("background") == "cut" else "After the walk"
    b, bv, last, lv = best_and_last(m["logt_sweep"])
    text = (f"{mine}: at best {bv:.3f} mIoU (after {b} steps), {lv:.3f} after {last}. "
            f"Before the walk: {m['miou_before']:.3f}.")
    if "power_walk" in m:
        b, bv, last, lv = best_and_last(m["power_walk"]["logt_sweep"])
        text += f" PSA's background on the same walk: at best {bv:.3f} (after {b} steps), {lv:.3f} after {last}."
    return text


def cam_variants_seeds_note(record: dict) -> str:
    """The CAM-variants claims over training seeds (``benchmarks/cam_variants_seeds.json``): how far
    the best later method (Grad-CAM left out: it is the CAM) came from the one-pass CAM on each
    seed, and how much of the body the best of them and the erasing rounds find above the mining
    threshold; with the seeds, code revisions, CPU and dates of the records."""
    runs = (record or {}).get("runs") or []
    if not runs:
        return ""
    gaps, bodies, erased = {}, {}, {}
    for r in runs:
        later = {k: v["mIoU"] for k, v in r["seeds"].items() if not k.startswith("CAM") and k != "Grad-CAM"}
        if not later or "CAM" not in r["seeds"]:
            continue
        best = max(later, key=later.get)
        gaps[r["seed"]] = (best, later[best] - r["seeds"]["CAM"]["mIoU"])
        found = {k: v.get("body") for k, v in r["mining"].items() if not k.startswith(("CAM", "erasing"))}
        found = {k: v for k, v in found.items() if v is not None}
        if found:
            bodies[r["seed"]] = max(found.values())
        rounds = [k for k in r["mining"] if k.startswith("erasing") and r["mining"][k].get("body") is not None]
        if rounds:
            erased[r["seed"]] = r["mining"][rounds[-1]]["body"]
    if not gaps:
        return ""
    seeds = sorted(gaps)
    top = max(gaps.values(), key=lambda g: g[1])
    top_seed = [s for s in seeds if gaps[s] == top][0]
    winners = sorted({g[0] for g in gaps.values()})
    which = (f"{winners[0]} on every seed" if len(winners) == 1 else
             f"{', '.join(winners[:-1])} or {winners[-1]}, depending on the seed")
    out = [f"Over training seeds {', '.join(map(str, seeds))}, the best later method (Grad-CAM aside) was "
           f"{which}, and it came "
           f"{min(g[1] for g in gaps.values()):+.3f} to {top[1]:+.3f} mIoU from the one-pass CAM "
           f"(the most on seed {top_seed}, with {top[0]})."]
    if bodies and erased:
        both = sorted(set(bodies) & set(erased))
        def span(values) -> str:
            low, high = f"{100 * min(values):.0f}", f"{100 * max(values):.0f}"
            return f"{low}%" if low == high else f"{low}-{high}%"

        out.append(f"Above the erasing threshold, the method that found most of the body found "
                   f"{span([bodies[s] for s in both])} of it; the erasing rounds together found "
                   f"{span([erased[s] for s in both])}, on every one of these seeds more than any method.")
        if not all(erased[s] > bodies[s] for s in both):
            out[-1] = out[-1].replace(", on every one of these seeds more than any method.",
                                      "; on seeds " + ", ".join(str(s) for s in both if erased[s] <= bodies[s])
                                      + " a method found as much as the rounds.")
    from .lessons import made_by

    out.append(f"(Computed by {made_by(runs)}; each chain's classifier is its own.)")
    return " ".join(out)


def cam_variant_segmenter_seeds_note(table: pd.DataFrame) -> str:
    """What the segmenter comparison over seeds says (see
    :func:`aepsl.book.tables.cam_variant_segmenter_seeds_table`): on how many seeds the AE masks
    trained the better segmenter, and by how much."""
    if table is None or table.empty:
        return ""
    seeds = table.drop(index="mean", errors="ignore")
    gaps = seeds["AE − variant"].astype(float)
    ahead, n = int((gaps > 0).sum()), len(gaps)
    methods = ", ".join(sorted(set(seeds["variant"])))
    on = f"On {n} training seed{'s' if n > 1 else ''}"
    if ahead == n:
        return (f"{on}, the segmenter trained on the erasing masks beat the same segmenter trained on the best "
                f"later CAM's seeds ({methods}) by {gaps.min():.3f} to {gaps.max():.3f} mIoU: a better CAM did not "
                "replace erasing.")
    if ahead == 0:
        return (f"{on}, the segmenter trained on the best later CAM's seeds ({methods}) beat the same segmenter "
                f"trained on the erasing masks by {-gaps.max():.3f} to {-gaps.min():.3f} mIoU, for one forward pass "
                "instead of retraining.")
    return (f"{on}, the erasing masks gave the better segmenter on {ahead} (differences {gaps.min():+.3f} to "
            f"{gaps.max():+.3f} mIoU against the best later CAM's seeds, {methods}): a one-seed answer would not hold.")


def cam_variants_passes_note(m: dict, scales: list, flip: bool) -> str:
    """Under the CAM-variants table: how many images were scored, and how many passes per image
    the CAM chapter's maps and the other rows average (the stage's metrics ``m``, the page's
    ``cam_scales`` and ``cam_flip``)."""
    def passes(scales, flip):
        n = len(scales)
        return f"{n} scale{'s' if n > 1 else ''}" + (" and their mirror images" if flip else "")

    return (f"Scored on {m['images']} of the {m['of_images']} training images with masks. The CAM "
            f"chapter's maps average {passes(m['cam_stage_scales'], m['cam_stage_flip'])}, the other "
            f"rows {passes(scales, flip)}; the CAM chapter's cost per image is its own inference time.")


def cam_variants_note(seeds: pd.DataFrame, mining: pd.DataFrame, cut: float) -> str:
    """What the CAM-variants chapter found, from its two tables (see
    :func:`aepsl.book.tables.cam_variants_table` and :func:`~aepsl.book.tables.cam_variants_mining_table`):
    the one-pass CAM, the best method and how far it is from the CAM, whether Grad-CAM matched
    the CAM, and how much body the methods and the erasing rounds find above the mining cut."""
    if seeds is None or seeds.empty or "CAM" not in seeds.index:
        return "The CAM-variants stage has not been run: `python -m aepsl.stages --only 01_cam_variants` runs it."
    cam = float(seeds.loc["CAM", "mIoU"])
    methods = seeds.drop(index=[r for r in seeds.index if r.startswith("CAM")])
    out = [f"The one-pass CAM's seeds score {cam:.3f} mIoU on these images."]
    if len(methods):
        miou = methods["mIoU"].astype(float)
        # Grad-CAM is the CAM on a GAP classifier: the ranking is of the others
        others = miou.drop(index="Grad-CAM") if len(miou) > 1 and "Grad-CAM" in miou.index else miou
        best, worst = others.idxmax(), others.idxmin()
        gap = others[best] - cam
        if gap >= 0.0005:
            out.append(f"The best of the later methods, {best}, scores {others[best]:.3f}, {gap:.3f} above it;")
        elif gap <= -0.0005:
            out.append(f"None of the later methods beats it: the best, {best}, scores {others[best]:.3f} "
                       f"({gap:+.3f});")
        else:
            out.append(f"The best of the later methods, {best}, scores the same, {others[best]:.3f};")
        out.append(f"the worst, {worst}, {others[worst]:.3f}.")
        if "Grad-CAM" in miou.index:
            grad = miou["Grad-CAM"]
            if abs(grad - cam) < 0.0005:
                out.append("Grad-CAM scores as the CAM does, as the identity above says it must on a GAP "
                           "classifier.")
            elif abs(grad - cam) < 0.01:
                out.append(f"Grad-CAM scores {grad:.3f}: the CAM's maps, as the identity above says, up to the "
                           "rounding of the saved maps, which moves a few pixels across a threshold.")
            else:
                out.append(f"Grad-CAM scores {grad:.3f}, not the CAM's {cam:.3f}: on a GAP classifier the two "
                           "should agree, so something between them differs (the scales, the resizing).")
    if mining is not None and not mining.empty and "CAM" in mining.index:
        body = mining["body"].astype(float)
        ranked = body.drop(index=[r for r in body.index if r.startswith(("CAM", "erasing"))])
        text = (f"Above {cut:.2f}, the CAM gives the right class to {100 * mining.loc['CAM', 'disc']:.0f}% of the "
                f"disc pixels and {100 * body['CAM']:.0f}% of the body pixels")
        if len(ranked):
            top = ranked.idxmax()
            text += f"; of the later methods {top} finds the most body, {100 * ranked[top]:.0f}%"
        rounds = [r for r in body.index if r.startswith("erasing, rounds")]
        if rounds:
            text += f"; the erasing rounds together ({rounds[-1].split(', ', 1)[1]}) find {100 * body[rounds[-1]]:.0f}%"
        out.append(text + ".")
        if rounds and len(ranked) and "s / image" in mining.columns:
            cost = mining["s / image"].astype(float)
            slowest = cost.drop(index=[r for r in cost.index if r.startswith(("CAM", "erasing"))]).idxmax()
            if cost[rounds[-1]] == cost[rounds[-1]] and cost[slowest] == cost[slowest]:
                out.append(f"In time, the erasing rounds cost {cost[rounds[-1]]:.3f} s per training image, "
                           f"retraining included; the dearest method here, {slowest}, {cost[slowest]:.3f} s.")
        if rounds and len(ranked):
            top = ranked.idxmax()
            if ranked[top] > body[rounds[-1]]:
                out.append(f"So on these scenes {top} finds more of the body than the erasing rounds do, "
                           "from the CAM's own classifier, without retraining it.")
            else:
                out.append("So on these scenes no later CAM finds as much of the body as the erasing rounds "
                           "do: re-weighting the features of one classifier does not reach what "
                           "classifiers retrained on erased images learn to see.")
    return " ".join(out)
