"""Training views and batching.

Augmentation randomness comes from a generator seeded by (seed, epoch, index), so a sample
looks the same whether it is drawn in the main process or a worker, and a resumed run sees
exactly the images an uninterrupted run would have seen.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] (any device) -> float32 normalised with ImageNet statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


class TrainView(Dataset):
    """Random scale, crop (padded) and horizontal flip on top of a sample dataset.

    ``base[i]`` must return a dict with ``image`` (HxWx3 uint8), ``labels`` and optionally
    ``mask`` (HxW uint8, 255 = ignore); extra keys pass through untouched.
    Output images are ``crop x crop``; padding is grey in the image and 255 in the mask. With a
    mask, ``inside`` (bool, crop x crop) tells the image's pixels from the padding's.
    """

    def __init__(self, base: Dataset, crop: int, scale: tuple[float, float] = (0.9, 1.1),
                 flip: bool = True, seed: int = 0):
        self.base, self.crop, self.scale, self.flip, self.seed = base, crop, tuple(scale), flip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):   # a base whose samples change per epoch (aepsl.methods.erasing.ErasedView)
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.base[index])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask = sample["image"], sample.get("mask")
        s = rng.uniform(*self.scale)
        if abs(s - 1.0) > 1e-3:
            h, w = image.shape[:2]
            size = (max(1, round(w * s)), max(1, round(h * s)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            if mask is not None:
                mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        inside = None if mask is None else np.ones(image.shape[:2], bool)
        image, mask, inside = random_crop(image, mask, self.crop, rng, inside)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None
            inside = inside[:, ::-1] if inside is not None else None
        sample["image"] = np.ascontiguousarray(image)
        if mask is not None:
            sample["mask"] = np.ascontiguousarray(mask)
            sample["inside"] = np.ascontiguousarray(inside)
        return sample


def random_crop(image: np.ndarray, mask: np.ndarray | None, crop: int, rng: np.random.Generator,
                inside: np.ndarray | None = None):
    """Pad to at least ``crop`` (image grey, mask 255, ``inside`` False), then take the same random
    crop of each; returns (image, mask, inside)."""
    h, w = image.shape[:2]
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        fill = np.array([round(255 * m) for m in IMAGENET_MEAN], np.uint8)
        padded = np.empty((h + ph, w + pw, 3), np.uint8)
        padded[:] = fill
        padded[:h, :w] = image
        image = padded
        if mask is not None:
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=255)
        if inside is not None:
            inside = np.pad(inside, ((0, ph), (0, pw)), constant_values=False)
        h, w = h + ph, w + pw
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    image = image[y:y + crop, x:x + crop]
    if mask is not None:
        mask = mask[y:y + crop, x:x + crop]
    if inside is not None:
        inside = inside[y:y + crop, x:x + crop]
    return image, mask, inside


def collate(samples: list[dict]) -> dict:
    """Stack samples of equal size into tensors (uint8 images [B,3,H,W], int64 masks)."""
    out: dict = {"image": torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2),
                 "labels": torch.from_numpy(np.stack([s["labels"] for s in samples]).astype(np.float32)),
                 "name": [s["name"] for s in samples]}
    if samples[0].get("mask") is not None:
        out["mask"] = torch.from_numpy(np.stack([s["mask"] for s in samples]).astype(np.int64))
    for key in samples[0]:
        if key not in out and key != "mask":
            vals = [s[key] for s in samples]
            out[key] = torch.from_numpy(np.stack(vals)) if isinstance(vals[0], np.ndarray) else vals
    return out
