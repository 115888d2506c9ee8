"""Later CAM methods on the CAM stage's classifier, through the ``grad-cam`` library.

CAM lights up the part of an object that tells its class. Grad-CAM, Grad-CAM++, Score-CAM,
LayerCAM, Ablation-CAM and Eigen-CAM were made to give fuller maps from the same network. This
stage computes each with the PyPI library ``grad-cam`` (import name ``pytorch_grad_cam``) at the
classifier's stride-8 features (the backbone's output), for the labelled classes of the first
``max_images`` images of the CAM stage's score split, and scores them as the CAM stage scores
its own maps: normalised so that each class map peaks at 1, cut against a constant background
at every threshold of the CAM stage's sweep, mIoU with the ignore label left out
(:func:`aepsl.methods.metrics.threshold_sweep`). On scenes with part maps it also measures the
share of disc and of body pixels each method gives the right class above every threshold (as
:func:`aepsl.methods.erasing.part_coverage` does for the CAM).

Two baselines are scored on the same images: the CAM stage's saved maps (its scales and flips)
and the plain CAM of this stage's scales, inferred by :func:`aepsl.methods.cam.labelled_cams`.
On a GAP classifier Grad-CAM's channel weights are the CAM's own (each class score is the
spatial mean of the class map, so its gradient is the same at every pixel): the two maps agree
to float rounding, which the tests check.

Entry point :func:`run` (``notebooks/01_cam_variants.py``) writes ``artifacts/<profile>/<stage>/``:

    figure.npz     the maps of every method for the first ``figure_images`` scored images
    masks/         with ``masks_method``: that method's seeds of every training image, cut at its
                   best threshold, as palette PNGs (labels for a segmenter stage)
    metrics.json   per method: the sweep, the best threshold and its scores, the part coverage;
                   the seconds each method took are the record's ``timings_s``

The library downloads nothing: its methods only hook the given network, whose weights are the
CAM stage's.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .cam import CAMConfig, labelled_cams, load_model, normalise_cams
from .erasing import PartMeter, mine_regions, part_map
from .seedmaps import load_cam
from ..data.transforms import normalize
from ..data.voc import SegDataset, VOCTree, write_mask
from ..engine.artifacts import stage_dir, write_bytes
from ..engine.config import StageConfig, resolve, runtime
from ..engine.stage import fresh_dir, scored_names, stage
from ..engine.train import inference_loader
from ..models.fold import fold_batchnorm

# name -> (class of pytorch_grad_cam, what a page calls it, whether it needs gradients)
METHODS = {
    "gradcam": ("GradCAM", "Grad-CAM", True),
    "gradcam++": ("GradCAMPlusPlus", "Grad-CAM++", True),
    "scorecam": ("ScoreCAM", "Score-CAM", False),
    "layercam": ("LayerCAM", "LayerCAM", True),
    "ablationcam": ("AblationCAM", "Ablation-CAM", False),
    "eigencam": ("EigenCAM", "Eigen-CAM", False),
}
# the two maps every run scores beside the methods: the CAM stage's saved maps, and the plain
# CAM at this stage's scales (the book's own inference)
SAVED_CAM, PLAIN_CAM = "cam_stage", "cam"
BASELINE_LABELS = {SAVED_CAM: "CAM (saved)", PLAIN_CAM: "CAM"}


def label(method: str) -> str:
    """What a page calls ``method`` (a key of :data:`METHODS` or a baseline)."""
    return BASELINE_LABELS.get(method) or METHODS[method][1]


@dataclass
class CAMVariantsConfig(StageConfig):
    """Parameters of the CAM-variants stage (``notebooks/01_cam_variants.py``)."""

    stage: str = "cam_variants"   # stage name: the output folder under artifacts_root/profile
    cam_stage: str = "cam"   # CAM stage whose classifier every method explains, and whose maps are scored beside them
    methods: list = field(default_factory=lambda: list(METHODS))   # methods of grad-cam computed: gradcam, gradcam++, scorecam, layercam, ablationcam, eigencam
    max_images: int = 24   # images of the CAM stage's score split scored, the first N in the split's order (0: all; Score-CAM costs seconds per image on a CPU)
    cam_scales: list = field(default_factory=lambda: [1.0])   # image scales whose maps are averaged, for every method and the plain CAM (positive)
    cam_flip: bool = False   # also average the maps of the horizontally flipped images
    figure_images: int = 4   # scored images whose maps of every method are saved for the page's figure
    masks_method: str = ""   # method whose seeds, cut at its best threshold, are written as masks/ for every training image (a segmenter's labels): one of methods, best (the highest mIoU), or empty: none
    batch_size: int = runtime(8)   # images per call of the library
    score_batch_size: int = runtime(32)   # masked or ablated copies per forward pass of Score-CAM and Ablation-CAM
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"parameter methods must list distinct names among {list(METHODS)}, got {self.methods}")
        if self.max_images < 0:
            raise ValueError(f"parameter max_images must be >= 0 (0: all images), got {self.max_images}")
        if self.figure_images < 0:
            raise ValueError(f"parameter figure_images must be >= 0, got {self.figure_images}")
        if not self.cam_scales or any(not isinstance(s, (int, float)) or s <= 0 for s in self.cam_scales):
            raise ValueError(f"parameter cam_scales must be positive numbers, got {self.cam_scales}")
        if self.masks_method not in ("", "best", *self.methods):
            raise ValueError(f"parameter masks_method must be empty, 'best' or one of methods {self.methods}, "
                             f"got {self.masks_method!r}")
        if self.batch_size < 1 or self.score_batch_size < 1:
            raise ValueError(f"parameters batch_size and score_batch_size must be >= 1, "
                             f"got {self.batch_size}, {self.score_batch_size}")

    def writes(self) -> str:
        return self.stage

    def reads(self) -> list[str]:
        return [self.cam_stage]


# --------------------------------------------------------------------------- the library's maps
def explainer(method: str, model: torch.nn.Module, score_batch_size: int = 32):
    """The ``pytorch_grad_cam`` object of ``method`` for ``model`` (a CAM classifier taking
    normalised images), hooked on the backbone's stride-8 output."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, METHODS[method][0])
    layers = [model.backbone]
    if method == "ablationcam":
        return cls(model=model, target_layers=layers, batch_size=score_batch_size)
    obj = cls(model=model, target_layers=layers)
    if method == "scorecam":
        obj.batch_size = score_batch_size   # the library's Score-CAM reads this attribute
    return obj


def release(obj) -> None:
    """Remove the library's hooks from the network."""
    obj.activations_and_grads.release()


def _library_maps(obj, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """One library call: maps [P,h,w] in [0, 1] of image rows ``x`` [P,3,h,w] for classes
    ``classes`` (0-based logit indices). The library's own progress bars are kept off the output."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(c) for c in classes]
    with contextlib.redirect_stderr(io.StringIO()):
        out = obj(input_tensor=x, targets=targets)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def variant_cams(obj, images: torch.Tensor, labels: torch.Tensor, scales, flip: bool) -> list[np.ndarray]:
    """Normalised maps of each image's labelled classes, one float16 array [K,H,W] per image (as
    :func:`aepsl.methods.cam.labelled_cams` gives the CAMs): the library's map of every scale
    (and mirror image) resized to HxW and summed, each class map then divided by its maximum."""
    b, _, h, w = images.shape
    rows = [(i, int(c)) for i, row in enumerate(labels.cpu()) for c in torch.nonzero(row > 0.5).flatten()]
    if not rows:
        return [np.zeros((0, h, w), np.float16) for _ in range(b)]
    index = torch.tensor([i for i, _ in rows], device=images.device)
    classes = [c for _, c in rows]
    x0 = normalize(images)[index]
    total = torch.zeros(len(rows), h, w)
    for s in scales:
        x = x0 if s == 1 else F.interpolate(x0, scale_factor=float(s), mode="bilinear", align_corners=False)
        for mirrored in ((False, True) if flip else (False,)):
            maps = _library_maps(obj, x.flip(-1) if mirrored else x, classes)
            maps = maps.flip(-1) if mirrored else maps
            if maps.shape[-2:] != (h, w):
                maps = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            total += maps
    cams = normalise_cams(total[None])[0].half().numpy()
    counts = [sum(1 for i, _ in rows if i == k) for k in range(b)]
    return np.split(cams, np.cumsum(counts)[:-1])


# --------------------------------------------------------------------------- scoring
class PartSweep:
    """The share of disc and of body pixels given the right class above each threshold: one
    :class:`aepsl.methods.erasing.PartMeter` per threshold, fed the regions a round would mine."""

    def __init__(self, thresholds):
        self.thresholds = list(thresholds)
        self.meters = [PartMeter() for _ in self.thresholds]
        self.images = 0

    def update(self, parts: np.ndarray, cams: np.ndarray, ids: np.ndarray, gt: np.ndarray) -> None:
        for t, meter in zip(self.thresholds, self.meters):
            meter.update(parts, mine_regions(cams, ids, t), None, gt)
        self.images += 1

    def summary(self) -> dict | None:
        if not self.images:
            return None
        out = {"thresholds": self.thresholds}
        for i, key in enumerate(PartMeter.KEYS):
            out[key] = [float(m.found[i] / max(m.total[i], 1)) for m in self.meters]
        return out


def score(items, tree: VOCTree, thresholds, figure: set[str], kept: dict) -> dict:
    """Score ``items`` (name, maps [K,H,W], class ids) with the background sweep and the part
    sweep; the maps of the images in ``figure`` go into ``kept`` (name -> maps)."""
    parts_sweep = PartSweep(thresholds)
    count = [0]

    def scored():
        for name, cams, ids in items:
            gt = tree.mask(name)
            parts = part_map(tree, name)
            if parts is not None:
                parts_sweep.update(parts, cams, ids, gt)
            if name in figure:
                kept[name] = cams.astype(np.float16)
            count[0] += 1
            yield cams, ids, gt

    sweep = M.threshold_sweep(scored(), thresholds, tree.num_classes, class_names=tree.classes)
    out = {k: v for k, v in sweep.items() if k != "confusion"}
    out["confusion"] = sweep["confusion"].tolist()
    out["part_coverage"] = parts_sweep.summary()
    out["images"] = count[0]
    return out


def save_figure(path: Path, names: list[str], kept: dict[str, dict]) -> None:
    """Write ``path`` (npz, atomically): ``names``, ``methods`` and, for method j and image i,
    the array ``m{j}_i{i}`` [K,H,W] float16 (see :func:`aepsl.book.records.cam_variant_figure`)."""
    methods = list(kept)
    arrays = {"names": np.array(names), "methods": np.array(methods)}
    for j, method in enumerate(methods):
        for i, name in enumerate(names):
            arrays[f"m{j}_i{i}"] = kept[method][name]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- masks for a segmenter
def best_method(results: dict, methods: list[str]) -> str:
    """The method of ``methods`` whose seeds scored the highest mIoU (the first on a tie)."""
    return max(methods, key=lambda k: (results[k]["best_miou"] or 0.0, -methods.index(k)))


def write_masks(method: str, threshold: float, model, tree: VOCTree, split: str, folder: Path,
                cfg: "CAMVariantsConfig", device, progress: bool) -> dict:
    """The seeds of ``method`` cut at ``threshold`` for every image of ``split``, as palette PNGs in
    ``folder`` (what a segmenter stage reads as labels, ``<stage>/masks``)."""
    from ..engine.progress import bar

    out = fresh_dir(folder)
    dataset = SegDataset(tree, split, with_masks=False)
    obj = explainer(method, model, cfg.score_batch_size)
    count = 0
    try:
        loader = inference_loader(dataset, cfg.batch_size, 0, device)
        for batch in bar(loader, desc=f"{label(method)} masks", disable=not progress, unit="batches"):
            cams = variant_cams(obj, batch["image"].to(device), batch["labels"], cfg.cam_scales, cfg.cam_flip)
            for i, name in enumerate(batch["name"]):
                ids = np.flatnonzero(batch["labels"][i].numpy() > 0.5) + 1
                write_mask(out / f"{name}.png", M.cam_to_mask(cams[i].astype(np.float32), ids, threshold))
                count += 1
    finally:
        release(obj)
    return {"method": method, "label": label(method), "threshold": threshold, "split": split, "count": count}


# --------------------------------------------------------------------------- the stage
def warm_up(model: torch.nn.Module, dataset, device: torch.device) -> None:
    """One forward and backward pass on the first image, before any method is timed, so that no
    method's seconds include the first call's set-up."""
    sample = next(iter(inference_loader(dataset, 1, 0, device)))
    x = normalize(sample["image"].to(device))
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)


def cam_recipe(cfg: CAMVariantsConfig, record: dict) -> CAMConfig:
    """The CAM stage's parameters (its splits and its sweep), from its metrics.json record."""
    fields = set(CAMConfig.__dataclass_fields__)
    return CAMConfig(**{k: v for k, v in record["params"].items() if k in fields})


def image_names(tree: VOCTree, recipe: CAMConfig, max_images: int) -> list[str]:
    """The images scored: the first ``max_images`` of the CAM stage's score split that have masks."""
    scored = scored_names(tree, recipe.train_split, recipe.score_split)
    if not scored:
        raise ValueError(f"split {recipe.score_split!r} (the CAM stage's score_split) has no ground-truth masks "
                         "to score the maps against")
    names = [n for n in tree.ids(recipe.score_split) if n in scored]
    return names[:max_images] if max_images else names


@stage(CAMVariantsConfig, "cam_variants")
def run(cfg: CAMVariantsConfig, run_, device, progress: bool) -> dict:
    """Every method's maps of the scored images, scored beside the CAM's; returns metrics.json."""
    from ..engine.progress import bar

    tree = VOCTree(resolve(cfg.data_root))
    recipe = cam_recipe(cfg, run_.inputs[cfg.cam_stage])
    thresholds = recipe.thresholds()
    names = image_names(tree, recipe, cfg.max_images)
    cam_folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.cam_stage)
    model = fold_batchnorm(load_model(cam_folder, device))   # inference only: batch norm folded
    dataset = SegDataset(tree, recipe.score_split, with_masks=False)
    dataset.names = names
    figure = names[:cfg.figure_images]
    kept: dict[str, dict] = {}
    results: dict[str, dict] = {}

    def batches(desc: str):
        loader = inference_loader(dataset, cfg.batch_size, 0, device)
        return bar(loader, desc=desc, disable=not progress, unit="batches")

    def saved_items():
        for name in names:
            yield name, load_cam(cam_folder, name), np.flatnonzero(tree.labels(name)) + 1

    def plain_items():
        for batch in batches("CAM"):
            images = batch["image"].to(device, non_blocking=True)
            with torch.no_grad():
                cams = labelled_cams(model, images, batch["labels"], cfg.cam_scales, cfg.cam_flip)
            for i, name in enumerate(batch["name"]):
                yield name, cams[i].astype(np.float32), np.flatnonzero(batch["labels"][i].numpy() > 0.5) + 1

    def method_items(obj, method: str):
        for batch in batches(label(method)):
            images = batch["image"].to(device, non_blocking=True)
            cams = variant_cams(obj, images, batch["labels"], cfg.cam_scales, cfg.cam_flip)
            for i, name in enumerate(batch["name"]):
                yield name, cams[i].astype(np.float32), np.flatnonzero(batch["labels"][i].numpy() > 0.5) + 1

    import pytorch_grad_cam  # noqa: F401  (imported before the clocks start: its import takes seconds)

    warm_up(model, dataset, device)
    for method in [SAVED_CAM, PLAIN_CAM, *cfg.methods]:
        kept[method] = {}
        with run_.timed(method):
            if method == SAVED_CAM:
                items = saved_items()
            elif method == PLAIN_CAM:
                items = plain_items()
            else:
                obj = explainer(method, model, cfg.score_batch_size)
                items = method_items(obj, method)
            try:
                results[method] = score(items, tree, thresholds, set(figure), kept[method])
            finally:
                if method not in (SAVED_CAM, PLAIN_CAM):
                    release(obj)
        results[method]["label"] = label(method)
    save_figure(run_.folder / "figure.npz", figure, kept)
    masks = None
    if cfg.masks_method:
        chosen = best_method(results, cfg.methods) if cfg.masks_method == "best" else cfg.masks_method
        with run_.timed("masks"):
            masks = write_masks(chosen, results[chosen]["best_threshold"], model, tree, recipe.train_split,
                                run_.folder / "masks", cfg, device, progress)
    cam_record = run_.inputs[cfg.cam_stage]
    cam_seconds = cam_record.get("timings_s", {}).get("cams")
    cam_count = cam_record["metrics"].get("cam_count")
    return {"classes": tree.classes, "cam_stage": cfg.cam_stage, "score_split": recipe.score_split,
            # what the CAM stage's saved maps cost it: its inference time per training image
            "cam_stage_seconds_per_image": cam_seconds / cam_count if cam_seconds and cam_count else None,
            "images": len(names), "of_images": len(scored_names(tree, recipe.train_split, recipe.score_split)),
            "thresholds": thresholds, "order": [SAVED_CAM, PLAIN_CAM, *cfg.methods],
            "cam_stage_scales": list(recipe.cam_scales), "cam_stage_flip": recipe.cam_flip,
            "methods": results, "masks": masks}
