"""HFPL: likelihood-based losses for sharper CAMs (Jonnarth, Zhang & Felsberg, WACV 2024).

*Likelihood view.* Each class map is read through a per-class sigmoid, ``p_c(x) =
sigmoid(M_c(x))``, the probability that pixel x shows class c, instead of competing with the
other classes in a softmax.

*Importance-sampling loss.* Global average pooling scores an image by the mean of a class map
over all pixels, background included. HFPL instead draws ``samples`` pixels per image and
class with probability proportional to ``p_c`` and scores the class by the logits found there
(multi-label soft margin against the image labels). It is mixed with the pooled loss:
``(1 - w) * L_gap + w * L_is`` (published w = 0.2, 10 samples).

*Feature-similarity loss.* Pixel pairs are compared twice: by colour (mean absolute RGB
difference d, mapped to ``tanh(mu + logit d)``, negative for similar and positive for
different colours) and by their normalised class maps (half the squared distance). The loss
``-sum_ij w_ij * colour_ij * map_ij / (B H W)``, with a Gaussian spatial weight w of width
``sigma`` (published 5), rewards class-map changes across colour edges and penalises them
inside uniform regions, so CAM contours follow the image's edges.

Both are switched on for a classifier by the CAM recipe parameter ``hfpl`` (see
:mod:`aepsl.cam`); every erasing round trains with its CAM stage's recipe, so AE + HFPL is
erasing with ``cam_stage`` pointing at a CAM stage trained with ``hfpl: true``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .artifacts import StageRun, code_hash, is_done, load_metrics, stage_dir, stage_entry
from .config import StageConfig, from_params, resolve


def sample_pixels(weights: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [B, C, samples] into the flattened H*W pixels, drawn with replacement with
    probability proportional to ``weights`` [B,C,H,W] (>= 0; a map of zeros draws uniformly)."""
    b, c = weights.shape[:2]
    w = weights.detach().float().reshape(b * c, -1).clamp(min=0)
    empty = w.sum(1, keepdim=True) <= 0
    w = torch.where(empty, torch.ones_like(w), w)
    idx = torch.multinomial(w, samples, replacement=True, generator=generator)
    return idx.view(b, c, samples)


def importance_sampling_loss(class_maps: torch.Tensor, labels: torch.Tensor, samples: int = 10,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Multi-label soft margin of the logits at pixels drawn from sigmoid(class map).

    class_maps [B,C,H,W] (logits before pooling), labels [B,C] in {0,1}.
    """
    b, c = class_maps.shape[:2]
    maps = class_maps.float()
    idx = sample_pixels(torch.sigmoid(maps), samples, generator)
    picked = maps.reshape(b, c, -1).gather(2, idx)                       # [B,C,S]
    target = labels.float()[..., None].expand_as(picked)
    return F.binary_cross_entropy_with_logits(picked, target)


def normalised_maps(class_maps: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[B,C+1,H,W]: ReLU class maps divided by their peak, absent classes zeroed, and a
    background map 1 - max first."""
    m = F.relu(class_maps.float())
    m = m / (m.flatten(2).max(2).values[..., None, None] + eps) * labels.float()[..., None, None]
    bg = 1 - m.max(1, keepdim=True).values
    return torch.cat([bg, m], 1)


def feature_similarity_loss(image: torch.Tensor, maps: torch.Tensor, sigma: float = 5.0, mu: float = 2.5,
                            eps: float = 1e-5) -> torch.Tensor:
    """HFPL's feature-similarity loss of colour images [B,3,H,W] in [0,1] and maps [B,K,H,W]
    of the same size (all pixel pairs, Gaussian spatial weight of width ``sigma`` pixels)."""
    b, _, h, w = maps.shape
    if image.shape[-2:] != (h, w):
        raise ValueError(f"feature_similarity_loss: image {tuple(image.shape[-2:])} and maps {(h, w)} differ in size")
    x = image.float().clamp(0, 1).flatten(2).transpose(1, 2)            # [B,N,3]
    y = maps.float().flatten(2).transpose(1, 2)                         # [B,N,K]
    d = (torch.cdist(x, x, p=1) / x.shape[-1]).clamp(0, 1)
    colour = torch.tanh(mu + torch.log((d + eps) / (1 - d + eps)))
    dist = 0.5 * torch.cdist(y, y, p=2) ** 2
    yy, xx = torch.meshgrid(torch.arange(h, device=maps.device), torch.arange(w, device=maps.device), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    spatial = torch.exp(-0.5 * torch.cdist(pos, pos) ** 2 / sigma ** 2) / (2 * math.pi * sigma ** 2)
    return -(spatial * dist * colour).sum() / (b * h * w)


def hfpl_classification_loss(class_maps: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *,
                             weight: float = 0.2, samples: int = 10, fs_weight: float = 1.0, sigma: float = 5.0,
                             mu: float = 2.5) -> tuple[torch.Tensor, dict]:
    """The classifier's loss with HFPL: pooled + importance-sampled classification, plus the
    feature-similarity term on the class-map grid. ``images`` uint8 [B,3,H,W]."""
    maps = class_maps.float()
    gap = F.multilabel_soft_margin_loss(maps.mean((2, 3)), labels)
    isl = importance_sampling_loss(maps, labels, samples)
    loss = (1 - weight) * gap + weight * isl
    logs = {"gap": gap.detach(), "is": isl.detach()}
    if fs_weight > 0:
        small = F.interpolate(images.float() / 255, size=maps.shape[-2:], mode="bilinear", align_corners=False)
        fs = feature_similarity_loss(small, normalised_maps(maps, labels), sigma, mu)
        loss = loss + fs_weight * fs
        logs["fs"] = fs.detach()
    return loss, logs


# --------------------------------------------------------------------------- the comparison
@dataclass
class HFPLCompareConfig(StageConfig):
    """Parameters of the comparison in ``notebooks/07_hfpl.py`` (no training: it scores the
    seeds the CAM and erasing stages saved)."""

    stage: str = "hfpl"
    cam_stage: str = "cam"
    hfpl_cam_stage: str = "cam_hfpl"
    masks_stage: str = "pseudo_masks"
    hfpl_masks_stage: str = "pseudo_masks_erasing_hfpl"
    tolerance: int = 1
    force: bool = False


def seed_mask(kind: str, folder, name: str, tree, threshold: float | None = None) -> np.ndarray:
    """The seed of one training image as the next stage reads it: a CAM stage's maps at its
    best background threshold, or a mask stage's PNG (255 read as background)."""
    from PIL import Image

    from .cam import load_cam

    if kind == "cams":
        ids = np.flatnonzero(tree.labels(name)) + 1
        return M.cam_to_mask(load_cam(folder, name), ids, threshold)
    mask = np.asarray(Image.open(folder / "masks" / f"{name}.png"))
    return np.where(mask == 255, 0, mask).astype(np.uint8)


@stage_entry
def compare(params: dict, progress: bool = True) -> dict:
    """Region (mIoU) and contour (boundary F-score) quality of the seeds with and without HFPL."""
    from tqdm.auto import tqdm

    from .data.voc import VOCTree

    cfg = from_params(HFPLCompareConfig, params, "hfpl")
    root = resolve(cfg.artifacts_root)
    sources = {"CAM": cfg.cam_stage, "CAM + HFPL": cfg.hfpl_cam_stage,
               "AE": cfg.masks_stage, "AE + HFPL": cfg.hfpl_masks_stage}
    records = {}
    for label, stage in sources.items():
        rec = load_metrics(stage_dir(root, cfg.profile, stage), cfg.profile)
        if rec is None:
            raise FileNotFoundError(f"{label}: no finished stage {stage!r} in {stage_dir(root, cfg.profile, stage)} "
                                    f"(run notebooks 01_cam, 02_erasing and 03_pseudo_masks with their HFPL runs first)")
        records[label] = rec
    hashed = {**dataclasses.asdict(cfg), "sources": {k: r["params_hash"] for k, r in records.items()},
              "code": code_hash(__name__)}
    hashed.pop("force")
    folder = stage_dir(root, cfg.profile, cfg.stage)
    if not cfg.force and is_done(folder, hashed):
        return load_metrics(folder)
    tree = VOCTree(resolve(cfg.data_root))
    if not tree.has_masks("train"):
        raise FileNotFoundError(f"the HFPL comparison scores seeds against the training masks, which {tree.root} lacks")
    run_ = StageRun(folder, cfg.stage, hashed)
    out: dict = {"classes": tree.classes, "tolerance": cfg.tolerance, "rows": {}}
    with run_.timed("score"):
        for label, stage in sources.items():
            src = stage_dir(root, cfg.profile, stage)
            kind = "cams" if label.startswith("CAM") else "masks"
            threshold = records[label]["metrics"].get("best_threshold") if kind == "cams" else None
            conf, contour = M.ConfusionMeter(tree.num_classes), M.BoundaryMeter(cfg.tolerance)
            for name in tqdm(tree.ids("train"), desc=label, disable=not progress, leave=False):
                pred, gt = seed_mask(kind, src, name, tree, threshold), tree.mask(name)
                conf.update(pred, gt)
                contour.update(pred, gt)
            out["rows"][label] = {"stage": stage, "threshold": threshold,
                                  **M.segmentation_scores(conf.matrix, tree.classes), **contour.scores()}
    run_.metrics = out
    return run_.finish()
