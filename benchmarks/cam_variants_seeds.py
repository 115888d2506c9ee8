"""The CAM-variants comparison over training seeds, read from the seeds study's finished chains.

Every chain of the default profile (``benchmarks/seeds.py``) computes the CAM-variants stage on
its own trained classifier. This script reads, for each training seed asked for, that stage's
record and the chain's erasing rounds, and writes benchmarks/cam_variants_seeds.json: per seed,
each method's seed mIoU and the share of disc and body pixels it finds at its best cut, what it
would mine above the erasing threshold beside what the erasing rounds mined, and the code
revision, CPU and date of the stage that computed them. Where the design
``benchmarks/designs.yaml#variant-segmenter`` was run for a seed (``python -m aepsl.stages
--profile 'benchmarks/designs.yaml#variant-segmenter' --seed K``), the record also holds the
held-out mIoU of the plain segmenter trained on the best variant's seeds, beside the AE segmenter
of the same seed's chain. It runs nothing: a seed whose chain has
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
SEGMENTERS = "benchmarks/designs.yaml#variant-segmenter"


def _values(frame, columns) -> dict:
    return {str(row): {c: (None if frame.loc[row, c] is None else round(float(frame.loc[row, c]), 5))
                       for c in columns if c in frame.columns} for row in frame.index}


def segmenter_entry(design: str, chain: str, seed: int) -> dict | None:
    """The plain segmenter trained on the best variant's seeds (the design ``design``, training seed
    ``seed``) beside the AE segmenter of the same seed's chain of profile ``chain``: the method and
    cut, each segmenter's held-out mIoU, and the code revision and date of the variant's segmenter;
    None when either has not been run."""
    name, root, _ = chain_profile(design, seed)
    seg = load_metrics(root / name / "cam_variant_segmenter")
    variants = load_metrics(root / name / "cam_variants")
    chain_name, chain_root, _ = chain_profile(chain, seed)
    ae = load_metrics(chain_root / chain_name / "ae_segmenter")
    if seg is None or variants is None or ae is None:
        return None
    masks = variants["metrics"].get("masks") or {}
    return {"method": masks.get("label"), "threshold": masks.get("threshold"),
            "variant segmenter": round(seg["metrics"]["eval"]["miou"], 5),
            "AE segmenter": round(ae["metrics"]["eval"]["miou"], 5),
            "git_revision": seg.get("git_revision"), "finished_at": seg.get("finished_at"),
            "artifacts": name}


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
    ap.add_argument("--segmenters", default=SEGMENTERS,
                    help=f"the design whose seeds train a segmenter on the best variant's seeds (default {SEGMENTERS})")
    args = ap.parse_args(argv)
    runs = []
    for seed in args.seeds:
        entry = chain_entry(args.profile, seed)
        if entry is None:
            print(f"seed {seed}: no CAM-variants stage in its chain; run benchmarks/seeds.py --seeds {seed} first",
                  file=sys.stderr)
            continue
        segmenter = segmenter_entry(args.segmenters, args.profile, seed)
        if segmenter is not None:
            entry["segmenter"] = segmenter
        runs.append(entry)
        best = max((k for k in entry["seeds"] if not k.startswith("CAM")), key=lambda k: entry["seeds"][k]["mIoU"])
        print(f"seed {seed}: CAM {entry['seeds']['CAM']['mIoU']:.3f}, best method {best} "
              f"{entry['seeds'][best]['mIoU']:.3f}" + (
                  f"; segmenter on {segmenter['method']} seeds {segmenter['variant segmenter']:.3f}, on the AE masks "
                  f"{segmenter['AE segmenter']:.3f}" if segmenter else ""))
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
