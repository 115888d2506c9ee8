"""The book's lessons as checks on a chain's saved numbers, and the tables of several seeds.

A *chain* is one run of the default profile's stages for one training seed (and one set of
scenes): its numbers are read from the stages' metrics.json by :func:`chain_numbers`. Each
lesson of :data:`LESSONS` is a claim a chapter makes (erasing finds more than the CAM, PSL adds
to the AE segmenter, ...) written as a check on those numbers with its margin. The seeds study
(``benchmarks/seeds.py``) records the numbers of every chain it ran; :func:`seed_table` and
:func:`spread_table` turn those records into the pages' tables, and :func:`lesson_table` says
which lesson held on which seed.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Callable

import pandas as pd

from .records import pipeline_numbers

# the rows of a chain, in the order of the pipeline, with what each number is
ROWS = {
    "val mAP": "classifier, held-out mean average precision",
    "CAM": "CAM seeds at the best background cut (train)",
    "best AE": "best merged AE round (train)",
    "CAM + random walk": "CAM seeds after the random walk (train)",
    "CAM + HFPL": "HFPL classifier's CAM seeds at the best cut (train)",
    "AE segmenter": "segmenter on the AE masks (held-out)",
    "PSL": "AE + PSL (held-out)",
    "PSL++": "PSL++ (held-out)",
    "oracle": "fully supervised segmenter (held-out)",
}


def chain_numbers(artifacts_root: str | Path, profile: str) -> dict:
    """The numbers of one chain (:data:`ROWS`; None where a stage has not run), from its records."""
    from ..engine.artifacts import load_metrics

    n = pipeline_numbers(artifacts_root, profile)
    cam = load_metrics(Path(artifacts_root) / profile / "cam") or {}
    rounds = [v for v in n.get("AE") or [] if v is not None]
    return {"val mAP": (cam.get("metrics") or {}).get("val_map"), "CAM": n.get("CAM"),
            "best AE": max(rounds) if rounds else None, "AE rounds": rounds,
            "CAM + random walk": n.get("CAM + random walk"), "CAM + HFPL": n.get("CAM + HFPL"),
            "AE segmenter": n.get("AE segmenter"), "PSL": n.get("PSL"), "PSL++": n.get("PSL++"),
            "oracle": n.get("oracle"), WALK_POWER: n.get(WALK_POWER)}


# the same walk read with PSA's background score instead of the cut (not a row of the chain: the
# random-walk decision compares it)
WALK_POWER = "CAM + random walk, PSA background"


def walk_table(record: dict, label: str = "book", profile: str = "default") -> pd.DataFrame:
    """Per training seed of ``label`` whose record has both readings of the walk: the CAM at its
    best cut, the walk cut after it, the same walk with PSA's background, and the two gains."""
    rows = {}
    for seed, run in study_chains(record, label, profile).items():
        n = run.get("numbers") or {}
        if _have(n.get("CAM"), n.get("CAM + random walk"), n.get(WALK_POWER)):
            rows[seed] = {"CAM": n["CAM"], "walk, cut after": n["CAM + random walk"],
                          "walk, PSA background": n[WALK_POWER],
                          "gain, cut after": n["CAM + random walk"] - n["CAM"],
                          "gain, PSA background": n[WALK_POWER] - n["CAM"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("training seed").round(3)


def _have(*values) -> bool:
    return all(isinstance(v, (int, float)) and not math.isnan(v) for v in values)


def _check(test: Callable[..., bool], *keys: str) -> Callable[[dict], bool | None]:
    def check(numbers: dict) -> bool | None:
        values = [numbers.get(k) for k in keys]
        return bool(test(*values)) if _have(*values) else None
    return check


# (lesson, its check on a chain's numbers: True, False, or None when a number is missing)
LESSONS: list[tuple[str, Callable[[dict], bool | None]]] = [
    ("classifier val mAP ≥ 0.95", _check(lambda m: m >= 0.95, "val mAP")),
    ("best AE round ≥ CAM + 0.03", _check(lambda ae, cam: ae >= cam + 0.03, "best AE", "CAM")),
    ("AE + PSL ≥ AE segmenter + 0.01", _check(lambda psl, ae: psl >= ae + 0.01, "PSL", "AE segmenter")),
    ("PSL++ ≥ AE + PSL + 0.01", _check(lambda pp, psl: pp >= psl + 0.01, "PSL++", "PSL")),
    ("PSL++ ≥ 0.85 × oracle", _check(lambda pp, o: pp >= 0.85 * o, "PSL++", "oracle")),
    ("oracle ≥ 0.80", _check(lambda o: o >= 0.80, "oracle")),
    ("CAM + random walk ≥ CAM + 0.03", _check(lambda rw, cam: rw >= cam + 0.03, "CAM + random walk", "CAM")),
    ("CAM + HFPL ≥ CAM + 0.03", _check(lambda h, cam: h >= cam + 0.03, "CAM + HFPL", "CAM")),
]


# The study's bars: each claim as a gain over the training seeds, with its margin, the share of
# seeds on which it must hold and, for erasing, the mean gain the study asks of it:
# (claim, gain on a chain's numbers, margin, least share of seeds, least mean gain or None)
STUDY_BARS: list[tuple[str, Callable[[dict], float], float, float, float | None]] = [
    ("erasing: best AE − CAM", lambda n: n["best AE"] - n["CAM"], 0.03, 0.8, 0.04),
    ("PSL: AE + PSL − AE segmenter", lambda n: n["PSL"] - n["AE segmenter"], 0.01, 1.0, None),
    ("PSL++ − AE + PSL", lambda n: n["PSL++"] - n["PSL"], 0.01, 1.0, None),
    ("PSL++ / oracle", lambda n: n["PSL++"] / n["oracle"], 0.85, 1.0, None),
    ("random walk − CAM", lambda n: n["CAM + random walk"] - n["CAM"], 0.03, 1.0, None),
    ("HFPL − CAM", lambda n: n["CAM + HFPL"] - n["CAM"], 0.03, 1.0, None),
]


def _gain(fn: Callable[[dict], float], numbers: dict) -> float | None:
    try:
        value = fn(numbers)
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return value if _have(value) else None


def study_bars(chains: dict[str, dict]) -> pd.DataFrame:
    """One row per claim of :data:`STUDY_BARS` over the chains (``{label: numbers}``): its gain on
    each chain, the mean, the bar it must reach, on how many chains it did, whether the claim
    holds (on at least the bar's share of the chains with the number, and with the mean gain the
    bar asks), and the chains where it failed."""
    rows = {}
    for claim, fn, margin, share, mean_bar in STUDY_BARS:
        gains = {label: _gain(fn, numbers) for label, numbers in chains.items()}
        have = {k: v for k, v in gains.items() if v is not None}
        held = [k for k, v in have.items() if v >= margin - 1e-12]
        failed = [k for k in have if k not in held]
        mean = sum(have.values()) / len(have) if have else float("nan")
        need = math.ceil(share * len(have) - 1e-9)
        holds = bool(have) and len(held) >= need and (mean_bar is None or mean >= mean_bar - 1e-12)
        every = "every chain" if share >= 1 else f"{need} of {len(have)} chains"
        bar = f"≥ {margin:g} on {every}" + (f", mean ≥ {mean_bar:g}" if mean_bar is not None else "")
        rows[claim] = {**{k: gains[k] for k in chains}, "mean": mean, "bar": bar,
                       "held": f"{len(held)}/{len(have)}", "claim holds": "✓" if holds else ("✗" if have else "–"),
                       "failed on": ", ".join(failed) or "–"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("claim")


def study_bars_display(bars: pd.DataFrame, chains: dict[str, dict]) -> pd.DataFrame:
    """What the results page shows of :func:`study_bars`: one row per claim, named with its bar;
    one column per chain (its gain, three decimals with a sign; the ratio row without), the mean
    and the verdict. Narrow enough for the book's column."""
    def shown(claim, v):   # a gain with its sign; the ratio row as it is
        return "–" if not _have(v) else (f"{v:.3f}" if claim.endswith("/ oracle") else f"{v:+.3f}")

    rows = {}
    for claim, row in bars.iterrows():
        name = f"{claim} {row['bar'].replace(' chains', '').replace('every chain', 'every seed')}"
        rows[name] = {**{k.replace("seed ", ""): shown(claim, row[k]) for k in chains},
                      "mean": shown(claim, row["mean"]), "holds": row["claim holds"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("claim and its bar")


def study_bars_note(bars: pd.DataFrame) -> str:
    """A sentence for the page: which claims hold over the chains, and where the others fail."""
    failing = bars[bars["claim holds"] == "✗"]
    if not len(bars) or not (bars["claim holds"] != "–").any():
        return ""
    if not len(failing):
        return "Every claim holds over these chains, at its bar."
    parts = []
    for claim, row in failing.iterrows():
        where = f"it fails on {row['failed on']}" if row["failed on"] != "–" else "it holds on every chain"
        parts.append(f"**{claim}** does not reach its bar ({row['bar']}): {where}, and its mean gain is "
                     f"{row['mean']:+.3f}" if not claim.endswith("/ oracle") else
                     f"**{claim}** does not reach its bar ({row['bar']}): {where}")
    return "Not every claim holds over these chains. " + "; ".join(parts) + "."


def lesson_table(chains: dict[str, dict]) -> pd.DataFrame:
    """One row per lesson, one column per chain (``{label: numbers}``): ✓, ✗ or – (not run)."""
    mark = {True: "✓", False: "✗", None: "–"}
    return pd.DataFrame({label: [mark[check(numbers)] for _, check in LESSONS] for label, numbers in chains.items()},
                        index=pd.Index([name for name, _ in LESSONS], name="lesson"))


def seed_table(chains: dict[str, dict]) -> pd.DataFrame:
    """One row per number of :data:`ROWS`, one column per chain (``{label: numbers}``)."""
    return pd.DataFrame({label: [numbers.get(k) for k in ROWS] for label, numbers in chains.items()},
                        index=pd.Index(list(ROWS), name="number"), dtype=float)


def spread_table(chains: dict[str, dict]) -> pd.DataFrame:
    """Per number of :data:`ROWS`: mean, standard deviation (n - 1), worst and best over the
    chains that have it, and how many do."""
    table = seed_table(chains)
    return pd.DataFrame({"mean": table.mean(axis=1), "sd": table.std(axis=1, ddof=1),
                         "worst": table.min(axis=1), "best": table.max(axis=1),
                         "seeds": table.notna().sum(axis=1)})


def study_chains(record: dict, label: str, profile: str = "default") -> dict[int, dict]:
    """``{seed: record}`` of the newest record of each training seed of ``label`` on ``profile``
    in a seeds study record (benchmarks/seeds.json)."""
    out: dict[int, dict] = {}
    for r in (record or {}).get("runs", []):
        if r.get("label") == label and r.get("profile") == profile:
            out[r["seed"]] = r
    return dict(sorted(out.items()))


SHORT = {"val mAP": "mAP", "CAM": "CAM", "best AE": "AE", "AE segmenter": "AE seg.", "PSL": "PSL",
         "PSL++": "PSL++", "oracle": "oracle", "CAM + random walk": "walk", "CAM + HFPL": "HFPL"}


def before_after_table(record: dict, before: str, after: str, keys=("val mAP", "CAM", "best AE", "AE segmenter",
                                                                       "PSL", "PSL++", "oracle"),
                       profile: str = "default", seeds=None) -> pd.DataFrame:
    """Two studies of ``record`` side by side, seed by seed: one row per number of ``keys`` (short
    names, :data:`SHORT`; three decimals) and a last row with how many of the first six lessons
    (those of the book's chain) held; one column per study and seed (two header levels).
    ``seeds``: only these training seeds (None: every seed either study has)."""
    columns = {}
    for label in (before, after):
        for seed, r in study_chains(record, label, profile).items():
            if seeds is not None and seed not in seeds:
                continue
            held = r.get("lessons") or {}
            lessons = [held.get(name) for name, _ in LESSONS[:6]]   # the record's keys are sorted
            columns[(label, f"seed {seed}")] = [_text(r["numbers"].get(k)) for k in keys] + [
                f"{sum(1 for v in lessons if v)}/{len(lessons)}"]
    if not columns:
        return pd.DataFrame()
    table = pd.DataFrame(columns, index=[SHORT.get(k, k) for k in keys] + ["lessons held"])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def _text(v) -> str:
    return f"{v:.3f}" if _have(v) else "–"


def made_by(runs: list[dict]) -> str:
    """'code revision(s) R on CPU C, recorded D1 to D2' for a study's records."""
    revs = sorted({rev[:7] for r in runs for rev in (r.get("stage_revisions") or [r.get("git_revision") or "?"])})
    cpus = sorted({str(r.get("cpu")) for r in runs})
    days = sorted({str(r.get("finished_at", ""))[:10] for r in runs})
    return (f"code revision {', '.join(revs)} on {', '.join(cpus)}, recorded {days[0]}"
            + (f" to {days[-1]}" if days[-1] != days[0] else ""))


def study_provenance(record: dict, labels, profile: str = "default", seeds=None) -> str:
    """One sentence per study: which code revision(s), CPU and dates made its records (``seeds``:
    only these training seeds' records; None: all)."""
    parts = []
    for label in labels:
        runs = [r for k, r in study_chains(record, label, profile).items() if seeds is None or k in seeds]
        if runs:
            parts.append(f"*{label}*: seeds {', '.join(str(r['seed']) for r in runs)}, computed by {made_by(runs)}.")
    return " ".join(parts)


def spread_display(chains: dict[str, dict]) -> pd.DataFrame:
    """What the results page shows of several chains: per number of :data:`ROWS` that any chain
    has, ``mean ± sd``, the worst and best chain's value and how many chains have it."""
    spread = spread_table(chains)
    spread = spread[spread["seeds"] > 0]
    text = [f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}" for m, s, n in
            zip(spread["mean"], spread["sd"].fillna(0), spread["seeds"])]
    return pd.DataFrame({"mean ± sd": text, "worst": spread["worst"].round(3), "best": spread["best"].round(3),
                         "seeds": spread["seeds"].astype(int)}, index=spread.index)


def provenance_note(runs: list[dict], book: dict | None) -> str:
    """Which code, CPU and dates made the study's records, and whether that is the book's own
    build (``book``: the metrics.json record of the book's CAM stage): a sentence for the page."""
    if not runs:
        return ""
    revs = {rev[:7] for r in runs for rev in (r.get("stage_revisions") or [r.get("git_revision") or "?"])}
    cpus = {str(r.get("cpu")) for r in runs}
    text = f"The study's chains were computed by {made_by(runs)}."
    if book:
        own_rev = str(book.get("git_revision") or "?")[:7]
        own_cpu = str((book.get("host") or {}).get("cpu") or "?")
        if own_rev not in revs or own_cpu not in cpus:
            text += (f" This book's own build (revision {own_rev}, {own_cpu}) is not among them: float rounding "
                     "differs between CPU models and training amplifies it, so its own numbers above may "
                     "differ from the study's seed 0.")
    return text


def scene_chains(record: dict, label: str = "book", book_profile: str = "default") -> dict[str, dict]:
    """``{"scenes K": numbers}``: the newest chain of ``label`` on each scene set drawn anew (a
    profile other than ``book_profile`` whose data seed differs from 0), for the lesson table."""
    out: dict[str, dict] = {}
    for r in (record or {}).get("runs", []):
        if r.get("label") == label and r.get("profile") != book_profile and r.get("data_seed"):
            out[f"scenes {r['data_seed']}"] = r["numbers"]
    return dict(sorted(out.items()))


def fourth_round_note(record: dict, label: str = "book", profile: str = "default") -> str:
    """What a fourth erasing round did to the merged masks in the seeds study's chains of
    ``label`` that ran one (its masks' mIoU minus three rounds'), over the training seeds and
    the scene sets drawn anew. Empty where no chain ran a fourth round."""
    chains = {f"training seed {k}": r["numbers"] for k, r in study_chains(record, label, profile).items()}
    chains.update(scene_chains(record, label, profile))
    gains = {name: n["AE rounds"][3] - n["AE rounds"][2] for name, n in chains.items()
             if len(n.get("AE rounds") or []) >= 4 and _have(*n["AE rounds"][2:4])}
    if not gains:
        return ""
    low, high = min(gains.values()), max(gains.values())
    three = [chains[name]["AE rounds"][2] for name in gains]
    sd = statistics.stdev(three) if len(three) > 1 else 0.0
    spread = (f", less than the three-round masks differ between chains (sd {sd:.3f})"
              if max(abs(low), abs(high)) < sd else f"; the three-round masks differ between chains by sd {sd:.3f}")
    return (f"The seeds study's {len(gains)} chains ran a fourth round with the book's recipe. Merged with "
            f"the other three, it moved the masks by {low:+.3f} to {high:+.3f} mIoU{spread}. The default "
            "book stops at three rounds, as the paper does.")


def study_time_note(record: dict, label: str = "book", chains: int = 7) -> str:
    """What one chain of the study costs, from the records of ``label`` whose run computed every
    stage itself (its wall time at least 90 % of its stages' summed wall time; a run that reused
    finished stages timed less than a chain) and ran with the machine otherwise idle (1-minute
    load at most 4 on its stages): their wall seconds and reference units (the chain's seconds
    over those of the fixed workload of ``benchmarks/book_time.py``), and what ``chains`` such
    chains (``make seeds`` from empty) come to. Only the newest record of each chain counts (an
    older one was made by other code). Empty where no record qualifies."""
    newest = {(r.get("profile"), r.get("seed")): r for r in (record or {}).get("runs", []) if r.get("label") == label}
    timed = []
    for r in newest.values():
        wall, stages, units = r.get("chain_wall_s"), r.get("stages_wall_s"), r.get("reference_units")
        if (r.get("label") == label and _have(wall, stages, units) and wall >= 0.9 * stages
                and (r.get("load_max") or 0) <= 4):
            timed.append(r)
    if not timed:
        return ""
    walls = sorted(r["chain_wall_s"] for r in timed)
    units = sorted(r["reference_units"] for r in timed)
    mid = statistics.median(walls)
    mean_units = sum(units) / len(units)
    span = (f"{units[0]:.0f}" if round(units[0]) == round(units[-1]) else f"{units[0]:.0f}-{units[-1]:.0f}")
    cpus = sorted({str(r.get("cpu")) for r in timed})
    return (f"A chain computed from empty took {walls[0] / 60:.0f}-{walls[-1] / 60:.0f} minutes "
            f"({span} reference units; {len(timed)} chains timed alone on {', '.join(cpus)}, "
            f"{timed[0].get('cores')} cores), so the whole study, {chains} chains, about "
            f"{chains * mid / 3600:.1f} hours ({chains * mean_units:,.0f} reference units).")


def _lesson(name: str):
    for lesson, check in LESSONS:
        if lesson == name:
            return check
    raise KeyError(f"no lesson {name!r}; the lessons are {[n for n, _ in LESSONS]}")


def seeds_note(record: dict | None, keys: list[str], lessons: list[str] = (), page_profile: str | None = None,
               label: str = "book", profile: str = "default") -> str:
    """A chapter's sentence on the seeds study: the range of each number of ``keys`` over the
    recorded training seeds, and on how many seeds each of ``lessons`` held (naming the seeds
    where it failed). '' on a page built for another profile than the book's; a pointer to
    ``make seeds`` where fewer than two seeds are recorded."""
    if page_profile is not None and page_profile != profile:
        return ""
    study = study_chains(record or {}, label, profile)
    if len(study) < 2:
        return ("These numbers are one training seed's; `make seeds` records the chain for five, and "
                "this sentence then gives their range.")
    seeds = list(study)
    parts = []
    for key in keys:
        values = [r["numbers"].get(key) for r in study.values() if _have(r["numbers"].get(key))]
        if values:
            parts.append(f"{key} {min(values):.3f}–{max(values):.3f}" if len(values) > 1 else f"{key} {values[0]:.3f}")
    text = (f"Over the {len(seeds)} training seeds of the seeds study ({', '.join(map(str, seeds))}): "
            + "; ".join(parts) + ".")
    for name in lessons:
        check = _lesson(name)
        results = {s: check(r["numbers"]) for s, r in study.items()}
        judged = {s: v for s, v in results.items() if v is not None}
        if not judged:
            continue
        failed = [s for s, v in judged.items() if not v]
        text += (f" *{name}* held on {len(judged) - len(failed)} of {len(judged)} seeds"
                 + (f" (not on seed{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))})" if failed else "")
                 + ".")
    return text
