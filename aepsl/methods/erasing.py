"""Adversarial erasing (Wei et al., CVPR 2017): mine, erase, retrain, repeat; then merge.

Round k (``notebooks/02_erasing.py`` run with ``round=k``) writes
``artifacts/<profile>/<stage>/round<k>/``:

    regions/<name>.png   the regions mined in this round: pixel = class id (0 = none)
    cams/<name>.npy      the round's normalised CAMs of the labelled classes (round 1 reuses
                         the CAM stage's maps instead: its classifier *is* round 1's)
    model.pt             the round's classifier (rounds >= 2)
    metrics.json

Round 1's classifier is the CAM chapter's (trained on clean images). Round k >= 2 trains a
fresh classifier with the same recipe on the training images in which every region mined by
rounds 1..k-1 is replaced by the erase value, infers its CAMs on those erased images and
mines new regions (pixels not erased before whose normalised CAM exceeds ``mine_threshold``).

The merge (``notebooks/03_pseudo_masks.py``, :func:`merge`) unions the mined regions per
class; a pixel claimed by two classes goes to the one with the higher CAM score; background
comes from a cue: low CAM everywhere (built in) or a saliency map; everything else is 255.

Rounds and merge work on the CAM stage's ``train_split`` and score on its ``score_split``
(read from the CAM stage's metrics.json). Under torchrun a round's classifier trains on every
process; rank 0 alone infers, mines and writes (see :mod:`aepsl.engine.dist`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..engine import dist
from . import metrics as M
from ..engine.artifacts import load_metrics, params_hash, save_npy, save_torch, stage_dir, write_bytes
from .cam import CAMConfig, iterate_cams, predict_logits, train_classifier
from ..engine.config import StageConfig, resolve, runtime
from ..data.voc import SegDataset, VOCTree, write_mask
from ..models.fold import fold_batchnorm
from .seedmaps import load_cam
from ..engine.stage import fresh_dir, scored_names, stage

ERASE_VALUES = ("mean", "blur", "noise")


# --------------------------------------------------------------------------- region files
def save_regions(path: Path, regions: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(regions.astype(np.uint8), mode="L").save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def load_regions(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"missing region file {path}: run the earlier erasing round first")
    return np.asarray(Image.open(path))


def mine_regions(cams: np.ndarray, class_ids: np.ndarray, threshold: float,
                 exclude: np.ndarray | None = None) -> np.ndarray:
    """Mined region map: pixel = class id whose normalised CAM exceeds ``threshold``
    (highest CAM wins where several do), 0 elsewhere and on ``exclude``d pixels."""
    h, w = cams.shape[-2:]
    out = np.zeros((h, w), np.uint8)
    if len(class_ids) == 0:
        return out
    best = cams.argmax(axis=0)
    hit = cams.max(axis=0) > threshold
    if exclude is not None:
        hit &= ~exclude
    out[hit] = np.asarray(class_ids, np.uint8)[best[hit]]
    return out


def erase(image: np.ndarray, region: np.ndarray, value: str, mean_pixel: np.ndarray,
          std_pixel: np.ndarray | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Replace the pixels of boolean ``region`` in ``image`` (HxWx3 uint8); others untouched.

    ``mean``: the training set's mean pixel (the paper). ``blur``: a heavy Gaussian blur of
    the image itself (hides shape, keeps colour). ``noise``: Gaussian noise around the mean
    pixel with the training set's per-channel spread (hides shape and colour).
    """
    if not region.any():
        return image
    out = image.copy()
    if value == "mean":
        out[region] = np.round(mean_pixel).astype(np.uint8)
    elif value == "blur":
        radius = max(2.0, max(image.shape[:2]) / 12)
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
        out[region] = blurred[region]
    elif value == "noise":
        rng = rng or np.random.default_rng(0)
        std = std_pixel if std_pixel is not None else np.full(3, 40.0)
        noise = rng.normal(mean_pixel, std, size=(int(region.sum()), 3))
        out[region] = np.clip(noise, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"parameter erase_value must be one of {ERASE_VALUES}, got {value!r}")
    return out


def grow(region: np.ndarray, margin: int) -> np.ndarray:
    """Boolean ``region`` grown by ``margin`` pixels (a disc of that radius around every pixel)."""
    if margin <= 0 or not region.any():
        return region
    h, w = region.shape
    padded = np.pad(region, margin)
    out = np.zeros_like(region)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            if dy * dy + dx * dx <= margin * margin:
                out |= padded[margin + dy:margin + dy + h, margin + dx:margin + dx + w]
    return out


def pixel_statistics(tree: VOCTree, split: str = "train", limit: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the split's pixels (first ``limit`` images)."""
    total, total_sq, n = np.zeros(3), np.zeros(3), 0
    for name in tree.ids(split)[:limit]:
        px = tree.image(name).reshape(-1, 3).astype(np.float64)
        total += px.sum(0)
        total_sq += (px ** 2).sum(0)
        n += len(px)
    mean = total / max(n, 1)
    return mean, np.sqrt(np.maximum(total_sq / max(n, 1) - mean ** 2, 0))


class ErasedView(torch.utils.data.Dataset):
    """The training split with the regions of ``region_dirs`` erased; originals untouched."""

    def __init__(self, tree: VOCTree, split: str, region_dirs: list[Path], value: str,
                 mean_pixel: np.ndarray, std_pixel: np.ndarray, seed: int = 0, with_masks: bool = False,
                 clean_fraction: float = 0.0, decoys: int = 0, margin: int = 0):
        self.base = SegDataset(tree, split, with_masks=with_masks)
        self.tree, self.names = tree, self.base.names
        self.region_dirs, self.value = list(region_dirs), value
        self.mean_pixel, self.std_pixel, self.seed = mean_pixel, std_pixel, seed
        self.clean_fraction, self.epoch = clean_fraction, 0
        self.decoys, self.margin = decoys, margin

    def set_epoch(self, epoch: int) -> None:
        """With ``clean_fraction``: which images stay clean is drawn anew each epoch."""
        self.epoch = epoch

    def shown_clean(self, index: int) -> bool:
        if self.clean_fraction <= 0:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index, 23]).random() < self.clean_fraction)

    def __len__(self) -> int:
        return len(self.base)

    def erased_mask(self, name: str) -> np.ndarray | None:
        """Union (boolean) of the regions mined for ``name`` by the rounds in ``region_dirs``."""
        classes = self.region_classes(name)
        return None if classes is None else classes > 0

    def region_classes(self, name: str) -> np.ndarray | None:
        """The regions mined for ``name`` by the rounds in ``region_dirs``: pixel = class id, 0 = none
        (a pixel is mined at most once: later rounds skip erased pixels)."""
        out = None
        for d in self.region_dirs:
            r = load_regions(d / f"{name}.png")
            out = r.copy() if out is None else np.where(out > 0, out, r)
        return out

    def decoy_mask(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """``decoys`` holes for image ``index``: the erased regions of other images of the split,
        each moved by a random offset, drawn anew each epoch. They fall mostly on background, so
        a hole (its presence, its outline, what lies around it) no longer says where an object is."""
        h, w = shape
        out = np.zeros((h, w), bool)
        rng = np.random.default_rng([self.seed, self.epoch, index, 29])
        for _ in range(self.decoys):
            other = self.erased_mask(self.names[int(rng.integers(len(self.names)))])
            dy, dx = int(rng.integers(-h // 2, h // 2 + 1)), int(rng.integers(-w // 2, w // 2 + 1))
            if other is None:
                continue
            oh, ow = other.shape
            # the other image's mask moved by (dy, dx) onto this image's grid (parts outside dropped)
            y0, y1, x0, x1 = max(dy, 0), min(oh + dy, h), max(dx, 0), min(ow + dx, w)
            if y1 > y0 and x1 > x0:
                out[y0:y1, x0:x1] |= other[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        return out

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.base[index])
        if self.region_dirs and not self.shown_clean(index):
            name = sample["name"]
            rng = np.random.default_rng([self.seed, index, 17])
            mask = grow(self.erased_mask(name), self.margin)
            if self.decoys:
                mask = mask | self.decoy_mask(index, mask.shape)
            sample["image"] = erase(sample["image"], mask, self.value, self.mean_pixel, self.std_pixel, rng)
        return sample


def mining_sweep(tree: VOCTree, cam_folder: Path, thresholds, limit: int = 0, split: str = "train") -> dict:
    """How the mining threshold trades precision for coverage, from saved round-1 CAMs.

    For each threshold: ``precision`` (share of mined pixels labelled with the right class),
    ``coverage`` (share of ground-truth foreground pixels mined) and ``mined_per_fg`` (mined
    pixels per foreground pixel). Needs ground-truth masks of ``split``.
    """
    thresholds = list(thresholds)
    right = np.zeros(len(thresholds))
    mined = np.zeros(len(thresholds))
    covered = np.zeros(len(thresholds))
    fg = 0
    names = tree.ids(split)
    for name in names[:limit] if limit else names:
        cams = load_cam(cam_folder, name)
        ids = np.flatnonzero(tree.labels(name)) + 1
        gt = tree.mask(name)
        valid = gt != 255
        fg += int(((gt > 0) & valid).sum())
        if len(ids) == 0:
            continue
        label = ids[cams.argmax(0)]
        peak = cams.max(0)
        for i, t in enumerate(thresholds):
            hit = (peak > t) & valid
            mined[i] += hit.sum()
            right[i] += (hit & (label == gt)).sum()
            covered[i] += (hit & (gt > 0)).sum()
    return {"thresholds": thresholds,
            "precision": [float(r / m) if m else None for r, m in zip(right, mined)],
            "coverage": [float(c / fg) if fg else None for c in covered],
            "mined_per_fg": [float(m / fg) if fg else None for m in mined]}


def part_coverage(tree: VOCTree, cam_folder: Path, thresholds, split: str = "train") -> dict | None:
    """Share of disc and of body pixels that the saved CAMs give the right class above each
    threshold (the region round 1 would mine at that threshold); None for trees without part
    maps. ``{"thresholds": [...], "disc": [...], "body": [...]}``."""
    thresholds = list(thresholds)
    meters = [PartMeter() for _ in thresholds]
    for name in tree.ids(split):
        parts = part_map(tree, name)
        if parts is None:
            return None
        cams = load_cam(cam_folder, name)
        ids = np.flatnonzero(tree.labels(name)) + 1
        gt = tree.mask(name)
        for t, meter in zip(thresholds, meters):
            meter.update(parts, mine_regions(cams, ids, t), None, gt)
    out = {"thresholds": thresholds}
    for i, key in enumerate(PartMeter.KEYS):
        out[key] = [float(m.found[i] / max(m.total[i], 1)) for m in meters]
    return out


# --------------------------------------------------------------------------- one round
@dataclass
class ErasingConfig(StageConfig):
    """Parameters of one erasing round (``notebooks/02_erasing.py``).

    The classifier recipe is not repeated here: every round uses the CAM stage's (read from
    ``artifacts/<profile>/<cam_stage>/metrics.json``), so round 1 *is* the CAM classifier.
    """

    stage: str = "erasing"   # stage name: the output folder under artifacts_root/profile
    cam_stage: str = "cam"   # CAM stage whose classifier recipe and round-1 CAMs are used
    round: int = 1   # erasing round to run (from 1; round k needs rounds 1..k-1 first)
    mine_threshold: float = 0.5   # normalised CAM score above which a pixel is mined, in (0, 1)
    erase_value: str = "mean"   # fill of erased regions: mean (pixel), blur or noise
    init: str = "fresh"   # rounds 2+ start from fresh ImageNet weights (the paper) or from the previous round's classifier (previous)
    clean_fraction: float = 0.0   # rounds 2+: share of training images shown unerased, drawn anew each epoch (0: the paper)
    round_epochs: int = 0   # rounds 2+: training epochs (0: the CAM stage's)
    erase_margin: int = 0   # rounds 2+: erased regions grown by this many pixels before the fill, so no rim of the mined part stays (0: the paper)
    decoys: int = 0   # rounds 2+: other images' erased regions added as holes at random places to each training image (0: the paper)
    mine_prior: float = 0.0   # rounds 2+: mine only where the CAM stage's map of a labelled class reaches this (0: everywhere, the paper)
    collapse_map: float = 0.6   # mAP below which the round warns of collapse or a shortcut
    eval_batch_size: int = runtime(64)   # images per batch at inference
    num_workers: int = runtime(0)   # data-loader worker processes (0: load in the main process)
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def writes(self) -> str:
        return f"{self.stage}/round{self.round}"

    def reads(self) -> list[str]:
        return [self.cam_stage] + [f"{self.stage}/round{k}" for k in range(1, self.round)]

    def validate(self) -> None:
        if self.round < 1:
            raise ValueError(f"parameter round must be >= 1, got {self.round}")
        if not 0 < self.mine_threshold < 1:
            raise ValueError(f"parameter mine_threshold must lie in (0, 1), got {self.mine_threshold}")
        if self.erase_value not in ERASE_VALUES:
            raise ValueError(f"parameter erase_value must be one of {ERASE_VALUES}, got {self.erase_value!r}")
        if self.init not in ("fresh", "previous"):
            raise ValueError(f"parameter init must be 'fresh' or 'previous', got {self.init!r}")
        if not 0 <= self.clean_fraction < 1:
            raise ValueError(f"parameter clean_fraction must lie in [0, 1), got {self.clean_fraction}")
        if self.round_epochs < 0:
            raise ValueError(f"parameter round_epochs must be >= 0 (0: the CAM stage's epochs), got {self.round_epochs}")
        if not 0 <= self.mine_prior < 1:
            raise ValueError(f"parameter mine_prior must lie in [0, 1) (0: mine everywhere, the paper), got {self.mine_prior}")
        if self.erase_margin < 0:
            raise ValueError(f"parameter erase_margin must be >= 0 (0: none, the paper), got {self.erase_margin}")
        if self.decoys < 0:
            raise ValueError(f"parameter decoys must be >= 0 (0: none, the paper), got {self.decoys}")


def round_dir(cfg, k: int) -> Path:
    return stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.stage) / f"round{k}"


def cam_recipe(cfg: ErasingConfig) -> tuple[CAMConfig, dict]:
    """The CAM stage's classifier recipe and its metrics.json record."""
    folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.cam_stage)
    record = load_metrics(folder, cfg.profile)
    if record is None:
        raise FileNotFoundError(f"no CAM stage results in {folder}: run notebook 01_cam (stage "
                                f"{cfg.cam_stage!r}) before erasing round {cfg.round}")
    fields = {f.name for f in dataclasses.fields(CAMConfig)}
    return CAMConfig(**{k: v for k, v in record["params"].items() if k in fields}), record


@stage(ErasingConfig, "erasing", trains=True, dataset=False)
def run_round(cfg: ErasingConfig, run_, device, progress: bool) -> dict | None:
    """Run erasing round ``params['round']``; returns its metrics.json record."""
    recipe, cam_record = cam_recipe(cfg)
    previous = [round_dir(cfg, k) for k in range(1, cfg.round)]
    for k, d in enumerate(previous, start=1):
        rec = run_.inputs[f"{cfg.stage}/round{k}"]
        if rec["params"]["inputs"].get(cfg.cam_stage) != cam_record["params_hash"] or any(
                rec["params"].get(p, 0.0 if p == "mine_prior" else None) != getattr(cfg, p)
                for p in ("mine_threshold", "erase_value", "mine_prior")):
            raise ValueError(f"round {k} in {d} was made with other parameters (mine_threshold, erase_value, mine_prior or "
                             f"CAM stage); rerun rounds 1..{cfg.round - 1} with these parameters first")
    folder = run_.folder
    tree = VOCTree(resolve(cfg.data_root))
    split = recipe.train_split
    scored = scored_names(tree, split, recipe.score_split)
    mean_pixel, std_pixel = pixel_statistics(tree, split)
    prev_regions = [d / "regions" for d in previous]
    # the images the round's classifier is scored and mined on: erased as in training (margin
    # included), without the training-only clean images and decoys
    view = ErasedView(tree, split, prev_regions, cfg.erase_value, mean_pixel, std_pixel, seed=cfg.seed,
                      margin=cfg.erase_margin)
    cam_folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.cam_stage)
    out: dict = {"round": cfg.round, "mean_pixel": mean_pixel.round(2).tolist(),
                 "std_pixel": std_pixel.round(2).tolist(), "erase_value": cfg.erase_value,
                 "train_split": split, "score_split": recipe.score_split}
    if cfg.round >= 2:
        recipe = dataclasses.replace(recipe, stage=f"{cfg.stage}/round{cfg.round}", seed=cfg.seed,
                                     num_workers=cfg.num_workers, epochs=cfg.round_epochs or recipe.epochs)
        train_view = ErasedView(tree, split, prev_regions, cfg.erase_value, mean_pixel, std_pixel, seed=cfg.seed,
                                clean_fraction=cfg.clean_fraction, decoys=cfg.decoys, margin=cfg.erase_margin)
        init = None
        if cfg.init == "previous":   # round 2 starts from the CAM classifier, round k from round k - 1's
            init_dir = cam_folder if cfg.round == 2 else previous[-1]
            init = torch.load(init_dir / "model.pt", map_location="cpu", weights_only=False)["model"]
        out.update(init=cfg.init, mine_prior=cfg.mine_prior, clean_fraction=cfg.clean_fraction, decoys=cfg.decoys, erase_margin=cfg.erase_margin,
                   epochs=recipe.epochs)
        with run_.timed("train"):
            model, history = train_classifier(recipe, train_view, tree.num_classes - 1, folder, device,
                                              progress and dist.is_main(), fingerprint=params_hash(run_.params),
                                              fresh=cfg.force, init=init)
    if not dist.is_main():
        return None
    if cfg.round == 1:
        out["train_map"], out["val_map"] = cam_record["metrics"]["train_map"], cam_record["metrics"].get("val_map")
        out["history"] = cam_record["metrics"].get("history", [])
    else:
        save_torch(folder / "model.pt", {"model": model.state_dict(), "num_classes": tree.num_classes - 1,
                                         "config": dataclasses.asdict(recipe), "classes": tree.classes})
        model = fold_batchnorm(model)   # inference only: batch norm folded into the convolutions
        # the erased training images' logits come with their CAMs below when scale 1 is a CAM scale
        classified = {} if 1 in recipe.cam_scales else None
        with run_.timed("classify"):
            if classified is None:
                scores, targets = predict_logits(model, view, device, cfg.eval_batch_size, cfg.num_workers)
                out["train_map"] = M.mean_average_precision(scores, targets)   # on erased training images
            if "val" in tree.splits():
                s, t = predict_logits(model, SegDataset(tree, "val", with_masks=False), device, cfg.eval_batch_size,
                                      cfg.num_workers)
                out["val_map"] = M.mean_average_precision(s, t)              # on clean validation images
        out["history"] = history
    # mine this round's regions
    region_dir = fresh_dir(folder / "regions")
    area = np.zeros(tree.num_classes, np.int64)
    total_px = 0
    meter_round = M.ConfusionMeter(tree.num_classes)
    parts = PartMeter()
    with run_.timed("mine"):
        if cfg.round == 1:
            items = ((n, load_cam(cam_folder, n), np.flatnonzero(tree.labels(n)) + 1) for n in view.names)
        else:
            items = ((n, c, ids) for n, c, ids, _ in _save_cams(
                iterate_cams(model, view, device, recipe.cam_scales, recipe.cam_flip, max(cfg.eval_batch_size // 4, 1),
                             progress, f"round {cfg.round} CAMs", cfg.num_workers, classified=classified),
                folder / "cams"))
        for name, cams, ids in items:
            earlier = view.region_classes(name) if prev_regions else None
            exclude = None if earlier is None else earlier > 0
            if exclude is not None and cfg.mine_prior > 0 and len(ids):
                # a background prior: where the clean image's CAM gives no labelled class even a weak
                # score, this round's classifier is not believed
                exclude = exclude | (load_cam(cam_folder, name).max(axis=0) < cfg.mine_prior)
            regions = mine_regions(cams, ids, cfg.mine_threshold, exclude)
            save_regions(region_dir / f"{name}.png", regions)
            area += np.bincount(regions.ravel(), minlength=tree.num_classes)
            total_px += regions.size
            if name in scored:
                gt = tree.mask(name)
                meter_round.update(regions, gt)
                part = part_map(tree, name)
                if part is not None:
                    parts.update(part, regions, earlier, gt)
    if cfg.round >= 2 and classified is not None:   # on erased training images
        out["train_map"] = M.mean_average_precision(np.concatenate(classified["scores"]),
                                                    np.concatenate(classified["targets"]))
    if parts.total.any():
        out["part_coverage"] = parts.summary()
    out["mined_fraction"] = {c: round(float(a) / max(total_px, 1), 5) for c, a in zip(tree.classes[1:], area[1:])}
    out["mined_total_fraction"] = round(float(area[1:].sum()) / max(total_px, 1), 5)
    if scored:
        # precision of this round's regions alone: the share of mined pixels that are the right class
        conf = meter_round.matrix
        mined = conf[:, 1:].sum()
        out["region_precision"] = float(np.trace(conf[1:, 1:]) / mined) if mined else None
    out.update(safeguards(out, cfg.collapse_map))
    for message in out["warnings"]:
        print(f"warning: round {cfg.round}: {message}")
    return out


def part_map(tree: VOCTree, name: str) -> np.ndarray | None:
    """The scene's part map (1 = class-pattern disc, 2 = rest of an object), or None: a tree
    without parts (PASCAL VOC, scenes made without ``part_size``)."""
    from ..data.scenes import PART_DIR

    path = tree.root / PART_DIR / f"{name}.png"
    return np.asarray(Image.open(path)) if path.exists() else None


class PartMeter:
    """How much of each object part (disc, body) a round's regions find, alone and together
    with the earlier rounds' (only pixels given the right class count)."""

    KEYS = ("disc", "body")

    def __init__(self):
        self.total = np.zeros(2, np.int64)
        self.found = np.zeros(2, np.int64)
        self.cumulative = np.zeros(2, np.int64)

    def update(self, parts: np.ndarray, regions: np.ndarray, earlier: np.ndarray | None,
               gt: np.ndarray) -> None:
        """Add one image: its part map, this round's regions, the earlier rounds' (or None)."""
        right = (regions > 0) & (regions == gt)
        before = np.zeros_like(right) if earlier is None else (earlier > 0) & (earlier == gt)
        for i, p in enumerate((1, 2)):
            where = parts == p
            self.total[i] += where.sum()
            self.found[i] += (right & where).sum()
            self.cumulative[i] += ((right | before) & where).sum()

    def summary(self) -> dict:
        t = np.maximum(self.total, 1)
        return {"this_round": dict(zip(self.KEYS, np.round(self.found / t, 4).tolist())),
                "so_far": dict(zip(self.KEYS, np.round(self.cumulative / t, 4).tolist()))}


def safeguards(metrics: dict, collapse_map: float) -> dict:
    """The round's health, from its saved numbers.

    ``collapsed``: train mAP (on its own erased inputs) below ``collapse_map``: the classifier no
    longer learns, and later rounds would mine background. ``shortcut``: it fits its erased
    inputs but its val mAP on clean images is below ``collapse_map``: it learned the erased
    images (the fill, what is left around it), not the objects.
    """
    train, val = metrics.get("train_map"), metrics.get("val_map")
    collapsed = train is not None and train < collapse_map
    shortcut = not collapsed and val is not None and val < collapse_map
    warnings = []
    if collapsed:
        warnings.append(f"the classifier no longer learns (train mAP {train:.3f} < collapse_map {collapse_map}); "
                        "later rounds would mine background")
    if shortcut:
        warnings.append(f"train mAP {train:.3f} on erased images but val mAP {val:.3f} on clean ones "
                        f"(< collapse_map {collapse_map}): it learned the erased images, not the objects")
    return {"collapsed": bool(collapsed), "shortcut": bool(shortcut), "warnings": warnings}


def _save_cams(items, folder: Path):
    fresh_dir(folder)
    for name, cams, ids, gt in items:
        cams16 = cams.astype(np.float16)
        save_npy(folder / f"{name}.npy", cams16)
        yield name, cams16.astype(np.float32), ids, gt


# --------------------------------------------------------------------------- merging
@dataclass
class MergeConfig(StageConfig):
    """Parameters of the merge into pseudo masks (``notebooks/03_pseudo_masks.py``)."""

    stage: str = "pseudo_masks"   # stage name: the output folder under artifacts_root/profile
    erasing_stage: str = "erasing"   # erasing stage whose mined regions are merged
    cam_stage: str = "cam"   # CAM stage the erasing rounds were trained from
    rounds: int = 3   # number of erasing rounds merged (at least 1)
    score_rounds: int = 0   # also score the masks of the first score_rounds rounds (0: up to rounds); masks are written from rounds
    bg_cue: str = "cam"   # background cue: cam (low peak CAM) or saliency (saliency maps)
    bg_threshold: float = 0.2   # with bg_cue cam: peak CAM below which a pixel is background
    saliency_dir: str = ""   # with bg_cue saliency: folder of name.png saliency maps
    saliency_threshold: float = 0.5   # with bg_cue saliency: saliency below which a pixel is background
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def writes(self) -> str:
        return self.stage

    def reads(self) -> list[str]:
        return [self.cam_stage] + [f"{self.erasing_stage}/round{k}" for k in range(1, self.scored() + 1)]

    def scored(self) -> int:
        """How many round prefixes are scored: ``max(rounds, score_rounds)``."""
        return max(self.rounds, self.score_rounds)

    def validate(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"parameter rounds must be >= 1, got {self.rounds}")
        if self.score_rounds < 0:
            raise ValueError(f"parameter score_rounds must be >= 0 (0: score up to rounds), got {self.score_rounds}")
        if self.bg_cue not in ("cam", "saliency"):
            raise ValueError(f"parameter bg_cue must be 'cam' or 'saliency', got {self.bg_cue!r}")
        if self.bg_cue == "saliency" and not self.saliency_dir:
            raise ValueError("bg_cue 'saliency' needs the parameter saliency_dir (a folder of <name>.png maps)")


def merge_masks(regions: list[np.ndarray], cams: list[np.ndarray], class_ids: np.ndarray,
                background: np.ndarray) -> np.ndarray:
    """Pseudo mask from per-round region maps and CAMs of one image.

    ``regions[r]`` HxW class ids mined in round r; ``cams[r]`` [K,H,W] that round's CAMs of
    ``class_ids``; ``background`` boolean HxW from the cue. A pixel mined for one or more
    classes gets the class with the highest CAM score over rounds; unmined background-cue
    pixels get 0; the rest 255.
    """
    h, w = background.shape
    out = np.full((h, w), 255, np.uint8)
    out[background] = 0
    if len(class_ids) == 0:
        out[:] = 0
        return out
    score = np.stack(cams).max(axis=0)                        # [K,H,W]: best CAM over rounds
    claimed = np.zeros((len(class_ids), h, w), bool)
    for reg in regions:
        for j, c in enumerate(class_ids):
            claimed[j] |= reg == c
    any_claim = claimed.any(axis=0)
    winner = np.where(claimed, score, -np.inf).argmax(axis=0)
    out[any_claim] = np.asarray(class_ids, np.uint8)[winner[any_claim]]
    return out


def _background_cue(cfg: MergeConfig, name: str, cams: list[np.ndarray], shape) -> np.ndarray:
    if cfg.bg_cue == "cam":
        peak = np.stack([c.max(axis=0) if len(c) else np.zeros(shape, np.float32) for c in cams]).max(axis=0)
        return peak < cfg.bg_threshold
    path = resolve(cfg.saliency_dir) / f"{name}.png"
    if not path.exists():
        raise FileNotFoundError(f"missing saliency map {path} (bg_cue 'saliency' needs one PNG per training image)")
    sal = np.asarray(Image.open(path).convert("L"), np.float32) / 255
    if sal.shape != tuple(shape):
        raise ValueError(f"saliency map {path} has size {sal.shape}, its image {tuple(shape)}")
    return sal < cfg.saliency_threshold


def _pseudo_scores(conf: np.ndarray, labelled: int, total: int, classes) -> dict:
    s = M.segmentation_scores(conf, classes)
    s["labelled_fraction"] = round(labelled / max(total, 1), 5)
    return s


@stage(MergeConfig, "pseudo_masks", dataset=False)
def merge(cfg: MergeConfig, run_, device, progress: bool) -> dict:
    """Merge rounds 1..``rounds`` into pseudo masks; score every prefix 1..k on the train split."""
    from ..engine.progress import bar

    er = ErasingConfig(profile=cfg.profile, data_root=cfg.data_root, artifacts_root=cfg.artifacts_root,
                       stage=cfg.erasing_stage, cam_stage=cfg.cam_stage)
    n_scored = cfg.scored()
    rounds = [run_.inputs[f"{cfg.erasing_stage}/round{k}"] for k in range(1, n_scored + 1)]
    for k, rec in enumerate(rounds, start=1):
        if rec["params"].get("cam_stage", "cam") != cfg.cam_stage:
            raise ValueError(f"round {k} of stage {cfg.erasing_stage!r} was trained from CAM stage "
                             f"{rec['params'].get('cam_stage')!r}, but parameter cam_stage is {cfg.cam_stage!r}; "
                             f"merge with cam_stage={rec['params'].get('cam_stage')!r}")
    folder = run_.folder
    tree = VOCTree(resolve(cfg.data_root))
    recipe, _ = cam_recipe(er)
    names = tree.ids(recipe.train_split)
    scored = scored_names(tree, recipe.train_split, recipe.score_split)
    n = tree.num_classes
    meters = [M.ConfusionMeter(n) for _ in range(n_scored)]
    labelled = np.zeros(n_scored, np.int64)
    total = 0
    cam_dirs = [stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.cam_stage) / "cams"] + \
               [round_dir(er, k) / "cams" for k in range(2, n_scored + 1)]
    region_dirs = [round_dir(er, k) / "regions" for k in range(1, n_scored + 1)]
    mask_dir = fresh_dir(folder / "masks")
    with run_.timed("merge"):
        for name in bar(names, desc="merge", disable=not progress, unit="images"):
            ids = np.flatnonzero(tree.labels(name)) + 1
            cams = [load_cam(d.parent, name) for d in cam_dirs]
            regs = [load_regions(d / f"{name}.png") for d in region_dirs]
            gt = tree.mask(name) if name in scored else None
            shape = regs[0].shape
            for k in range(1, n_scored + 1):
                bg = _background_cue(cfg, name, cams[:k], shape)
                pm = merge_masks(regs[:k], cams[:k], ids, bg)
                labelled[k - 1] += int((pm != 255).sum())
                if gt is not None:
                    meters[k - 1].update(np.where(pm == 255, 0, pm), gt)
                if k == cfg.rounds:
                    kept = pm
            total += kept.size
            write_mask(mask_dir / f"{name}.png", kept)
    out: dict = {"rounds": cfg.rounds, "bg_cue": cfg.bg_cue, "classes": tree.classes,
                 "cue": {"bg_cue": cfg.bg_cue, "bg_threshold": cfg.bg_threshold, "saliency_dir": cfg.saliency_dir}}
    if scored:
        out["per_rounds"] = [_pseudo_scores(m.matrix, int(l), total, tree.classes) for m, l in zip(meters, labelled)]
        out["confusion"] = meters[cfg.rounds - 1].matrix
        out["miou"] = out["per_rounds"][cfg.rounds - 1]["miou"]
        best = int(np.nanargmax([p["miou"] for p in out["per_rounds"]]))
        out["best_rounds"] = best + 1
    out["round_train_map"] = [r["metrics"]["train_map"] for r in rounds]
    out["round_val_map"] = [r["metrics"].get("val_map") for r in rounds]
    out["round_precision"] = [r["metrics"].get("region_precision") for r in rounds]
    out["round_part_coverage"] = [r["metrics"].get("part_coverage") for r in rounds]
    out["mask_count"] = len(names)
    out["train_split"], out["score_split"] = recipe.train_split, recipe.score_split
    return out


def rounds_available(artifacts_root: str, profile: str, stage: str, most: int) -> int:
    """How many consecutive rounds (1, 2, ...) of ``stage`` have finished, at most ``most``."""
    cfg = ErasingConfig(profile=profile, artifacts_root=artifacts_root, stage=stage)
    k = 0
    while k < most and load_metrics(round_dir(cfg, k + 1)) is not None:
        k += 1
    return k


