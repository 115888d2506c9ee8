"""The data stage (``notebooks/00_data.py``): make or check the dataset, record its statistics."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..artifacts import StageRun, code_hash, is_done, load_metrics, stage_entry, stage_dir
from ..config import from_params, resolve
from .scenes import SceneConfig, generate
from .voc import VOCTree, check_tree


@dataclass
class DataConfig(SceneConfig):
    """Scene-generator parameters plus the run's common ones.

    ``source: voc`` generates nothing: it checks an existing VOC-format tree at ``data_root``
    (every listed image present; every image of a split other than test labelled, so a
    missing SBD part is reported here, naming what is missing and where it comes from).
    """

    profile: str = "default"
    device: str = "auto"
    artifacts_root: str = "artifacts"
    mask_dir: str = "SegmentationClass"
    force: bool = False

    def validate(self) -> None:
        if self.source != "voc":
            super().validate()


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


@stage_entry
def run(params: dict, progress: bool = True) -> dict:
    """Generate the scenes (or check a VOC tree) and write the data stage's metrics.json."""
    cfg = from_params(DataConfig, params, "data")
    folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, "data")
    hashed = {**dataclasses.asdict(cfg), "code": code_hash(__name__)}
    hashed.pop("force")
    if not cfg.force and is_done(folder, hashed) and (resolve(cfg.data_root) / "JPEGImages").exists():
        return load_metrics(folder)
    run_ = StageRun(folder, "data", hashed)
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
    run_.metrics = {"classes": tree.classes, "splits": stats, "generator": generated, "split_sizes": split_sizes}
    return run_.finish()
