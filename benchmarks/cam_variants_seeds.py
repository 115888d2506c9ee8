"""The CAM-variants comparison over training seeds, read from the seeds study's finished chains.

Every chain of the default profile (``benchmarks/seeds.py``) computes the CAM-variants stage on
its own trained classifier. This script reads, for each training seed asked for, that stage's
record and the chain's erasing rounds, and writes benchmarks/cam_variants_seeds.json: per seed,
each method's seed mIoU and the share of disc and body pixels it finds at its best cut, what it
would mine above the erasing threshold beside what the erasing rounds mined, and the code
revision, CPU and date of the stage that computed them. It runs nothing: a seed whose chain has
not been run is reported and left out. The CAM-variants chapter reads the record.

    .venv/bin/python benchmarks/cam_variants_seeds.py                   # training seeds 0-4
    .venv/bin/python benchmarks/cam_variants_seeds.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from aepsl.book import tables  # noqa: E402
from aepsl.engine.artifacts import load_metrics, write_json  # noqa: E402
from seeds import chain_profile  # noqa: E402

OUT = ROOT / "benchmarks" / "cam_variants_seeds.json"


def _values(frame, columns) -> dict:
    return {str(row): {c: (None if frame.loc[row, c] is None else round(float(frame.loc[row, c]), 5))
                       for c in columns if c in frame.columns} for row in frame.index}


def chain_entry(profile: str, seed: int) -> dict | None:
    """The CAM-variants numbers of one finished chain (None when it has no CAM-variants stage)."""
    name, root, data = chain_profile(profile, seed)
    record = load_metrics(root / name / "cam_variants")
    if record is None:
        return None
    data_root = data["common"].get("data_root")
    seeds = tables.cam_variants_table(record)
    mining, cut = tables.cam_variants_mining_table(record, root, name, data_root)
    return {"seed": seed, "profile": profile, "artifacts": name, "images": record["metrics"]["images"],
            "order": [str(k) for k in seeds.index] + [str(k) for k in mining.index if k not in seeds.index],
            "seeds": _values(seeds, ["mIoU", "t", "disc", "body"]),
            "mining_threshold": cut, "mining": _values(mining, ["disc", "body", "images"]),
            "git_revision": record.get("git_revision"), "cpu": (record.get("host") or {}).get("cpu"),
            "finished_at": record.get("finished_at")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", help="profile name or reference (default: default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default 0-4)")
    ap.add_argument("--record", default=str(OUT), help=f"the record file (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    runs = []
    for seed in args.seeds:
        entry = chain_entry(args.profile, seed)
        if entry is None:
            print(f"seed {seed}: no CAM-variants stage in its chain; run benchmarks/seeds.py --seeds {seed} first",
                  file=sys.stderr)
            continue
        runs.append(entry)
        best = max((k for k in entry["seeds"] if not k.startswith("CAM")), key=lambda k: entry["seeds"][k]["mIoU"])
        print(f"seed {seed}: CAM {entry['seeds']['CAM']['mIoU']:.3f}, best method {best} "
              f"{entry['seeds'][best]['mIoU']:.3f}")
    if not runs:
        print("no chain had a CAM-variants stage; nothing written", file=sys.stderr)
        return 1
    write_json(Path(args.record), {
        "command": "python benchmarks/cam_variants_seeds.py --profile " + args.profile + " --seeds "
                   + " ".join(str(s) for s in args.seeds),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": runs})
    print(f"{len(runs)} seeds written to {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
