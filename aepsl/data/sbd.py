"""SBD's augmented training set for PASCAL VOC 2012, written into the VOC tree.

The Semantic Boundaries Dataset (Hariharan et al., ICCV 2011; release ``benchmark.tgz``,
folder ``benchmark_RELEASE/dataset``) annotates 11,355 VOC 2011 images (``train.txt``,
``val.txt``, masks in ``cls/<name>.mat``). Every WSSS paper since DeepLab trains on
``train_aug``: SBD train + SBD val + VOC 2012 train, minus VOC 2012 val — 10,582 images.

:func:`prepare` writes, under ``VOCdevkit/VOC2012``:

    ImageSets/Segmentation/train_aug.txt   the 10,582 names, sorted
    SegmentationClassAug/<name>.png        palette masks of train_aug + VOC val: VOC's own
                                           mask where VOC has one, else SBD's
    cls_labels.npy                         {name: float32[20]} image labels from those masks

    python -m aepsl.data.sbd --voc data/VOCdevkit/VOC2012 --sbd data/benchmark_RELEASE

The images themselves are already in VOC 2012's JPEGImages/. Existing masks are kept
unless ``--force``; every file is written atomically.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from ..engine.artifacts import write_bytes
from .voc import AUG_MASK_DIR, IGNORE_INDEX, LABELS_NPY, VOC_CLASSES, VOCTree, write_mask, write_split

__all__ = ["load_sbd_mask", "train_aug_names", "prepare", "main"]


def _sbd_dataset_dir(sbd_root: Path) -> Path:
    for cand in (sbd_root, sbd_root / "dataset", sbd_root / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            return cand
    raise FileNotFoundError(
        f"SBD not found under {sbd_root}: expected a folder cls/ of <name>.mat masks next to train.txt "
        f"and val.txt (benchmark_RELEASE/dataset/ of SBD's benchmark.tgz, "
        f"http://home.bharathh.info/pubs/codes/SBD/download.html)")


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def load_sbd_mask(path: str | Path) -> np.ndarray:
    """The class-index mask (uint8 HxW, 0 = background) of one SBD ``cls/<name>.mat`` file."""
    from scipy.io import loadmat  # scipy comes with scikit-image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBD mask file not found: {path}")
    try:
        gt = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"]
        mask = np.asarray(gt.Segmentation)
    except (KeyError, AttributeError, ValueError, OSError, TypeError) as exc:
        raise ValueError(f"corrupt SBD mask file {path}: expected a struct GTcls with a field "
                         f"Segmentation ({exc})") from None
    if mask.ndim != 2:
        raise ValueError(f"corrupt SBD mask file {path}: Segmentation has shape {mask.shape}")
    bad = (mask >= len(VOC_CLASSES)) & (mask != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f"SBD mask file {path} contains value {int(mask[bad][0])}; VOC has 21 classes")
    return mask.astype(np.uint8)


def train_aug_names(voc_train, voc_val, sbd_train, sbd_val) -> list[str]:
    """(SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted (10,582 names for the real lists)."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def prepare(voc_root: str | Path, sbd_root: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Write train_aug.txt, SegmentationClassAug/ and cls_labels.npy into ``voc_root``."""
    from ..engine.progress import bar

    tree = VOCTree(voc_root)
    sbd = _sbd_dataset_dir(Path(sbd_root).expanduser())
    voc_train, voc_val = tree.ids("train"), tree.ids("val")
    sbd_train, sbd_val = _read_names(sbd / "train.txt"), _read_names(sbd / "val.txt")
    aug = train_aug_names(voc_train, voc_val, sbd_train, sbd_val)
    missing = next((n for n in aug if not tree.image_path(n).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"image file not found: {tree.image_path(missing)} (an SBD image; VOC 2012's "
                                f"JPEGImages/ should hold every SBD image: is {tree.root} VOC2012?)")
    out_dir = tree.root / AUG_MASK_DIR
    labels: dict[str, np.ndarray] = {}
    sources = {"voc": 0, "sbd": 0, "kept": 0}
    for name in bar(list(dict.fromkeys(aug + voc_val)), desc="SegmentationClassAug", disable=not progress,
                    leave=True, unit="images"):
        target = out_dir / f"{name}.png"
        if target.is_file() and not force:
            mask = tree._read_mask(name, target)
            sources["kept"] += 1
        elif tree.mask_path(name).is_file():   # VOC's own annotation (finer, with 255 borders)
            mask = tree.mask(name)
            write_mask(target, mask)
            sources["voc"] += 1
        else:
            mask = load_sbd_mask(sbd / "cls" / f"{name}.mat")
            w, h = tree.image_size(name)
            if mask.shape != (h, w):
                raise ValueError(f"SBD mask file {sbd / 'cls' / (name + '.mat')} is {mask.shape[1]}x{mask.shape[0]} "
                                 f"(WxH) but image file {tree.image_path(name)} is {w}x{h}")
            write_mask(target, mask)
            sources["sbd"] += 1
        present = np.unique(mask)
        present = present[(present != 0) & (present != IGNORE_INDEX)].astype(np.int64)
        vec = np.zeros(len(VOC_CLASSES) - 1, np.float32)
        vec[present - 1] = 1.0
        labels[name] = vec
    buf = io.BytesIO()
    np.save(buf, np.array(labels, dtype=object), allow_pickle=True)
    write_bytes(tree.root / LABELS_NPY, buf.getvalue())
    write_split(tree.root, "train_aug", aug)
    return {"train_aug": len(aug), "val": len(voc_val), "labels": len(labels), "masks": sources}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl.data.sbd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 (JPEGImages/, SegmentationClass/, ImageSets/)")
    ap.add_argument("--sbd", required=True, help="SBD's benchmark_RELEASE (or its dataset/ folder)")
    ap.add_argument("--force", action="store_true", help="rewrite masks that exist already")
    args = ap.parse_args(argv)
    try:
        counts = prepare(args.voc, args.sbd, force=args.force)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote train_aug.txt ({counts['train_aug']} images), {AUG_MASK_DIR}/ ({counts['masks']}) and "
          f"{LABELS_NPY} ({counts['labels']} images) under {args.voc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
