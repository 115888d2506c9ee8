"""Reading the seeds the stages saved: CAMs (float16 .npy) and masks (palette PNGs), as the next
stage and the comparisons read them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics as M


def load_cam(folder: str | Path, name: str) -> np.ndarray:
    """The saved normalised CAMs [K,H,W] (float32) of one training image."""
    path = Path(folder) / "cams" / f"{name}.npy"
    if not path.exists():
        raise FileNotFoundError(f"missing CAM file {path}: rerun the CAM stage")
    return np.load(path).astype(np.float32)


def seed_mask(kind: str, folder, name: str, tree, threshold: float | None = None) -> np.ndarray:
    """The seed of one training image as the next stage reads it: a CAM stage's maps at its
    best background threshold, or a mask stage's PNG (255 read as background)."""
    from PIL import Image

    if kind == "cams":
        ids = np.flatnonzero(tree.labels(name)) + 1
        return M.cam_to_mask(load_cam(folder, name), ids, threshold)
    mask = np.asarray(Image.open(Path(folder) / "masks" / f"{name}.png"))
    return np.where(mask == 255, 0, mask).astype(np.uint8)
