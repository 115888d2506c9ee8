"""The one reader/writer for VOC-style dataset trees.

Layout under ``root`` (our generated scenes and real PASCAL VOC 2012 + SBD alike)::

    JPEGImages/<name>.jpg                  RGB images
    SegmentationClass/<name>.png           palette ("P") or grayscale ("L") PNG,
                                           pixel = class index, 255 = ignore
    ImageSets/Segmentation/<split>.txt     one image name per line
    classes.txt                            one class name per line, 0 = background
    image_labels.json | cls_labels.npy     optional image-level labels

Image-level labels come from ``image_labels.json`` (``{name: [class ids >= 1 or class names]}``),
else from a PSA/IRN-style ``cls_labels.npy`` (pickled ``{name: float[C-1]}``),
else they are derived from the mask (in ``mask_dir``, else in ``SegmentationClassAug/``).

PASCAL VOC 2012 with SBD's augmented training list: ``ImageSets/Segmentation/train_aug.txt``
(10,582 names; plain or PSA-style ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` lines)
and ``SegmentationClassAug/`` or ``cls_labels.npy`` for the labels of the SBD images, which
have no mask in VOC's own ``SegmentationClass/``. :mod:`aepsl.data.sbd` builds all three
from the SBD release; :func:`check_tree` says what is missing and where it comes from.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..engine.artifacts import atomic_path, read_json, write_json, write_text

__all__ = [
    "VOC_CLASSES", "PALETTE", "IGNORE_INDEX", "write_image", "write_mask", "write_split",
    "write_classes", "write_image_labels", "VOCTree", "SegDataset", "check_tree",
]

IGNORE_INDEX = 255

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def _voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (bit-interleaved class index), 256 * 3 ints."""
    palette: list[int] = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.extend((r, g, b))
    return palette


PALETTE: list[int] = _voc_palette()

IMAGE_DIR = "JPEGImages"
SPLIT_DIR = Path("ImageSets") / "Segmentation"
CLASSES_FILE = "classes.txt"
LABELS_JSON = "image_labels.json"
LABELS_NPY = "cls_labels.npy"
AUG_MASK_DIR = "SegmentationClassAug"   # SBD's masks as PNGs (the DeepLab/PSA convention)
SBD_HINT = (f"SBD's augmented set (Hariharan et al. 2011; the 10,582-image train_aug list) brings "
            f"ImageSets/Segmentation/train_aug.txt and, for its images, {AUG_MASK_DIR}/<name>.png "
            f"masks or a {LABELS_NPY} of image labels: `python -m aepsl.data.sbd --voc <VOC2012> "
            f"--sbd <benchmark_RELEASE>` writes all three from the SBD release "
            f"(or copy PSA's/IRN's voc12/train_aug.txt and voc12/cls_labels.npy)")


# --------------------------------------------------------------------------- writers
def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB array as a JPEG (quality 95), atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_image({path}): expected an HxWx3 uint8 array, "
                         f"got shape {image.shape} dtype {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="JPEG", quality=95)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an HxW uint8 class-index array as a palette PNG (VOC colours), atomically."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"write_mask({path}): expected an HxW uint8 array, "
                         f"got shape {mask.shape} dtype {mask.dtype}")
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    img.putpalette(PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_split(root: str | os.PathLike, split: str, names: list[str]) -> None:
    """Write ``ImageSets/Segmentation/<split>.txt`` (one name per line)."""
    names = [str(n) for n in names]
    bad = [n for n in names if not n or any(ch.isspace() for ch in n)]
    if bad:
        raise ValueError(f"write_split({split}): image names must be non-empty without "
                         f"whitespace, got {bad[0]!r}")
    write_text(Path(root) / SPLIT_DIR / f"{split}.txt", "".join(n + "\n" for n in names))


def write_classes(root: str | os.PathLike, classes: list[str]) -> None:
    """Write ``classes.txt`` (index 0 = background)."""
    classes = [str(c).strip() for c in classes]
    _check_classes(classes, Path(root) / CLASSES_FILE)
    write_text(Path(root) / CLASSES_FILE, "".join(c + "\n" for c in classes))


def write_image_labels(root: str | os.PathLike, labels: dict[str, list[int]]) -> None:
    """Write ``image_labels.json``: ``{name: sorted unique class indices >= 1}``."""
    out: dict[str, list[int]] = {}
    for name, ids in labels.items():
        ids = sorted({int(i) for i in ids})
        if ids and ids[0] < 1:
            raise ValueError(f"write_image_labels: image {name!r} has label {ids[0]}; "
                             "image-level labels are foreground class indices >= 1")
        out[str(name)] = ids
    write_json(Path(root) / LABELS_JSON, out)


# --------------------------------------------------------------------------- checks and readers
def _check_classes(classes: list[str], path: Path) -> None:
    if len(classes) < 2:
        raise ValueError(f"{path}: need at least 2 classes (background + one foreground), "
                         f"got {len(classes)}")
    if len(classes) > IGNORE_INDEX:
        raise ValueError(f"{path}: at most {IGNORE_INDEX} classes fit a uint8 mask, "
                         f"got {len(classes)}")
    if any(not c for c in classes):
        raise ValueError(f"{path}: empty class name")
    seen: set[str] = set()
    for c in classes:
        if c in seen:
            raise ValueError(f"{path}: duplicate class name {c!r}")
        seen.add(c)


def _decode_int_name(key: Any) -> str:
    """IRN stores VOC names as ints (2007000032 for 2007_000032); turn them back."""
    if isinstance(key, (int, np.integer)):
        s = str(int(key))
        return s[:4] + "_" + s[4:] if len(s) > 4 else s
    return str(key)


class VOCTree:
    """Read access to a VOC-style tree (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, mask_dir: str = "SegmentationClass"):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root not found: {self.root} (create the embedded data with "
                "`python -m aepsl --profile default --only 00_data`; for PASCAL VOC point "
                "data_root at VOCdevkit/VOC2012)")
        self.image_dir = self.root / IMAGE_DIR
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir} "
                                    f"(expected {IMAGE_DIR}/<name>.jpg under {self.root})")
        self.mask_dir = self.root / mask_dir
        self.split_dir = self.root / SPLIT_DIR
        self.classes: list[str] = self._load_classes()
        self.num_classes: int = len(self.classes)
        self._labels: dict[str, np.ndarray] | None = None  # parsed labels file, loaded once
        self._labels_source: Path | None = None
        self._derived: dict[str, np.ndarray] = {}            # labels derived from masks

    def __repr__(self) -> str:
        return (f"VOCTree(root={str(self.root)!r}, mask_dir={self.mask_dir.name!r}, "
                f"num_classes={self.num_classes})")

    # ----------------------------------------------------------------- classes
    def _looks_like_voc(self) -> bool:
        return "VOC" in self.root.resolve().name or (self.split_dir / "trainval.txt").is_file()

    def _load_classes(self) -> list[str]:
        path = self.root / CLASSES_FILE
        if path.is_file():
            classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            _check_classes(classes, path)
            return classes
        if self._looks_like_voc():
            return list(VOC_CLASSES)
        raise FileNotFoundError(
            f"class list not found: {path} (write one class name per line, "
            "background first; only PASCAL VOC trees fall back to the 21 VOC names)")

    # ----------------------------------------------------------------- splits
    def splits(self) -> list[str]:
        """Names of the split files present under ImageSets/Segmentation."""
        if not self.split_dir.is_dir():
            return []
        return sorted(p.stem for p in self.split_dir.glob("*.txt"))

    def ids(self, split: str) -> list[str]:
        """Image names of ``split`` in file order."""
        path = self.split_dir / f"{split}.txt"
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            hint = f". {SBD_HINT}" if split == "train_aug" else ""
            raise FileNotFoundError(f"split file not found: {path} "
                                    f"(available splits: {available}){hint}")
        names = []
        for line in path.read_text().splitlines():
            tokens = line.split()
            if not tokens:
                continue
            first = tokens[0]
            # PSA-style lists: "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
            names.append(Path(first).stem if "/" in first or first.endswith(".jpg") else first)
        return names

    # ----------------------------------------------------------------- files
    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def mask_path(self, name: str) -> Path:
        return self.mask_dir / f"{name}.png"

    def image(self, name: str) -> np.ndarray:
        """HxWx3 uint8 RGB image."""
        path = self.image_path(name)
        try:
            with Image.open(path) as img:
                img.load()
                arr = np.array(img.convert("RGB"))   # writable: torch.from_numpy warns on read-only arrays
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path}") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"corrupt image file {path}: {exc}") from None
        return arr

    def image_size(self, name: str) -> tuple[int, int]:
        """(width, height) of the image from its header only."""
        path = self.image_path(name)
        try:
            with Image.open(path) as img:
                return img.size
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"corrupt image file {path}: {exc}") from None

    def _read_mask(self, name: str, path: Path | None = None) -> np.ndarray:
        path = self.mask_path(name) if path is None else path
        try:
            with Image.open(path) as img:
                img.load()
                mode = img.mode
                arr = np.array(img) if mode in ("P", "L") else None
        except FileNotFoundError:
            raise FileNotFoundError(f"mask file not found: {path}") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"corrupt mask file {path}: {exc}") from None
        if arr is None:
            raise ValueError(f"mask file {path} has mode {mode!r}; expected a palette ('P') "
                             "or grayscale ('L') PNG of class indices")
        bad = (arr >= self.num_classes) & (arr != IGNORE_INDEX)
        if bad.any():
            value = int(arr[bad][0])
            raise ValueError(f"mask file {path} contains value {value}, but there are only "
                             f"{self.num_classes} classes (0..{self.num_classes - 1}, "
                             f"{IGNORE_INDEX} = ignore)")
        return arr

    def mask(self, name: str) -> np.ndarray:
        """HxW uint8 class-index mask (255 = ignore), checked against the image size."""
        arr = self._read_mask(name)
        w, h = self.image_size(name)
        if arr.shape != (h, w):
            raise ValueError(
                f"mask file {self.mask_path(name)} is {arr.shape[1]}x{arr.shape[0]} (WxH) but "
                f"image file {self.image_path(name)} is {w}x{h}")
        return arr

    def has_masks(self, split: str) -> bool:
        """True when every image of ``split`` has a mask file (False for an empty split)."""
        names = self.ids(split)
        if not names or not self.mask_dir.is_dir():
            return False
        return all(self.mask_path(n).is_file() for n in names)

    # ----------------------------------------------------------------- labels
    def _load_labels_file(self) -> None:
        json_path = self.root / LABELS_JSON
        npy_path = self.root / LABELS_NPY
        table: dict[str, np.ndarray] = {}
        if json_path.is_file():
            raw = read_json(json_path)
            if not isinstance(raw, dict):
                raise ValueError(f"{json_path}: expected a JSON object {{name: [class ids]}}")
            for name, ids in raw.items():
                table[str(name)] = self._ids_to_multihot(ids, json_path, name)
            self._labels_source = json_path
        elif npy_path.is_file():
            try:
                raw = np.load(npy_path, allow_pickle=True).item()
            except (OSError, ValueError, EOFError) as exc:
                raise ValueError(f"corrupt labels file {npy_path}: {exc}") from None
            if not isinstance(raw, dict):
                raise ValueError(f"{npy_path}: expected a pickled dict name -> float array")
            for key, vec in raw.items():
                name = _decode_int_name(key)
                vec = np.asarray(vec, dtype=np.float32).reshape(-1)
                if vec.shape[0] != self.num_classes - 1:
                    raise ValueError(
                        f"{npy_path}: image {name!r} has a label vector of length "
                        f"{vec.shape[0]}, expected {self.num_classes - 1} (foreground classes)")
                table[name] = (vec > 0.5).astype(np.float32)
            self._labels_source = npy_path
        self._labels = table

    def label_mask_path(self, name: str) -> Path | None:
        """The mask image-level labels are derived from when no labels file covers ``name``:
        ``mask_dir``'s, else SBD's ``SegmentationClassAug/`` one; None when neither exists."""
        for path in (self.mask_path(name), self.root / AUG_MASK_DIR / f"{name}.png"):
            if path.is_file():
                return path
        return None

    def has_labels(self, name: str) -> bool:
        """Whether image-level labels for ``name`` exist (labels file or a mask), without reading masks."""
        if self._labels is None:
            self._load_labels_file()
        assert self._labels is not None
        return name in self._labels or name in self._derived or self.label_mask_path(name) is not None

    def _ids_to_multihot(self, ids: Any, path: Path, name: str) -> np.ndarray:
        """Class indices (1 = first foreground class) or class names -> multi-hot."""
        if not isinstance(ids, (list, tuple)):
            raise ValueError(f"{path}: image {name!r} must map to a list of class indices or names")
        vec = np.zeros(self.num_classes - 1, dtype=np.float32)
        for i in ids:
            if isinstance(i, str):
                if i not in self.classes[1:]:
                    raise ValueError(f"{path}: image {name!r} names unknown class {i!r}; the foreground "
                                     f"classes are {self.classes[1:]}")
                i = self.classes.index(i)
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise ValueError(f"{path}: image {name!r} has label {i!r}, neither a class index nor a name")
            if not 1 <= i < self.num_classes:
                raise ValueError(f"{path}: image {name!r} has label {i}, outside the foreground "
                                 f"classes 1..{self.num_classes - 1}")
            vec[i - 1] = 1.0
        return vec

    def labels(self, name: str) -> np.ndarray:
        """float32 multi-hot over the foreground classes (index i is class i + 1)."""
        if self._labels is None:
            self._load_labels_file()
        assert self._labels is not None
        vec = self._labels.get(name)  # names missing from the labels file use the mask
        if vec is None:
            vec = self._derived.get(name)
        if vec is None:
            path = self.label_mask_path(name)
            if path is None:
                where = f"not in {self._labels_source} and " if self._labels_source else ""
                aug = self.root / AUG_MASK_DIR / f"{name}.png"
                hint = f" or {aug}. {SBD_HINT}" if self._looks_like_voc() else ""
                raise FileNotFoundError(f"no image-level labels for {name!r}: {where}"
                                        f"mask file not found: {self.mask_path(name)}{hint}")
            present = np.unique(self._read_mask(name, path))
            present = present[(present != 0) & (present != IGNORE_INDEX)].astype(np.int64)
            vec = np.zeros(self.num_classes - 1, dtype=np.float32)
            vec[present - 1] = 1.0
            self._derived[name] = vec
        return vec.copy()


class SegDataset(torch.utils.data.Dataset):
    """Samples ``dict(image, mask, labels, name)`` of one split; no transforms."""

    def __init__(self, tree: VOCTree, split: str, with_masks: bool = True):
        self.tree = tree
        self.split = split
        self.with_masks = with_masks
        self.names = tree.ids(split)
        if with_masks and self.names and not tree.has_masks(split):
            missing = next(n for n in self.names if not tree.mask_path(n).is_file())
            raise FileNotFoundError(f"split {split!r} has images without masks, e.g. "
                                    f"{tree.mask_path(missing)} (use with_masks=False)")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        return {
            "image": self.tree.image(name),
            "mask": self.tree.mask(name) if self.with_masks else None,
            "labels": self.tree.labels(name),
            "name": name,
        }


def check_tree(tree: VOCTree, splits: list[str], labelled: list[str] | None = None) -> dict[str, int]:
    """Check that every split file of ``splits`` exists and each listed image has its JPEG, and
    that the images of ``labelled`` (default: all of ``splits``) have image-level labels.

    Reads no pixels (file existence only, fast enough for the 10,582-image train_aug list);
    raises one FileNotFoundError naming the first missing file and where it comes from.
    Returns the number of images per split.
    """
    labelled = list(splits) if labelled is None else list(labelled)
    counts = {}
    for split in dict.fromkeys(list(splits) + labelled):
        names = tree.ids(split)
        if not names:
            raise ValueError(f"split file {tree.split_dir / (split + '.txt')} lists no images")
        missing = next((n for n in names if not tree.image_path(n).is_file()), None)
        if missing is not None:
            raise FileNotFoundError(f"image file not found: {tree.image_path(missing)} (listed in "
                                    f"{tree.split_dir / (split + '.txt')}; PASCAL VOC's JPEGImages/ holds "
                                    f"every VOC 2012 and SBD image)")
        if split in labelled:
            unlabelled = next((n for n in names if not tree.has_labels(n)), None)
            if unlabelled is not None:
                tree.labels(unlabelled)  # raises the reader's message (labels file, masks, SBD)
        counts[split] = len(names)
    return counts
