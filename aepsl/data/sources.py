"""Item sources for the embedded scenes: real Fashion-MNIST items, or tiny drawn shapes.

An item source is a pair ``(images, labels)``: ``images`` uint8 [N, 28, 28] grey items on a
black background, ``labels`` int64 [N] indices into the source's class list.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "boot")
SHAPE_CLASSES = ("disc", "square", "triangle", "cross", "ring", "bar")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataSourceError(RuntimeError):
    """Raised when an item source cannot be found."""


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"corrupt Fashion-MNIST file {path}: {exc}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"corrupt Fashion-MNIST file {path}: not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"corrupt Fashion-MNIST file {path}: expected {dims}, found {arr.size} bytes")
    return arr.reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def _folder_has_fashion(folder: Path) -> bool:
    return all(_find_file(folder, s) is not None for pair in _FILES.values() for s in pair)


def find_fashion_mnist(fashion_dir: str | os.PathLike | None = None, download: bool = False,
                       download_dir: str | os.PathLike = "data/fashion-mnist") -> Path:
    """Locate the Fashion-MNIST IDX files, in this order:

    1. ``fashion_dir`` (a parameter) or the ``AEPSL_FASHION_MNIST`` environment variable;
    2. the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
    3. a torchvision download into ``download_dir`` -- only when ``download=True``.
    """
    tried = []
    candidates = [fashion_dir, os.environ.get("AEPSL_FASHION_MNIST")]
    for cand in candidates:
        if cand:
            folder = Path(cand)
            tried.append(str(folder))
            if _folder_has_fashion(folder):
                return folder
            if (folder / "FashionMNIST" / "raw").exists() and _folder_has_fashion(folder / "FashionMNIST" / "raw"):
                return folder / "FashionMNIST" / "raw"
    tried.append(str(DEBIAN_FASHION_DIR))
    if _folder_has_fashion(DEBIAN_FASHION_DIR):
        return DEBIAN_FASHION_DIR
    raw = Path(download_dir) / "FashionMNIST" / "raw"
    if _folder_has_fashion(raw):
        return raw
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(str(download_dir), train=train, download=True)
            return raw
        except Exception as exc:  # network errors come in many types
            tried.append(f"torchvision download into {download_dir} failed: {exc}")
    raise DataSourceError(
        "Fashion-MNIST was not found (looked in: " + "; ".join(tried) + "). Provide it in one of three ways:\n"
        "  1. a local folder holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz),\n"
        "     t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz): set the parameter fashion_dir\n"
        "     (or the environment variable AEPSL_FASHION_MNIST) to it;\n"
        "  2. the Debian package: sudo apt-get install dataset-fashion-mnist\n"
        "     (installs /usr/share/datasets/fashion-mnist);\n"
        "  3. where a network exists, set the parameter fashion_download: true to fetch it with torchvision.\n"
        "Or use the built-in drawn shapes (source: shapes), which need no files.")


def load_fashion_mnist(part: str = "train", fashion_dir=None, download: bool = False,
                       download_dir="data/fashion-mnist") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``part`` ('train' = 60,000 items or 'test' = 10,000) as (images, labels)."""
    if part not in _FILES:
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    folder = find_fashion_mnist(fashion_dir, download, download_dir)
    img_stem, lab_stem = _FILES[part]
    images = _read_idx(_find_file(folder, img_stem))
    labels = _read_idx(_find_file(folder, lab_stem)).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"Fashion-MNIST files in {folder} disagree: {images.shape} images, {labels.shape} labels")
    return images, labels


def _draw_shape(kind: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """One grey 28x28 shape with a little random jitter and an internal shading gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2 + rng.uniform(-1.5, 1.5, size=2)
    r = rng.uniform(8.0, 12.0)
    dy, dx = yy - c[0], xx - c[1]
    name = SHAPE_CLASSES[kind]
    if name == "disc":
        m = dy ** 2 + dx ** 2 <= r ** 2
    elif name == "square":
        m = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    elif name == "triangle":
        m = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    elif name == "cross":
        w = r * 0.3
        m = ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    elif name == "ring":
        d2 = dy ** 2 + dx ** 2
        m = (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
    else:  # bar
        m = (np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)
    shade = 0.6 + 0.4 * (xx + yy) / (2 * size)
    return (m * shade * 255).astype(np.uint8)


def shape_items(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A built-in item source that needs no files: ``len(SHAPE_CLASSES)`` drawn shapes."""
    rng = np.random.default_rng([seed, 7])
    labels = np.repeat(np.arange(len(SHAPE_CLASSES)), n_per_class)
    images = np.stack([_draw_shape(int(k), rng) for k in labels])
    return images, labels.astype(np.int64)
