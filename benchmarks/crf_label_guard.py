"""Would a guard on PSL++'s labels help? (a benchmark, not a test; read-only)

    .venv/bin/python benchmarks/crf_label_guard.py default --seeds   # the book and its other training seeds
    .venv/bin/python benchmarks/crf_label_guard.py default --dry-run # check the inputs, score nothing

PSL++ trains on PSL's training-set predictions refined by the dense CRF (``<profile>/psl/train_crf``).
On training seed 2 the CRF shrank weak t-shirt predictions into background, and PSL++ learnt to call
t-shirts background. The guard tried here: where the CRF keeps less than ``--keep`` of the pixels PSL
predicted for a class the image is labelled with, keep PSL's pixels of that class. For each profile
this scores, against the true training masks, PSL's predictions, the CRF-refined labels and the
guarded labels (IoU per class and mIoU; 255 is ignored). It reads saved PNGs and writes nothing.
With ``--seeds``, each profile's runs with other training seeds (``python -m aepsl --profile P
--seed K``, found by their records) are scored too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def guarded(pred: np.ndarray, crf: np.ndarray, labels, keep: float) -> np.ndarray:
    """``crf`` with PSL's pixels put back for each labelled class the CRF kept less than ``keep`` of."""
    out = crf.copy()
    for c in set(np.unique(pred).tolist()) & set(labels):
        if c not in (0, 255) and (crf == c).sum() < keep * (pred == c).sum():
            out[pred == c] = c
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="*", default=["default"],
                    help="artifact profiles with a finished psl stage (artifacts/<profile>/psl; default: default)")
    ap.add_argument("--seeds", action="store_true", help="also each profile's runs with other training seeds (--seed K)")
    ap.add_argument("--data-root", default="data/scenes-default")
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--keep", type=float, default=0.5, help="share of PSL's pixels of a class below which the guard acts")
    ap.add_argument("--dry-run", action="store_true", help="check the inputs and list what would be scored, score nothing")
    args = ap.parse_args(argv)
    if args.seeds:
        from aepsl.engine.config import seed_runs

        args.profiles = [name for p in args.profiles
                         for name in [p] + [f.name for f in seed_runs(ROOT / args.artifacts, p).values()]]
    data = ROOT / args.data_root
    if args.dry_run:
        missing = [str(p) for p in (data / "classes.txt", data / "image_labels.json") if not p.exists()]
        for profile in args.profiles:
            folder = ROOT / args.artifacts / profile / "psl" / "train_crf"
            n = len(list(folder.glob("*.png")))
            print(f"{profile}: {n} CRF-refined training labels in {folder}" + ("" if n else " (run its psl stage first)"))
        print(f"data {data}: " + (f"missing {missing}" if missing else "classes and image labels found"))
        print("dry run: nothing scored")
        return 0
    classes = [line.strip() for line in (data / "classes.txt").read_text().splitlines() if line.strip()]
    image_labels = json.loads((data / "image_labels.json").read_text())
    k = len(classes)
    for profile in args.profiles:
        psl = ROOT / args.artifacts / profile / "psl"
        names = sorted(p.stem for p in (psl / "train_crf").glob("*.png"))
        if not names:
            print(f"{profile}: no {psl / 'train_crf'}: run its psl stage first", file=sys.stderr)
            return 1
        conf = {kind: np.zeros((k, k), np.int64) for kind in ("PSL", "CRF", "guarded")}
        for name in names:
            gt = np.array(Image.open(data / "SegmentationClass" / f"{name}.png")).astype(np.int64)
            pred = np.array(Image.open(psl / "train_pred" / f"{name}.png")).astype(np.int64)
            crf = np.array(Image.open(psl / "train_crf" / f"{name}.png")).astype(np.int64)
            valid = gt != 255
            for kind, x in (("PSL", pred), ("CRF", crf), ("guarded", guarded(pred, crf, image_labels[name], args.keep))):
                conf[kind] += np.bincount(gt[valid] * k + x[valid], minlength=k * k).reshape(k, k)
        print(f"{profile} ({len(names)} training images)")
        for kind, c in conf.items():
            iou = np.diag(c) / np.maximum(c.sum(0) + c.sum(1) - np.diag(c), 1)
            print(f"  {kind:8s} mIoU {iou.mean():.3f}  " + "  ".join(f"{n} {v:.3f}" for n, v in zip(classes, iou)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
