"""Designs tried for the embedded default: scenes and erasing recipes, and whether erasing finds more object.

Each design is a stage profile (a YAML file of runs: data, CAM, erasing rounds, merges) run with
``python -m aepsl.stages --profile FILE``; this script then reads the finished stages' metrics and
records, per erasing stage: the CAM's val mAP and seed mIoU at its best background threshold,
each round's val mAP, region precision and part coverage, and the merged pseudo masks' mIoU
after 1, 2, 3 rounds (all on the training scenes, as the book scores seeds).

    .venv/bin/python -m aepsl.stages --profile benchmarks/designs/parts.yaml
    .venv/bin/python benchmarks/erasing_design.py --profile benchmarks/designs/parts.yaml \\
        --design "parts, warm + mixed" --note "what changed and why"

Records go to benchmarks/erasing_design.json (one entry per design and merge stage), which the
data chapter shows as a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.engine.artifacts import cpu_model, load_metrics, read_json, stage_dir, write_json  # noqa: E402
from aepsl.engine.config import load_profile, resolve  # noqa: E402
from aepsl.engine.registry import plan  # noqa: E402
from aepsl.book.tables import ERASING_RECIPE, NUMERICS  # noqa: E402

OUT = ROOT / "benchmarks" / "erasing_design.json"


def _r(x, n=6):   # six decimals: the book shows three, and rounding twice could move the third
    return None if x is None else round(float(x), n)


def recipe(runs, erasing_stage: str) -> dict | None:
    """The erasing recipe of ``erasing_stage`` in a profile's plan: the parameters of
    :data:`aepsl.book.tables.ERASING_RECIPE` in its round-2 run (None when the profile has no such run)."""
    for run in runs:
        if run.entry.notebook == "02_erasing" and run.config.stage == erasing_stage and run.config.round == 2:
            return {k: getattr(run.config, k) for k in ERASING_RECIPE}
    return None


def summarise(profile: str) -> list[dict]:
    """One entry per merge run of ``profile``: the CAM it starts from, its rounds, its masks."""
    common = load_profile(profile)["common"]
    root = resolve(common.get("artifacts_root", "artifacts"))
    name = common["profile"]
    runs = plan(profile)
    data = next((r for r in runs if r.entry.notebook == "00_data"), None)
    out = []
    for run in runs:
        if run.entry.notebook != "03_pseudo_masks":
            continue
        p = dataclasses.asdict(run.config)
        merge = load_metrics(stage_dir(root, name, p["stage"]))
        cam = load_metrics(stage_dir(root, name, p["cam_stage"]))
        if merge is None or cam is None:
            print(f"skipping {run.name}: not finished")
            continue
        rounds = []
        for k in range(1, len(merge["metrics"].get("per_rounds", [])) + 1):
            rec = load_metrics(stage_dir(root, name, p["erasing_stage"]) / f"round{k}")
            m = rec["metrics"]
            rounds.append({"round": k, "val_map": _r(m.get("val_map")), "train_map": _r(m.get("train_map")),
                           "region_precision": _r(m.get("region_precision")),
                           "part_coverage": m.get("part_coverage"),
                           "init": rec["params"].get("init"), "clean_fraction": rec["params"].get("clean_fraction"),
                           "epochs": m.get("epochs"), "wall_time_s": rec.get("wall_time_s")})
        cm = cam["metrics"]
        per = [_r(r["miou"]) for r in merge["metrics"].get("per_rounds", [])]
        out.append({
            "merge_stage": p.get("stage"), "erasing_stage": p.get("erasing_stage"),
            "scenes": {k: getattr(data.config, k, None) for k in ("image_size", "item_size", "part_size", "max_items",
                                                                  "class_hue", "n_train", "seed")} if data else None,
            "seed": common.get("seed"),
            "cam": {"val_map": _r(cm.get("val_map")), "seed_miou": _r(cm.get("seed_miou")),
                    "best_threshold": cm.get("best_threshold"), "wall_time_s": cam.get("wall_time_s"),
                    "epochs": cam["params"].get("epochs")},
            "recipe": recipe(runs, p["erasing_stage"]),
            "rounds": rounds,
            "ae_miou_per_rounds": per,
            "ae_best": max(per) if per else None,
            "ae_best_minus_cam": _r(max(per) - cm["seed_miou"]) if per else None,
        })
    return out


def show(entries: list[dict]) -> None:
    for e in entries:
        print(f"{e['merge_stage']}: CAM val mAP {e['cam']['val_map']} seed {e['cam']['seed_miou']} "
              f"(t={e['cam']['best_threshold']}); AE per rounds {e['ae_miou_per_rounds']} "
              f"best-CAM {e['ae_best_minus_cam']}")
        for r in e["rounds"]:
            print(f"   round {r['round']}: val mAP {r['val_map']} train mAP {r['train_map']} precision "
                  f"{r['region_precision']} parts {r['part_coverage']} ({r['wall_time_s']} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="the design's stage profile (YAML)")
    ap.add_argument("--design", help="record under this name (without it: print only)")
    ap.add_argument("--note", default="", help="what the design changes, one line")
    ap.add_argument("--backfill-recipes", action="store_true",
                    help="add the recipe field to records made before it, from the design file each record's "
                         "command names (nothing else changes), then exit")
    args = ap.parse_args()
    if args.backfill_recipes:
        return backfill_recipes(OUT)
    entries = summarise(args.profile)
    show(entries)
    if args.design:
        record(OUT, args.design, args.note, {f"{args.design} / {e['merge_stage']}": e for e in entries},
               f"python -m aepsl.stages --profile {args.profile}")
    return 0


def backfill_recipes(path: Path) -> int:
    """Give every record without a ``recipe`` the one its design file (``--profile`` in its
    command) plans for its erasing stage; records whose file is gone keep none."""
    book = read_json(path)
    done = 0
    for key, e in book.items():
        if key.startswith("_") or e.get("recipe") is not None:
            continue
        parts = e.get("command", "").split("--profile ")
        design_file = ROOT / parts[1].split()[0] if len(parts) > 1 else None
        if design_file is None or not design_file.exists():
            print(f"{key}: no design file, left without a recipe")
            continue
        e["recipe"] = recipe(plan(str(design_file)), e["erasing_stage"])
        done += e["recipe"] is not None
    write_json(path, book)
    print(f"recipes added to {done} records of {path.relative_to(ROOT)}")
    return 0


def record(path: Path, design: str, note: str, entries: dict[str, dict], command: str) -> None:
    """Add (or replace) ``entries`` (key -> entry) in the JSON record at ``path``, each with the
    design's name, note, order, CPU model, :data:`aepsl.book.tables.NUMERICS` and command. A design
    recorded again (the same name and training seed, e.g. measured anew after a change of the
    code, or read from another profile that runs it) replaces its earlier entries and keeps their
    place in the table."""
    book = read_json(path) if path.exists() else {}
    earlier = {k for k, v in book.items() if not k.startswith("_") and v.get("design") == design}
    for key, e in entries.items():
        order = len(book)
        for old in sorted(k for k in earlier if k in book and book[k].get("seed") == e.get("seed")):
            order = book.pop(old).get("order", order)
        book[key] = {"design": design, "note": note, "order": order, **e, "cpu": cpu_model(),
                     "numerics": NUMERICS, "command": command}
    write_json(path, book)
    print(f"recorded {len(entries)} entries in {path}")


if __name__ == "__main__":
    raise SystemExit(main())
