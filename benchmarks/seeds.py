"""The seeds study: run the default chain for several training seeds (and scene sets), record each.

For every (profile, training seed) asked for, this script computes the profile's stages with
``python -m aepsl.stages --profile P --seed K`` (stages already done for the same parameters are
skipped: seed 0 of the default profile is the book's own build) and appends one record per chain
to benchmarks/seeds.json: the chain's numbers (:func:`aepsl.book.lessons.chain_numbers`: val mAP,
CAM, best AE round, random walk, HFPL, AE segmenter, PSL, PSL++, oracle), which lessons held,
the stages' summed wall and CPU seconds (and, for a chain this script ran, the chain's wall time
in units of the fixed reference workload of benchmarks/book_time.py, timed before and after it),
and the code revision, CPU and date that made them.
The book's pages read the newest record of each (label, profile, seed).

    .venv/bin/python benchmarks/seeds.py --seeds 0 1 2                    # the default chain, seeds 0-2
    .venv/bin/python benchmarks/seeds.py --seeds 0 1 2 --label before     # recorded under another label
    .venv/bin/python benchmarks/seeds.py --profile 'benchmarks/designs.yaml#scenes-1' --seeds 0
    .venv/bin/python benchmarks/seeds.py --seeds 0 1 2 --record-only      # record finished chains, run nothing
    .venv/bin/python benchmarks/seeds.py --seeds 0 1 --dry-run            # check every run's parameters

Run nothing else meanwhile when the times matter: the record keeps the load beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.book.lessons import LESSONS, chain_numbers  # noqa: E402
from aepsl.engine.artifacts import cpu_model, current_metrics_files, git_revision, read_json, write_json  # noqa: E402
from aepsl.engine.config import ParameterError, load_profile, resolve  # noqa: E402
from aepsl.engine.registry import plan  # noqa: E402

OUT = ROOT / "benchmarks" / "seeds.json"


def command(profile: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "aepsl.stages", "--profile", profile, "--seed", str(seed), "--no-progress"]


def chain_profile(profile: str, seed: int) -> tuple[str, Path, dict]:
    """(profile name the chain writes under, artifacts root, the resolved profile)."""
    data = load_profile(profile, seed)
    common = data["common"]
    return common["profile"], resolve(common.get("artifacts_root", "artifacts")), data


def reference_seconds() -> float | None:
    """The reference workload of benchmarks/book_time.py (the faster of two fresh processes)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from book_time import reference_seconds as timed

    return timed(repeats=2)


def chain_record(profile: str, seed: int, label: str) -> dict:
    """The record of a finished chain: its numbers, lessons, times and provenance."""
    name, root, data = chain_profile(profile, seed)
    numbers = chain_numbers(root, name)
    stages = [read_json(p) for p in current_metrics_files(root / name)]
    loads = [s.get("load_average") or {} for s in stages]
    data_seed = (data["notebooks"].get("00_data") or {}).get("seed", data["common"].get("seed", 0))
    return {"label": label, "profile": profile, "artifacts": name, "seed": seed, "data_seed": data_seed,
            "data_root": data["common"].get("data_root"),
            "numbers": numbers, "lessons": {lesson: check(numbers) for lesson, check in LESSONS},
            "stages_wall_s": round(sum(s.get("wall_time_s") or 0 for s in stages), 1),
            "stages_cpu_s": round(sum(s.get("cpu_time_s") or 0 for s in stages), 1),
            "load_max": max([v for ld in loads for v in ld.values() if v is not None] or [None], key=lambda v: v or 0),
            "stage_revisions": sorted({s.get("git_revision") for s in stages if s.get("git_revision")}),
            "git_revision": git_revision(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "command": " ".join(["python benchmarks/seeds.py", "--profile", profile, "--seeds", str(seed)]),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def append(path: Path, record: dict) -> None:
    runs = read_json(path)["runs"] if path.exists() else []
    write_json(path, {"runs": runs + [record]})


def newest(path: Path = OUT, label: str | None = None, profile: str | None = None) -> dict[tuple, dict]:
    """The newest record of each (label, profile, seed) in ``path`` (optionally one label / profile)."""
    if not Path(path).exists():
        return {}
    out: dict[tuple, dict] = {}
    for r in read_json(path)["runs"]:
        if (label is None or r["label"] == label) and (profile is None or r["profile"] == profile):
            out[(r["label"], r["profile"], r["seed"])] = r
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", help="profile name or reference (default: default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default 0-4)")
    ap.add_argument("--label", default="book", help="the study's name in the record (default: book)")
    ap.add_argument("--record", default=str(OUT), help="the record file (default benchmarks/seeds.json)")
    ap.add_argument("--record-only", action="store_true", help="record the finished chains; run nothing")
    ap.add_argument("--dry-run", action="store_true", help="check every run's parameters; run and record nothing")
    args = ap.parse_args(argv)
    for seed in args.seeds:
        name, root, _ = chain_profile(args.profile, seed)
        cmd = command(args.profile, seed)
        if args.dry_run:   # what `python -m aepsl.stages --check` checks, in this process
            try:
                runs = plan(args.profile, seed=seed)
            except (ParameterError, FileNotFoundError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"seed {seed}: {' '.join(cmd[1:])} -> {root / name} ({len(runs)} runs, parameters checked)")
            continue
        timing = {}
        if not args.record_only:
            print(f"[seeds] {args.profile} seed {seed} -> {root / name}", flush=True)
            before, t0 = reference_seconds(), time.time()
            res = subprocess.run(cmd, cwd=ROOT)
            wall = time.time() - t0
            if res.returncode:
                print(f"[seeds] {' '.join(cmd[1:])} failed (exit {res.returncode}); nothing recorded", file=sys.stderr)
                return res.returncode
            after = reference_seconds()
            refs = [r for r in (before, after) if r]
            timing = {"chain_wall_s": round(wall, 1), "reference_s": {"before": before, "after": after},
                      "reference_units": round(wall / (sum(refs) / len(refs)), 1) if refs else None}
        record = {**chain_record(args.profile, seed, args.label), **timing}
        append(Path(args.record), record)
        held = sum(1 for v in record["lessons"].values() if v)
        print(f"[seeds] {args.profile} seed {seed}: {json.dumps({k: v for k, v in record['numbers'].items() if k != 'AE rounds'}, default=str)}; "
              f"{held}/{len(record['lessons'])} lessons held", flush=True)
    if args.dry_run:
        print(f"dry run: {len(args.seeds)} chains checked, nothing run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
