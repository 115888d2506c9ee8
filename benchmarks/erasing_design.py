"""The design studies: run a design of benchmarks/designs.yaml for its training seeds, then record it.

Every design is a profile reference ``benchmarks/designs.yaml#NAME`` (a profile that extends
another and states only its changes); seed K of it is that profile with ``--seed K``. For each
(design, seed) this script runs the design's stages (``python -m aepsl.stages --profile
'benchmarks/designs.yaml#NAME' --seed K``; stages already done for the same parameters are
skipped) and, for an erasing study, records per merge stage: the CAM's val mAP and seed mIoU at
its best background threshold, each round's val mAP, region precision and part coverage, and the
merged pseudo masks' mIoU after 1, 2, 3 ... rounds (all on the training scenes, as the book
scores seeds), into benchmarks/erasing_design.json (key ``<design> / seed <K> / <merge stage>``),
which the design appendix reads. Segmenter studies are recorded by benchmarks/psl_design.py.

    .venv/bin/python benchmarks/erasing_design.py --list                        # the designs, one line each
    .venv/bin/python benchmarks/erasing_design.py --design prior-0.2 --seed 1   # run and record one seed
    .venv/bin/python benchmarks/erasing_design.py --design prior-0.2            # every seed of the design
    .venv/bin/python benchmarks/erasing_design.py --all --dry-run               # check every design, run nothing
    .venv/bin/python benchmarks/erasing_design.py --design paper --record-only  # record finished stages only
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.book.tables import ERASING_RECIPE, NUMERICS  # noqa: E402
from aepsl.engine.artifacts import cpu_model, git_revision, load_metrics, read_json, stage_dir, write_json  # noqa: E402
from aepsl.engine.config import ParameterError, load_designs, load_profile, resolve  # noqa: E402
from aepsl.engine.registry import describe, plan  # noqa: E402

DESIGNS = ROOT / "benchmarks" / "designs.yaml"
OUT = ROOT / "benchmarks" / "erasing_design.json"


def design_ref(name: str, designs_file: Path = DESIGNS) -> str:
    """The profile reference of design ``name`` (what ``--profile`` of both runners takes)."""
    try:
        rel = designs_file.resolve().relative_to(ROOT)
    except ValueError:
        rel = designs_file
    return f"{rel}#{name}"


def command(name: str, seed: int) -> str:
    return f"python benchmarks/erasing_design.py --design {name} --seed {seed}"


def _r(x, n=6):   # six decimals: the book shows three, and rounding twice could move the third
    return None if x is None else round(float(x), n)


def recipe(runs, erasing_stage: str) -> dict | None:
    """The erasing recipe of ``erasing_stage`` in a profile's plan: the parameters of
    :data:`aepsl.book.tables.ERASING_RECIPE` in its round-2 run (None when the profile has no such run)."""
    for run in runs:
        if run.entry.notebook == "02_erasing" and run.config.stage == erasing_stage and run.config.round == 2:
            return {k: getattr(run.config, k) for k in ERASING_RECIPE}
    return None


def summarise(profile: str, seed: int | None = None) -> list[dict]:
    """One entry per merge run of ``profile`` (with training seed ``seed``): the CAM it starts
    from, its rounds, its masks. Merges whose stages are not finished are left out."""
    common = load_profile(profile, seed)["common"]
    root = resolve(common.get("artifacts_root", "artifacts"))
    name = common["profile"]
    runs = plan(profile, seed=seed)
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
            "merge_stage": p.get("stage"), "erasing_stage": p.get("erasing_stage"), "profile": name,
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
            "git_revision": merge.get("git_revision"),
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


def record(path: Path, design: str, note: str, entries: dict[str, dict], command: str) -> None:
    """Add (or replace) ``entries`` (key -> entry) in the JSON record at ``path``, each with the
    design's name, note, order, CPU model, date, :data:`aepsl.book.tables.NUMERICS` and command.
    A design recorded again (the same name and training seed, e.g. measured anew after a change of
    the code) replaces its earlier entries and keeps their place in the table."""
    book = read_json(path) if path.exists() else {}
    earlier = {k for k, v in book.items() if not k.startswith("_") and v.get("design") == design}
    for key, e in entries.items():
        order = len(book)
        for old in sorted(k for k in earlier if k in book and book[k].get("seed") == e.get("seed")):
            order = book.pop(old).get("order", order)
        book[key] = {"design": design, "note": note, "order": order, **e, "cpu": cpu_model(),
                     "numerics": NUMERICS, "command": command, "measured_at": time.strftime("%Y-%m-%d"),
                     "git_revision": e.get("git_revision") or git_revision()}
    write_json(path, book)
    print(f"recorded {len(entries)} entries in {path}")


def selected(args, designs: dict) -> list[tuple[str, int]]:
    """The (design, seed) pairs the command line asks for, checked against the designs file."""
    names = [n for n, d in designs.items() if d.get("study")] if args.all else args.design
    unknown = [n for n in names if n not in designs]
    if unknown:
        raise ParameterError(f"unknown design(s) {unknown}; {DESIGNS.name} has {list(designs)}")
    pairs = []
    for name in names:
        seeds = designs[name].get("seeds", [])
        if args.seed is not None:
            if args.seed not in seeds:
                print(f"note: {name} is recorded with seeds {seeds}; running it with seed {args.seed} too")
            seeds = [args.seed]
        if not seeds:
            raise ParameterError(f"design {name!r} has no seeds: it is a base the studies extend, not a study")
        pairs += [(name, k) for k in seeds]
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/erasing_design.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--design", nargs="+", default=[], help="design names of benchmarks/designs.yaml")
    ap.add_argument("--all", action="store_true", help="every design that is a study (those with a 'study')")
    ap.add_argument("--seed", type=int, help="this training seed only (default: every seed the design lists)")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the designs file and every selected run's parameters, print the plan, run nothing")
    ap.add_argument("--record-only", action="store_true", help="record the finished stages, run nothing")
    ap.add_argument("--list", action="store_true", help="list the designs with their seeds and notes, then exit")
    ap.add_argument("--designs", default=str(DESIGNS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT), help="the JSON record (default benchmarks/erasing_design.json)")
    args = ap.parse_args(argv)
    designs_file = Path(args.designs)
    try:
        designs = load_designs(designs_file)
        if args.list:
            for name, d in designs.items():
                print(f"{name:18s} {d.get('study') or 'base':10s} seeds {d.get('seeds', [])}: {d['note']}")
            return 0
        if not args.all and not args.design:
            if not args.dry_run:
                ap.error("give --design NAME ..., --all or --list")
            args.all = True   # a dry run without a design checks every design
        pairs = selected(args, designs)
        for name, seed in pairs:   # every run checked before anything runs
            runs = plan(design_ref(name, designs_file), seed=seed)
            if args.dry_run:
                profile = load_profile(design_ref(name, designs_file), seed)["common"]["profile"]
                print(f"{name}, seed {seed} ({designs[name].get('study')}; stages under artifacts/{profile}/): "
                      f"{len(runs)} runs")
                for line in describe(runs):
                    print("    " + line)
        if args.dry_run:
            print(f"dry run: {len(pairs)} design runs checked, nothing run")
            return 0
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from aepsl.engine.run_stages import run_stages

    for name, seed in pairs:
        ref = design_ref(name, designs_file)
        if not args.record_only:
            print(f"[designs] {name}, seed {seed}: python -m aepsl.stages --profile '{ref}' --seed {seed}", flush=True)
            run_stages(ref, seed=seed)
        if designs[name].get("study") != "erasing":
            print(f"[designs] {name}: a segmenter study, recorded by benchmarks/psl_design.py")
            continue
        entries = summarise(ref, seed)
        show(entries)
        record(Path(args.out), name, designs[name]["note"],
               {f"{name} / seed {seed} / {e['merge_stage']}": e for e in entries}, command(name, seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
