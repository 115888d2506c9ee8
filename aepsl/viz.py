"""Figure helpers for the notebooks: colour maps, overlays, grids, legends."""
from __future__ import annotations

import numpy as np

from .data.voc import PALETTE


def colorize(mask: np.ndarray) -> np.ndarray:
    """HxW class-index mask -> HxWx3 uint8 with the VOC palette (255 = ignore, light grey)."""
    pal = np.asarray(PALETTE, np.uint8).reshape(256, 3)
    return pal[mask]


def class_colours(classes: list[str]) -> dict[str, tuple[float, float, float]]:
    pal = np.asarray(PALETTE, np.float32).reshape(256, 3) / 255
    return {c: tuple(float(v) for v in pal[i]) for i, c in enumerate(classes)}


def legend_handles(classes: list[str], include_ignore: bool = True):
    from matplotlib.patches import Patch

    cols = class_colours(classes)
    handles = [Patch(facecolor=cols[c], edgecolor="k", label=c) for c in classes]
    if include_ignore:
        pal = np.asarray(PALETTE, np.float32).reshape(256, 3) / 255
        handles.append(Patch(facecolor=tuple(float(v) for v in pal[255]), edgecolor="k", label="ignore (255)"))
    return handles


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a [0,1] heat map onto an RGB image."""
    import matplotlib

    colours = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return ((1 - alpha) * image / 255 + alpha * colours).clip(0, 1)


def blend_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a coloured class mask onto an RGB image (background left as the image)."""
    col = colorize(mask).astype(np.float32) / 255
    out = image.astype(np.float32) / 255
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * out + alpha * col, out).clip(0, 1)


def image_grid(rows: list[list[np.ndarray]], titles: list[list[str]] | None = None, size: float = 1.8,
               row_labels: list[str] | None = None):
    """A figure showing ``rows`` of images (uint8 or float in [0,1])."""
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row) and row[j] is not None:
                ax.imshow(row[j], interpolation="nearest")
                if titles and titles[i] and j < len(titles[i]):
                    ax.set_title(titles[i][j], fontsize=8)
        if row_labels:
            axes[i][0].text(-0.05, 0.5, row_labels[i], transform=axes[i][0].transAxes, ha="right",
                            va="center", fontsize=8, rotation=90)
    fig.tight_layout()
    return fig


def confusion_figure(conf: np.ndarray, classes: list[str], normalise: bool = True, title: str = ""):
    """A seaborn heat map of a confusion matrix (rows = ground truth)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    conf = np.asarray(conf, np.float64)
    if normalise:
        conf = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * len(classes) + 2, 0.5 * len(classes) + 1.5))
    sns.heatmap(conf, annot=True, fmt=".2f" if normalise else ".0f", cmap="Blues", cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def draw_contours(image: np.ndarray, masks: list[np.ndarray], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The image with the region boundaries of each mask drawn in its colour (later masks on top)."""
    from .metrics import boundaries

    out = image.copy()
    for mask, colour in zip(masks, colours):
        out[boundaries(mask)] = colour
    return out


def page_setup() -> None:
    """What a page's hidden set-up cell does first: Python warnings stay out of the page (a
    reader sees figures and numbers, not library deprecation notices)."""
    import warnings

    warnings.filterwarnings("ignore")


def integer_ticks(*axes) -> None:
    """Whole-number ticks on the x-axis of each of ``axes`` (epochs, rounds): a two-epoch curve
    otherwise gets ticks at 1.2, 1.4, ..."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
