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
