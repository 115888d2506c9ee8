"""The embedded default: scenes of real Fashion-MNIST items on real photo/texture backgrounds.

Each scene is an RGB image with 1..``max_items`` items of distinct classes.  An item is a
28x28 Fashion-MNIST picture, scaled up, tinted with a colour (its own grey shading is kept as
texture) and pasted onto a random crop of one of scikit-image's bundled photos. The hue is drawn
from a band around the class's own (``class_hue`` of the colour wheel wide, neighbouring bands
overlapping), so a body hints at its class the way a real object's colour does; ``class_hue: 1``
draws any hue.
Later items may occlude earlier ones; an item that stays less than ``min_visible`` visible
is dropped from the label set and its pixels go back to the item in front or background.
The mask is exact: every pixel belongs to the item drawn last on it, or to background.

With ``part_size`` set, every item also carries a *discriminative part*: a disc filled with a
black-and-white pattern that belongs to its class (the same outline for every class, the
pattern left-right symmetric so a mirrored scene keeps its meaning). The disc is part of the
object in the mask; ``SegmentationPart/<name>.png`` marks which object pixels are disc (1) and
which are body (2), so the book can measure how much of each part a CAM or a mined region finds.

The scenes are written as a VOC-style tree (see :mod:`aepsl.data.voc`), so the embedded
data and PASCAL VOC go through one reader.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.artifacts import params_hash, read_json, write_json
from . import voc
from .sources import FASHION_CLASSES, SHAPE_CLASSES, load_fashion_mnist, shape_items

# scikit-image images bundled inside the wheel (no download needed)
BACKGROUND_IMAGES = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass",
                     "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page",
                     "rocket", "text", "chelsea", "motorcycle_left", "retina", "clock")

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
PART_DIR = "SegmentationPart"   # per object pixel: 1 = the class-pattern disc, 2 = the rest


@dataclass
class SceneConfig:
    """Parameters of the scene generator (they appear in notebooks/params/*.yaml)."""

    data_root: str = "data/scenes-default"   # scene folder to write, or VOC tree to check (source voc); repo-relative
    source: str = "fashion"   # items: fashion (Fashion-MNIST), shapes (built-in) or voc (existing tree)
    classes: list = field(default_factory=lambda: ["tshirt", "trouser", "dress", "sneaker", "bag", "boot"])   # item classes to draw, chosen from the class names of the source
    fashion_dir: str = ""   # folder of the Fashion-MNIST IDX files (empty: search the usual places)
    fashion_download: bool = False   # download Fashion-MNIST via torchvision when no local copy is found
    image_size: int = 96   # side of each square scene image, px
    n_train: int = 1000   # number of training scenes
    n_val: int = 200   # number of validation scenes
    n_test: int = 200   # number of test scenes
    min_items: int = 1   # fewest items pasted into one scene (at least 1)
    max_items: int = 3   # most items per scene, each of another class (at most the number of classes)
    item_size: list = field(default_factory=lambda: [48, 72])   # [min, max] side of a pasted item, px (within 8 and image_size)
    min_visible: float = 0.7   # fraction of an item that must stay visible, else it is dropped
    bg_contrast: float = 0.6   # background contrast relative to the photo (1: unchanged)
    part_size: list = field(default_factory=lambda: [20, 26])   # [min, max] diameter of each item's class-pattern disc, px ([0, 0]: no disc)
    class_hue: float = 0.34   # width of each class's band of item hues, share of the colour wheel (1: any hue, colour tells nothing)
    seed: int = 0   # random seed of the scene generator

    def validate(self) -> None:
        if self.source not in ("fashion", "shapes"):
            raise ValueError(f"parameter source must be 'fashion' or 'shapes', got {self.source!r}")
        names = FASHION_CLASSES if self.source == "fashion" else SHAPE_CLASSES
        unknown = [c for c in self.classes if c not in names]
        if unknown or not self.classes:
            raise ValueError(f"parameter classes: unknown class(es) {unknown} for source "
                             f"{self.source!r}; choose from {list(names)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"parameter classes has duplicates: {self.classes}")
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if self.max_items > len(self.classes):
            raise ValueError(f"max_items={self.max_items} exceeds the number of classes {len(self.classes)}")
        lo, hi = self.item_size
        if not 8 <= lo <= hi <= self.image_size:
            raise ValueError(f"parameter item_size {self.item_size} must lie within [8, image_size={self.image_size}]")
        plo, phi = self.part_size
        if (plo, phi) != (0, 0) and not 6 <= plo <= phi <= lo:
            raise ValueError(f"parameter part_size {self.part_size} must be [0, 0] (no part) or lie within "
                             f"[6, smallest item side {lo}]")
        if (plo, phi) != (0, 0) and len(self.classes) > len(PATTERNS):
            raise ValueError(f"parameter part_size: {len(self.classes)} classes but only {len(PATTERNS)} part patterns")
        if not 0 < self.class_hue <= 1:
            raise ValueError(f"parameter class_hue must lie in (0, 1] (1: any hue), got {self.class_hue}")
        for k in ("n_train", "n_val", "n_test"):
            if getattr(self, k) < 0:
                raise ValueError(f"parameter {k} must be >= 0")

    def generator_params(self) -> dict:
        """The parameters that determine the pixels (everything except where they go)."""
        d = dataclasses.asdict(self)
        d.pop("data_root")
        d.pop("fashion_dir")
        d.pop("fashion_download")
        if d["class_hue"] == 1.0:   # any hue: the scenes made before the parameter existed
            d.pop("class_hue")
        return d


# --------------------------------------------------------------------------- backgrounds
def load_backgrounds(min_side: int = 128) -> list[np.ndarray]:
    """scikit-image's bundled photos and textures as RGB uint8 arrays."""
    import skimage.data

    out = []
    for name in BACKGROUND_IMAGES:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # an image that would need a download: skip it
            continue
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float32) / max(float(img.max()), 1e-6))).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        if min(img.shape[:2]) >= min_side:
            out.append(np.ascontiguousarray(img))
    if not out:
        raise RuntimeError("no background image could be loaded from skimage.data")
    return out


def _background(rng: np.random.Generator, backgrounds: list[np.ndarray], size: int,
                contrast: float) -> np.ndarray:
    img = backgrounds[rng.integers(len(backgrounds))]
    h, w = img.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    arr = np.asarray(crop).astype(np.float32)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    mean = arr.mean(axis=(0, 1), keepdims=True)
    return mean + contrast * (arr - mean)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


# --------------------------------------------------------------------------- the parts
def _pattern(k: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class ``k``'s black (False) / white (True) pattern at disc coordinates x, y in [-1, 1].
    Every pattern is symmetric under x -> -x (a mirrored scene keeps its classes)."""
    u, r = np.abs(x), np.hypot(x, y)
    if k == 0:
        return np.cos(3 * np.pi * y) > 0                          # horizontal stripes
    if k == 1:
        return np.cos(3.5 * np.pi * r) > 0                        # rings
    if k == 2:
        return np.cos(3 * np.pi * x) > 0                          # vertical stripes
    if k == 3:
        return np.cos(2 * np.pi * x) * np.cos(2 * np.pi * y) > 0  # checkerboard
    if k == 4:
        return np.cos(3 * np.pi * (y + u)) > 0                    # chevrons
    if k == 5:
        return (u < 0.28) | (np.abs(y) < 0.28)                    # a plus
    if k == 6:
        return np.abs(u - np.abs(y)) < 0.3                        # a diagonal cross
    if k == 7:
        return (np.cos(3 * np.pi * x) * np.cos(3 * np.pi * y)) > 0.35   # dots
    if k == 8:
        return (r < 0.35) | (r > 0.7)                             # a dot in a ring
    if k == 9:
        return y > 0                                              # halves
    raise ValueError(k)


PATTERNS = tuple(range(10))


def draw_part(canvas: np.ndarray, owner: np.ndarray, part: np.ndarray, slot: int, cls: int,
              shape: np.ndarray, y0: int, x0: int, diameter: int, rng: np.random.Generator) -> None:
    """Paint class ``cls``'s pattern disc onto the item (``shape`` at y0, x0) in place.

    The centre is drawn among the item's pixels farthest inside its silhouette (the disc sits
    on the item, not beside it); the disc's pixels join the item in ``owner`` and are marked
    in ``part``."""
    from scipy.ndimage import distance_transform_edt

    size = canvas.shape[0]
    depth = distance_transform_edt(np.pad(shape, 1))[1:-1, 1:-1]
    deep = np.argwhere(depth >= min(depth.max(), diameter / 4))
    cy, cx = deep[rng.integers(len(deep))] + (y0, x0)
    r = diameter / 2
    cy = int(np.clip(cy, np.ceil(r), size - np.ceil(r)))
    cx = int(np.clip(cx, np.ceil(r), size - np.ceil(r)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (xx + 0.5 - cx) / r, (yy + 0.5 - cy) / r
    disc = x ** 2 + y ** 2 <= 1
    white = _pattern(cls, x[disc], y[disc])
    canvas[disc] = np.where(white[:, None], 235.0, 20.0)
    owner[disc] = slot
    part[disc] = slot


# --------------------------------------------------------------------------- one scene
def make_scene(rng: np.random.Generator, items: np.ndarray, item_labels: np.ndarray,
               by_class: list[np.ndarray], cfg: SceneConfig, backgrounds: list[np.ndarray]):
    """Compose one scene. Returns (image uint8 HxWx3, mask uint8 HxW, sorted class indices >= 1,
    part map uint8 HxW: 1 = disc, 2 = rest of an object, 0 = background or ignored)."""
    size = cfg.image_size
    canvas = _background(rng, backgrounds, size, cfg.bg_contrast)
    owner = np.zeros((size, size), np.int16)          # 0 = background, k = k-th pasted item
    part = np.zeros((size, size), np.int16)           # k where the k-th item's disc is
    n_items = int(rng.integers(cfg.min_items, cfg.max_items + 1))
    chosen = rng.choice(len(cfg.classes), size=n_items, replace=False)
    classes, areas = [], []
    for slot, cls in enumerate(chosen, start=1):
        pool = by_class[cls]
        item = items[pool[rng.integers(len(pool))]]
        side = int(rng.integers(cfg.item_size[0], cfg.item_size[1] + 1))
        grey = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR)).astype(np.float32) / 255
        shape = grey > 0.15
        if rng.random() < 0.5:
            grey, shape = grey[:, ::-1], shape[:, ::-1]
        y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        hue = rng.random()
        if cfg.class_hue < 1:   # a band of hues around the class's own, neighbouring bands overlapping
            hue = (cls / len(cfg.classes) + (hue - 0.5) * cfg.class_hue) % 1.0
        colour = _hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0)) * 255
        shade = 0.35 + 0.65 * grey[..., None]
        region = canvas[y:y + side, x:x + side]
        region[shape] = (shade * colour)[shape]
        owner[y:y + side, x:x + side][shape] = slot
        part[owner == slot] = 0                       # an earlier disc under this item is hidden
        if cfg.part_size[1] > 0:
            diameter = int(rng.integers(cfg.part_size[0], cfg.part_size[1] + 1))
            draw_part(canvas, owner, part, slot, int(cls), shape, y, x, diameter, rng)
        classes.append(int(cls) + 1)
        areas.append(int((owner == slot).sum()))
    # drop items that ended up mostly hidden: their visible pixels keep their colours but
    # are marked ignore (255) so no pixel is labelled with a class missing from the labels
    mask = np.zeros((size, size), np.uint8)
    kept = []
    for slot, (cls, area) in enumerate(zip(classes, areas), start=1):
        visible = owner == slot
        if area > 0 and visible.sum() >= cfg.min_visible * area:
            mask[visible] = cls
            kept.append(cls)
        else:
            mask[visible] = 255
    image = np.clip(canvas + rng.normal(0, 3.0, canvas.shape), 0, 255).astype(np.uint8)
    parts = np.where((mask > 0) & (mask != 255), 2, 0).astype(np.uint8)
    parts[(part > 0) & (part == owner) & (mask > 0) & (mask != 255)] = 1
    return image, mask, sorted(kept), parts


# --------------------------------------------------------------------------- a whole tree
def _item_pool(cfg: SceneConfig, part: str):
    if cfg.source == "shapes":
        images, labels = shape_items(n_per_class=64, seed=cfg.seed * 10 + (part == "test"))
        names = SHAPE_CLASSES
    else:
        images, labels = load_fashion_mnist(part, cfg.fashion_dir or None, cfg.fashion_download)
        names = FASHION_CLASSES
    by_class = [np.flatnonzero(labels == names.index(c)) for c in cfg.classes]
    return images, labels, by_class


def generate(cfg: SceneConfig, force: bool = False, progress: bool = True) -> dict:
    """Write the scene tree to ``cfg.data_root`` (skipped when it exists with the same parameters).

    Train scenes use Fashion-MNIST's training items; val and test scenes use its test items,
    so no item picture is shared between training and evaluation.
    Returns the tree's ``dataset.json`` record.
    """
    cfg.validate()
    root = Path(cfg.data_root)
    record_path = root / "dataset.json"
    want = cfg.generator_params()
    if record_path.exists() and not force:
        record = read_json(record_path)
        if record.get("params_hash") == params_hash(want):
            return record
    t0 = time.time()
    backgrounds = load_backgrounds()
    pools = {"train": _item_pool(cfg, "train")}
    pools["test"] = _item_pool(cfg, "test")
    from ..engine.progress import bar

    if record_path.exists():
        record_path.unlink()  # the tree is being rewritten: it is not complete until the end
    labels: dict[str, list[int]] = {}
    counts = {}
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        images, item_labels, by_class = pools["train" if split == "train" else "test"]
        names = []
        for i in bar(range(n), desc=f"scenes {split}", disable=not progress, unit="scenes"):
            rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], i])
            image, mask, cls, parts = make_scene(rng, images, item_labels, by_class, cfg, backgrounds)
            name = f"{split}_{i:06d}"
            voc.write_image(root / "JPEGImages" / f"{name}.jpg", image)
            voc.write_mask(root / "SegmentationClass" / f"{name}.png", mask)
            if cfg.part_size[1] > 0:
                voc.write_mask(root / PART_DIR / f"{name}.png", parts)
            labels[name] = cls
            names.append(name)
        voc.write_split(root, split, names)
        counts[split] = n
    voc.write_classes(root, ["background"] + list(cfg.classes))
    voc.write_image_labels(root, labels)
    record = {"generator": "aepsl.data.scenes", "params": want, "params_hash": params_hash(want),
              "counts": counts, "backgrounds": len(backgrounds),
              "seconds": round(time.time() - t0, 2)}
    write_json(record_path, record)
    return record
