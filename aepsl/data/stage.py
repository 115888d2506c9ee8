"""The data stage (``notebooks/00_data.py``): make or check the dataset, record its statistics."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..engine.config import hashed_params, resolve, runtime
from ..engine.stage import stage
from .scenes import SceneConfig, generate
from .voc import VOCTree, check_tree


@dataclass
class DataConfig(SceneConfig):
    """Scene-generator parameters plus the run's common ones.

    ``source: voc`` generates nothing: it checks an existing VOC-format tree at ``data_root``
    (every listed image present; every image of a split other than test labelled, so a
    missing SBD part is reported here, naming what is missing and where it comes from).
    """

    profile: str = "default"   # parameter profile name; outputs go to artifacts_root/profile/stage
    device: str = "auto"   # torch device: auto (CUDA when available, else CPU), cpu or cuda
    artifacts_root: str = "artifacts"   # folder of all stage outputs, relative to the repository root
    mask_dir: str = "SegmentationClass"   # subfolder of data_root holding the ground-truth mask PNGs
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def validate(self) -> None:
        if self.source != "voc":
            super().validate()

    def hashed(self) -> dict:
        return hashed_params(self)

    def writes(self) -> str:
        return "data"

    def reads(self) -> list[str]:
        return []


def dataset_statistics(tree: VOCTree, split: str) -> dict:
    """Per-class image counts and pixel fractions, items per image, image sizes.

    It reads every image, mask and label of the split, so a corrupt file, a mask of another
    size than its image or a label naming an unknown class stops the data stage with one
    message naming the file, before any training.
    """
    names = tree.ids(split)
    c = tree.num_classes
    images_with = np.zeros(c - 1, np.int64)
    pixels = np.zeros(c + 1, np.int64)  # last bin: ignore
    per_image = []
    sizes = set()
    for n in names:
        tree.image(n)   # decodes the whole file: a truncated JPEG fails here
        lab = tree.labels(n)
        images_with += lab > 0.5
        per_image.append(int((lab > 0.5).sum()))
        if tree.mask_path(n).is_file():
            m = tree.mask(n)
            sizes.add(m.shape)
            pixels += np.bincount(np.where(m == 255, c, m).ravel(), minlength=c + 1)
    total = max(int(pixels.sum()), 1)
    return {
        "images": len(names),
        "images_per_class": {cls: int(k) for cls, k in zip(tree.classes[1:], images_with)},
        "pixel_fraction": {cls: round(float(p) / total, 5) for cls, p in zip(tree.classes + ["ignore"], pixels)},
        "classes_per_image": {str(k): per_image.count(k) for k in sorted(set(per_image))},
        "mask_sizes": sorted(list(s) for s in sizes)[:5],
    }


def _data_present(cfg: DataConfig) -> bool:
    return (resolve(cfg.data_root) / "JPEGImages").exists()


@stage(DataConfig, "data", dataset=False, ready=_data_present)
def run(cfg: DataConfig, run_, device, progress: bool) -> dict:
    """Generate the scenes (or check a VOC tree) and write the data stage's metrics.json."""
    generated = None
    if cfg.source != "voc":
        scene_cfg = SceneConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SceneConfig)})
        scene_cfg.data_root = str(resolve(cfg.data_root))
        with run_.timed("generate"):
            generated = generate(scene_cfg, force=cfg.force, progress=progress)
    tree = VOCTree(resolve(cfg.data_root), mask_dir=cfg.mask_dir)
    split_sizes = None
    if cfg.source == "voc":
        with run_.timed("check"):
            splits = tree.splits()
            if not {"train", "val"} <= set(splits):
                raise FileNotFoundError(f"{tree.split_dir} must hold train.txt and val.txt (it holds "
                                        f"{splits or 'nothing'}); for PASCAL VOC point data_root at VOCdevkit/VOC2012")
            split_sizes = check_tree(tree, splits, labelled=[s for s in splits if s != "test"])
    with run_.timed("statistics"):
        described = ("train", "val") if cfg.source == "voc" else ("train", "val", "test")  # VOC test: no labels
        stats = {split: dataset_statistics(tree, split) for split in tree.splits() if split in described}
    return {"classes": tree.classes, "splits": stats, "generator": generated, "split_sizes": split_sizes}
