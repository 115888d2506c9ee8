"""Class activation maps: train the GAP classifier, infer CAMs, score them as seeds.

Entry point: :func:`run` (called by ``notebooks/01_cam.py``), which writes
``artifacts/<profile>/<stage>/``:

    model.pt          the trained classifier (state dict + the parameters to rebuild it)
    checkpoint.pt     training checkpoint (resume)
    cams/<name>.npy   float16 [K,H,W] normalised CAMs of the K labelled classes of each train image
    metrics.json      classification mAP, the background-threshold sweep, the seed mIoU
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics as M
from .artifacts import (StageRun, code_hash, is_done, load_metrics, params_hash, read_json, save_npy, save_torch,
                        stage_dir, stage_entry)
from .config import StageConfig, from_params, resolve
from .data.transforms import TrainView, normalize
from .data.voc import SegDataset, VOCTree
from .models import CAMClassifier
from .train import autocast, fit, make_loader, pick_device, prepare_model, seed_everything, to_device


@dataclass
class CAMConfig(StageConfig):
    """Parameters of the CAM stage (``notebooks/01_cam.py``)."""

    stage: str = "cam"
    backbone: str = "efficientnet_lite0"
    backbone_weights: str = "package"
    backbone_depth: str = "stage5"
    width: int = 32
    dropout: float = 0.0
    epochs: int = 4
    batch_size: int = 32
    lr: float = 0.001
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    crop: int = 96
    scale_range: list = field(default_factory=lambda: [0.9, 1.1])
    cam_scales: list = field(default_factory=lambda: [1.0, 0.5, 1.5])
    cam_flip: bool = True
    sweep: list = field(default_factory=lambda: [0.05, 0.95, 0.05])
    eval_batch_size: int = 64
    num_workers: int = 0
    force: bool = False

    def validate(self) -> None:
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

    def hashed(self) -> dict:
        """The parameters that determine the results (not where or whether to force)."""
        d = dataclasses.asdict(self)
        for k in ("force", "num_workers", "eval_batch_size"):
            d.pop(k)
        return d


def classification_loss(model: nn.Module, batch: dict):
    logits = model(normalize(batch["image"]))
    return F.multilabel_soft_margin_loss(logits.float(), batch["labels"]), {}


def build_model(cfg: CAMConfig, num_classes: int) -> CAMClassifier:
    return CAMClassifier(num_classes, cfg.backbone, cfg.backbone_weights, depth=cfg.backbone_depth,
                         width=cfg.width, dropout=cfg.dropout)


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
def infer_cams(model: nn.Module, images: torch.Tensor, scales=(1.0,), flip: bool = False) -> torch.Tensor:
    """Raw multi-scale (+flip) CAMs of every class, [B,C,H,W] at the input resolution.

    ``images`` is a uint8 batch [B,3,H,W] on the model's device.  For each scale the batch
    (and its mirror image) goes through the network at once; maps are resized back to HxW
    and summed.
    """
    b, _, h, w = images.shape
    x0 = normalize(images)
    total = None
    for s in scales:
        x = x0 if s == 1 else F.interpolate(x0, scale_factor=float(s), mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device):
            cam = model.cams(x).float()
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
def predict_logits(model: nn.Module, dataset, device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Image-level logits and labels of every image of ``dataset`` (single scale, no flip)."""
    model.eval()
    scores, targets = [], []
    for batch in make_loader(dataset, batch_size, False, 0):
        batch = to_device(batch, device)
        with autocast(device):
            scores.append(model(normalize(batch["image"])).float().cpu())
        targets.append(batch["labels"].cpu())
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def iterate_cams(model: nn.Module, dataset, device: torch.device, scales, flip: bool,
                 batch_size: int = 16, progress: bool = True, desc: str = "CAMs"):
    """Yield (name, normalised CAMs [K,H,W] float32 of labelled classes, class ids, gt mask or None).

    Images of one size are batched together (all of them for the embedded scenes).
    """
    from tqdm.auto import tqdm

    model.eval()
    loader = make_loader(dataset, batch_size if uniform_size(dataset.tree) else 1, False, 0)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images = batch["image"].to(device)
        cams = normalise_cams(infer_cams(model, images, scales, flip)).cpu().numpy()
        labels = batch["labels"].numpy()
        for i, name in enumerate(batch["name"]):
            fg = np.flatnonzero(labels[i] > 0.5)
            gt = batch["mask"][i].numpy().astype(np.uint8) if "mask" in batch else None
            yield name, cams[i, fg], fg + 1, gt


def uniform_size(tree: VOCTree) -> bool:
    """Whether every image of ``tree`` has one size (so images can be batched): true for the
    generated scenes, which record their generator in dataset.json; VOC trees go one by one."""
    return (tree.root / "dataset.json").exists()


def dataset_identity(tree: VOCTree) -> str:
    """What identifies the dataset's content: the generator's parameter hash for generated
    scenes, else the number of train images and the first and last name (an external tree)."""
    record = tree.root / "dataset.json"
    if record.exists():
        return read_json(record)["params_hash"]
    ids = tree.ids("train")
    return f"external:{len(ids)}:{ids[0] if ids else ''}:{ids[-1] if ids else ''}"


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (files left by an earlier run are removed)."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def load_cam(folder: str | Path, name: str) -> np.ndarray:
    """The saved normalised CAMs [K,H,W] (float32) of one training image."""
    path = Path(folder) / "cams" / f"{name}.npy"
    if not path.exists():
        raise FileNotFoundError(f"missing CAM file {path}: rerun the CAM stage")
    return np.load(path).astype(np.float32)


# --------------------------------------------------------------------------- the stage
def train_classifier(cfg: CAMConfig, train_set, num_classes: int, folder: Path, device: torch.device,
                     progress: bool = True, stop_after: int | None = None, fingerprint: str = "",
                     fresh: bool = False) -> tuple:
    """Train a classifier on ``train_set`` (a dataset of samples with labels).

    An interrupted run with the same ``fingerprint`` resumes from ``folder/checkpoint.pt``;
    ``fresh=True`` (a forced rerun) discards that checkpoint and trains from the start.
    """
    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes)
    view = TrainView(train_set, cfg.crop, tuple(cfg.scale_range), flip=True, seed=cfg.seed)
    history = fit(model, view, classification_loss, epochs=cfg.epochs, batch_size=cfg.batch_size,
                  lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                  ckpt_path=folder / "checkpoint.pt", device=device, seed=cfg.seed,
                  num_workers=cfg.num_workers, fingerprint=fingerprint, stop_after=stop_after,
                  desc=f"{cfg.stage} classifier", progress=progress, fresh=fresh)
    return model, history


@stage_entry
def run(params: dict, progress: bool = True) -> dict:
    """Train the classifier, infer and save the train-split CAMs, score them; returns metrics.json."""
    cfg = from_params(CAMConfig, params, "cam")
    folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.stage)
    tree = VOCTree(resolve(cfg.data_root))
    hashed = {**cfg.hashed(), "dataset": dataset_identity(tree), "code": code_hash(__name__)}
    if not cfg.force and is_done(folder, hashed):
        return load_metrics(folder)
    device = pick_device(cfg.device)
    run_ = StageRun(folder, cfg.stage, hashed, device=str(device))
    num_classes = tree.num_classes - 1
    train_set = SegDataset(tree, "train", with_masks=False)   # image-level labels only
    with run_.timed("train"):
        model, history = train_classifier(cfg, train_set, num_classes, folder, device, progress,
                                          fingerprint=params_hash(hashed), fresh=cfg.force)
    save_torch(folder / "model.pt", {"model": model.state_dict(), "num_classes": num_classes,
                                     "config": dataclasses.asdict(cfg), "classes": tree.classes})
    m = evaluate_classifier(model, tree, cfg, folder, device, progress, run_)
    m["history"] = history
    run_.metrics = m
    return run_.finish()


def evaluate_classifier(model, tree: VOCTree, cfg: CAMConfig, folder: Path, device, progress, run_) -> dict:
    """Classification mAP on train and val; CAM seeds of the train split saved and scored."""
    out: dict = {"classes": tree.classes}
    with run_.timed("classify"):
        for split in ("train", "val"):
            if split in tree.splits():
                scores, targets = predict_logits(model, SegDataset(tree, split, with_masks=False), device,
                                                 cfg.eval_batch_size)
                ap = M.average_precision(scores, targets)
                out[f"{split}_map"] = M.mean_average_precision(scores, targets)
                out[f"{split}_ap"] = {c: (None if np.isnan(a) else float(a)) for c, a in zip(tree.classes[1:], ap)}
    with run_.timed("cams"):
        with_masks = tree.has_masks("train")
        ds = SegDataset(tree, "train", with_masks=with_masks)
        cam_dir = fresh_dir(folder / "cams")

        def saved():
            for name, cams, ids, gt in iterate_cams(model, ds, device, cfg.cam_scales, cfg.cam_flip,
                                                    cfg.eval_batch_size // 4 or 1, progress):
                save_npy(cam_dir / f"{name}.npy", cams.astype(np.float16))
                if gt is not None:
                    # score what the next stage reads: the float16 maps as saved
                    yield cams.astype(np.float16).astype(np.float32), ids, gt

        if with_masks:
            sweep = M.threshold_sweep(saved(), cfg.thresholds(), tree.num_classes, class_names=tree.classes)
            out["seed"] = {k: v for k, v in sweep.items() if k != "confusion"}
            out["seed_confusion"] = sweep["confusion"]
            out["seed_miou"] = sweep["best_miou"]
            out["best_threshold"] = sweep["best_threshold"]
        else:
            for _ in saved():
                pass
    out["cam_count"] = len(list((folder / "cams").glob("*.npy")))
    return out
