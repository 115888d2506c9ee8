"""Would a guard on PSL++'s labels help? (a benchmark, not a test; read-only)

    .venv/bin/python benchmarks/crf_label_guard.py default default_seed1 default_seed2

PSL++ trains on PSL's training-set predictions refined by the dense CRF (``<profile>/psl/train_crf``).
On training seed 2 the CRF shrank weak t-shirt predictions into background, and PSL++ learnt to call
t-shirts background. The guard tried here: where the CRF keeps less than ``--keep`` of the pixels PSL
predicted for a class the image is labelled with, keep PSL's pixels of that class. For each profile
this scores, against the true training masks, PSL's predictions, the CRF-refined labels and the
guarded labels (IoU per class and mIoU; 255 is ignored). It reads saved PNGs and writes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def guarded(pred: np.ndarray, crf: np.ndarray, labels, keep: float) -> np.ndarray:
    """``crf`` with PSL's pixels put back for each labelled class the CRF kept less than ``keep`` of."""
    out = crf.copy()
    for c in set(np.unique(pred).tolist()) & set(labels):
        if c not in (0, 255) and (crf == c).sum() < keep * (pred == c).sum():
            out[pred == c] = c
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", help="artifact profiles with a finished psl stage (artifacts/<profile>/psl)")
    ap.add_argument("--data-root", default="data/scenes-default")
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--keep", type=float, default=0.5, help="share of PSL's pixels of a class below which the guard acts")
    args = ap.parse_args()
    data = ROOT / args.data_root
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
