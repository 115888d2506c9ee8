"""Segmenter designs tried for the default (PSL's online map Ŝ, its warm-up, the branch), recorded.

Each design is a stage profile whose 04_psl / 05_psl_plus_plus runs train segmenters beside a
profile's AE masks (``python -m aepsl.stages --profile FILE --only 04_psl 05_psl_plus_plus``);
this script reads the finished segmenters' metrics and records, per stage: its training seed,
labels and loss settings, held-out mIoU (with the test-time drop, with nothing dropped, with the
dense CRF), the share of true classes the drop removes, and where the wrong pixels go
(:func:`aepsl.methods.metrics.error_shares`).

    .venv/bin/python benchmarks/psl_design.py --profile 'benchmarks/designs.yaml#warmup' \\
        --design "Ŝ after a 2-epoch warm-up" --note "what changed and why"

Records go to benchmarks/psl_design.json, keyed by design and stage; benchmarks/record_results.py
turns them into a table of benchmarks/results.md. Training stages of the book move when
benchmarks/book_time.py rebuilds from empty, so the record, not the artifacts, keeps the numbers.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.methods import metrics as M  # noqa: E402
from aepsl.engine.artifacts import load_metrics, stage_dir  # noqa: E402
from aepsl.engine.config import load_profile, resolve  # noqa: E402
from aepsl.engine.registry import plan  # noqa: E402
from erasing_design import record  # noqa: E402  (benchmarks/, on sys.path as the script's folder)

OUT = ROOT / "benchmarks" / "psl_design.json"
NOTEBOOKS = ("04_psl", "05_psl_plus_plus")


def _r(x, n=4):
    return None if x is None else round(float(x), n)


def summarise(profile: str, only: list[str] | None = None) -> list[dict]:
    """One entry per finished segmenter run of ``profile`` (those in ``only``, if given)."""
    common = load_profile(profile)["common"]
    root = resolve(common.get("artifacts_root", "artifacts"))
    name = common["profile"]
    out = []
    for run in plan(profile):
        if run.entry.notebook not in NOTEBOOKS:
            continue
        p = dataclasses.asdict(run.config)
        if only and p["stage"] not in only:
            continue
        rec = load_metrics(stage_dir(root, name, p["stage"]))
        if rec is None or "drop_sweep" not in rec["metrics"]:
            print(f"skipping {p['stage']}: not finished")
            continue
        m, sweep = rec["metrics"], rec["metrics"]["drop_sweep"]
        out.append({
            "profile": name, "stage": p["stage"], "seed": p["seed"], "labels": p["labels"],
            "online": p["online"], "online_pixels": p["online_pixels"], "online_warmup": p.get("online_warmup", 0),
            "cls_lr": p["cls_lr"], "test_threshold": p["test_threshold"],
            "miou": _r(m["eval"]["miou"]), "miou_nothing_dropped": _r(sweep["miou"].get("0.0")),
            "crf_miou": _r(m["eval"].get("crf_miou")),
            "dropped_true": {k: _r(sweep["dropped_true"].get(k)) for k in ("0.1", "0.5")},
            "errors": {k: _r(v) for k, v in M.error_shares(np.asarray(m["eval"]["confusion"])).items()},
            "git_revision": rec.get("git_revision"), "wall_time_s": rec.get("wall_time_s"),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="the design's stage profile (YAML) or a profile name")
    ap.add_argument("--only", nargs="*", help="record only these stages")
    ap.add_argument("--design", help="record under this name (without it: print only)")
    ap.add_argument("--note", default="", help="what the design changes, one line")
    ap.add_argument("--dry-run", action="store_true", help="list the profile's segmenter runs and which are finished")
    args = ap.parse_args()
    if args.dry_run:
        common = load_profile(args.profile)["common"]
        root = resolve(common.get("artifacts_root", "artifacts"))
        for run in plan(args.profile):
            if run.entry.notebook in NOTEBOOKS and (not args.only or run.config.stage in args.only):
                folder = stage_dir(root, common["profile"], run.config.stage)
                print(f"{run.entry.notebook} {run.config.stage}: {folder} "
                      f"({'finished' if load_metrics(folder) else 'not finished'})")
        return 0
    entries = summarise(args.profile, args.only)
    for e in entries:
        print(f"{e['profile']}/{e['stage']}: seed {e['seed']} mIoU {e['miou']} (nothing dropped "
              f"{e['miou_nothing_dropped']}, CRF {e['crf_miou']}) errors {e['errors']}")
    if args.design:
        record(OUT, args.design, args.note, {f"{args.design} / {e['profile']}/{e['stage']}": e for e in entries},
               f"python -m aepsl.stages --profile {args.profile} --only {' '.join(NOTEBOOKS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
