"""The default book's recipe under its time budget: classifier settings measured on the default
scenes, with their cost, so the data chapter can show why the book trains what it trains.

    .venv/bin/python benchmarks/book_recipe.py                  # train each candidate (minutes each)
    .venv/bin/python benchmarks/book_recipe.py --reuse DIR      # record finished runs found in DIR
    .venv/bin/python benchmarks/book_recipe.py --dry-run        # the plan: what would be trained or read

Each candidate is one run of the CAM stage (aepsl.methods.cam.run) on the default scenes with 1,000
training images, under artifacts/book-recipe/ (or found finished in DIR: any folder holding
`<name>/metrics.json` of a CAM stage). Recorded in benchmarks/book_recipe.json: classification
mAP on the validation scenes, CAM seed mIoU at the best background threshold, wall and CPU
seconds and the load average around the run (a load above the cores' count means the figure
was taken while other jobs shared the machine). The book's previous recipe (3,000 scenes, lr
0.001) is the `--baseline` entry when its metrics.json is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.data import stage as data_stage  # noqa: E402
from aepsl.engine.artifacts import read_json, write_json  # noqa: E402
from aepsl.methods import cam  # noqa: E402

# name -> CAM parameters changed from the stage's defaults (1,000 scenes, AdamW)
CANDIDATES = {
    "3 epochs, lr 0.001, scales 1/0.5/1.5": {"epochs": 3, "lr": 0.001, "cam_scales": [1.0, 0.5, 1.5]},
    "3 epochs, lr 0.001, scales 1/0.5": {"epochs": 3, "lr": 0.001, "cam_scales": [1.0, 0.5]},
    "3 epochs, lr 0.003, scales 1/0.5/1.5": {"epochs": 3, "lr": 0.003, "cam_scales": [1.0, 0.5, 1.5]},
    "4 epochs, lr 0.002, scales 1/0.5/1.5 (the book's)": {"epochs": 4, "lr": 0.002, "cam_scales": [1.0, 0.5, 1.5]},
}
REUSED_STAGES = {   # stage folder names of the runs made while choosing (scratch runs of the same candidates)
    "3 epochs, lr 0.001, scales 1/0.5/1.5": "cam_e3_s3",
    "3 epochs, lr 0.001, scales 1/0.5": "cam_e3_s2",
    "3 epochs, lr 0.003, scales 1/0.5/1.5": "cam_e3_lr0.003",
    "4 epochs, lr 0.002, scales 1/0.5/1.5 (the book's)": "cam_e4_lr0.002",
}


def entry(rec: dict, order: int, source: str) -> dict:
    m, p = rec["metrics"], rec["params"]
    return {"order": order, "n_train": m.get("cam_count"), "epochs": p["epochs"], "lr": p["lr"],
            "cam_scales": p["cam_scales"], "val_map": round(m["val_map"], 4), "seed_miou": round(m["seed_miou"], 4),
            "best_threshold": m["best_threshold"], "wall_s": rec["wall_time_s"], "cpu_s": rec.get("cpu_time_s"),
            "load_average": rec.get("load_average"), "timings_s": rec.get("timings_s"),
            "git_revision": rec.get("git_revision"), "source": source}


SEGMENTERS = ("ae_segmenter", "psl", "psl_plus_plus", "oracle")


def segmenter_entry(folder: Path, order: int) -> dict:
    """The four segmenters of one whole run (held-out mIoU, training seconds) and their recipe."""
    row: dict = {"order": order}
    for stage in SEGMENTERS:
        rec = read_json(folder / stage / "metrics.json")
        p = rec["params"]
        row.update({"epochs": p["epochs"], "crop": p["crop"], "lr": p["lr"]})
        row[stage] = {"val_miou": round(rec["metrics"]["eval"]["miou"], 4),
                      "train_s": rec["timings_s"].get("train"), "load_average": rec.get("load_average")}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", default="", help="folder of finished candidate runs (<stage>/metrics.json)")
    ap.add_argument("--baseline", default="", help="metrics.json of the previous recipe's CAM stage")
    ap.add_argument("--segmenters", nargs="*", default=[], metavar="LABEL=DIR",
                    help="a whole default-profile run to record the segmenter rows of: LABEL=its artifacts/<profile> "
                         "folder (the segmenter recipe is chosen from full runs, each ~12 minutes)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "book_recipe.json"))
    ap.add_argument("--dry-run", action="store_true", help="print what would be trained or read; train nothing")
    args = ap.parse_args()
    if args.dry_run:
        if args.baseline:
            print(f"baseline: {args.baseline} ({'there' if Path(args.baseline).is_file() else 'not there'})")
        for order, (name, params) in enumerate(CANDIDATES.items(), start=1):
            found = Path(args.reuse) / REUSED_STAGES[name] / "metrics.json" if args.reuse else None
            how = f"read {found}" if found is not None and found.is_file() else \
                f"train the CAM stage {REUSED_STAGES[name]} with {params}"
            print(f"{order}. {name}: {how}")
        for item in args.segmenters:
            label, folder = item.split("=", 1)
            missing = [s for s in SEGMENTERS if not (Path(folder) / s / "metrics.json").is_file()]
            print(f"segmenters {label}: {folder}" + (f" (missing: {', '.join(missing)})" if missing else ""))
        return 0
    out = {"_command": "python benchmarks/book_recipe.py" + (" --reuse DIR" if args.reuse else "")
                       + (" --segmenters " + " ".join(f"'{s.split('=')[0]}=DIR'" for s in args.segmenters)
                          if args.segmenters else ""),
           "_date": time.strftime("%Y-%m-%d")}
    if args.baseline:
        out["previous recipe: 3,000 scenes, 4 epochs, lr 0.001"] = entry(read_json(args.baseline), 0, "baseline")
    for order, (name, params) in enumerate(CANDIDATES.items(), start=1):
        found = Path(args.reuse) / REUSED_STAGES[name] / "metrics.json" if args.reuse else None
        if found is not None and found.exists():
            out[name] = entry(read_json(found), order, "reused (a finished run with these parameters)")
            continue
        common = {"profile": "book-recipe", "seed": 0, "device": "cpu", "artifacts_root": "artifacts",
                  "data_root": "data/scenes-book-recipe"}
        data_stage.run(dict(common), progress=False)
        rec = cam.run({**common, **params, "stage": REUSED_STAGES[name]}, progress=True)
        out[name] = entry(rec, order, "computed")
    for order, item in enumerate(args.segmenters, start=1):
        label, folder = item.split("=", 1)
        out["_segmenters"] = out.get("_segmenters", {})
        out["_segmenters"][label] = segmenter_entry(Path(folder), order)
    if not args.segmenters and Path(args.out).exists():   # keep what an earlier call recorded
        out["_segmenters"] = read_json(args.out).get("_segmenters", {})
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
