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

Under torchrun the classifier trains on every process (see :mod:`aepsl.dist`); rank 0 alone
infers, scores and writes.
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

from . import dist
from . import metrics as M
from .artifacts import (StageRun, code_hash, is_done, load_metrics, params_hash, read_json, save_npy, save_torch,
                        stage_dir, stage_entry)
from .config import StageConfig, from_params, resolve, without_neutral
from .data.transforms import TrainView, normalize
from .data.voc import SegDataset, VOCTree
from .models import CAMClassifier
from .train import autocast, fit, inference_loader, pick_device, seed_everything, to_device


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
    hfpl: bool = False            # HFPL's likelihood losses (aepsl.hfpl); the hfpl_* values are published
    hfpl_weight: float = 0.2
    hfpl_samples: int = 10
    hfpl_fs_weight: float = 1.0
    hfpl_sigma: float = 5.0
    hfpl_mu: float = 2.5
    eval_batch_size: int = 64
    num_workers: int = 0
    train_split: str = "train"
    score_split: str = "train"
    torch_compile: bool = False
    force: bool = False

    # added after the first recorded runs: part of the parameter hash only when changed
    NEUTRAL = {"train_split": "train", "score_split": "train", "torch_compile": False}

    def validate(self) -> None:
        if not 0 <= self.hfpl_weight <= 1 or self.hfpl_samples < 1 or self.hfpl_sigma <= 0:
            raise ValueError(f"parameters hfpl_weight must lie in [0, 1], hfpl_samples be >= 1 and hfpl_sigma > 0, "
                             f"got {self.hfpl_weight}, {self.hfpl_samples}, {self.hfpl_sigma}")
        if not self.train_split or not self.score_split:
            raise ValueError("parameters train_split and score_split must name split files")
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
        if not self.hfpl:   # without HFPL its settings change nothing (and old runs keep their hash)
            for k in [k for k in d if k.startswith("hfpl")]:
                d.pop(k)
        return without_neutral(d, self.NEUTRAL)


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
def labelled_cams(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, scales, flip: bool) -> list[np.ndarray]:
    """Normalised multi-scale (+flip) CAMs of each image's labelled classes: one float16 array
    [K,H,W] per image (the precision they are saved in). Only those maps leave the device,
    in one transfer."""
    cams = normalise_cams(infer_cams(model, images, scales, flip)).half()
    fg = [torch.nonzero(row > 0.5).flatten() for row in labels.cpu()]
    picked = torch.cat([cams[i, idx.to(cams.device)] for i, idx in enumerate(fg)]).cpu().numpy()
    return np.split(picked, np.cumsum([len(idx) for idx in fg])[:-1])


def iterate_cams(model: nn.Module, dataset, device: torch.device, scales, flip: bool,
                 batch_size: int = 16, progress: bool = True, desc: str = "CAMs", num_workers: int = 0):
    """Yield (name, normalised CAMs [K,H,W] float32 of labelled classes, class ids, gt mask or None).

    Images of one size are batched together (all of them for the embedded scenes); the maps
    are float16 values (as saved) in float32 arrays.
    """
    from tqdm.auto import tqdm

    model.eval()
    loader = inference_loader(dataset, batch_size, num_workers, device)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images = batch["image"].to(device, non_blocking=True)
        cams = labelled_cams(model, images, batch["labels"], scales, flip)
        labels = batch["labels"].numpy()
        for i, name in enumerate(batch["name"]):
            gt = batch["mask"][i].numpy().astype(np.uint8) if "mask" in batch else None
            yield name, cams[i].astype(np.float32), np.flatnonzero(labels[i] > 0.5) + 1, gt


def scored_names(tree: VOCTree, train_split: str, score_split: str) -> set[str]:
    """The images of ``train_split`` whose seeds and pseudo masks are scored: those of
    ``score_split`` (which must lie within ``train_split``), if it has ground-truth masks."""
    train, score = set(tree.ids(train_split)), tree.ids(score_split)
    outside = [n for n in score if n not in train]
    if outside:
        raise ValueError(f"parameter score_split: {len(outside)} images of split {score_split!r} are not in "
                         f"train_split {train_split!r} (e.g. {outside[0]!r}); seeds exist only for train_split")
    return set(score) if tree.has_masks(score_split) else set()


def dataset_identity(tree: VOCTree, split: str = "train") -> str:
    """What identifies the dataset's content: the generator's parameter hash for generated
    scenes, else the number of ``split`` images and the first and last name (an external tree)."""
    record = tree.root / "dataset.json"
    if record.exists():
        return read_json(record)["params_hash"]
    ids = tree.ids(split)
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
    history = fit(model, view, loss_for(cfg), epochs=cfg.epochs, batch_size=cfg.batch_size,
                  lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                  ckpt_path=folder / "checkpoint.pt", device=device, seed=cfg.seed,
                  num_workers=cfg.num_workers, fingerprint=fingerprint, stop_after=stop_after,
                  desc=f"{cfg.stage} classifier", progress=progress, fresh=fresh, torch_compile=cfg.torch_compile)
    return model, history


@stage_entry
def run(params: dict, progress: bool = True) -> dict:
    """Train the classifier, infer and save the CAMs of ``train_split``, score them; returns metrics.json."""
    cfg = from_params(CAMConfig, params, "cam")
    folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.stage)
    tree = VOCTree(resolve(cfg.data_root))
    hashed = {**cfg.hashed(), "dataset": dataset_identity(tree, cfg.train_split), "code": code_hash(__name__)}
    if not cfg.force and dist.agree(is_done(folder, hashed)):
        return load_metrics(folder)
    scored = scored_names(tree, cfg.train_split, cfg.score_split)
    device = pick_device(cfg.device)
    run_ = StageRun(folder, cfg.stage, hashed, device=str(device))
    num_classes = tree.num_classes - 1
    train_set = SegDataset(tree, cfg.train_split, with_masks=False)   # image-level labels only
    with run_.timed("train"):
        model, history = train_classifier(cfg, train_set, num_classes, folder, device, progress and dist.is_main(),
                                          fingerprint=params_hash(hashed), fresh=cfg.force)
    if not dist.is_main():
        return dist.wait_for_main(folder)
    save_torch(folder / "model.pt", {"model": model.state_dict(), "num_classes": num_classes,
                                     "config": dataclasses.asdict(cfg), "classes": tree.classes})
    m = evaluate_classifier(model, tree, cfg, folder, device, progress, run_, scored)
    m["history"] = history
    run_.metrics = m
    return dist.release(run_.finish())


def evaluate_classifier(model, tree: VOCTree, cfg: CAMConfig, folder: Path, device, progress, run_,
                        scored: set[str]) -> dict:
    """Classification mAP on ``train_split`` and val; CAM seeds of ``train_split`` saved, those of
    ``scored`` (the score split's images) scored against their ground truth."""
    out: dict = {"classes": tree.classes, "train_split": cfg.train_split, "score_split": cfg.score_split}
    with run_.timed("classify"):
        for key, split in (("train", cfg.train_split), ("val", "val")):
            if split in tree.splits():
                scores, targets = predict_logits(model, SegDataset(tree, split, with_masks=False), device,
                                                 cfg.eval_batch_size, cfg.num_workers)
                ap = M.average_precision(scores, targets)
                out[f"{key}_map"] = M.mean_average_precision(scores, targets)
                out[f"{key}_ap"] = {c: (None if np.isnan(a) else float(a)) for c, a in zip(tree.classes[1:], ap)}
    with run_.timed("cams"):
        ds = SegDataset(tree, cfg.train_split, with_masks=False)
        cam_dir = fresh_dir(folder / "cams")

        def saved():
            for name, cams, ids, _ in iterate_cams(model, ds, device, cfg.cam_scales, cfg.cam_flip,
                                                   cfg.eval_batch_size // 4 or 1, progress,
                                                   num_workers=cfg.num_workers):
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
    out["cam_count"] = len(list((folder / "cams").glob("*.npy")))
    out["scored_count"] = len(scored)
    return out
