"""Figures for the notebooks: colour maps, overlays, grids, legends."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.voc import PALETTE
from .records import pipeline_numbers


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
    from ..methods.metrics import boundaries

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


def _num(v) -> str:
    return "–" if v is None or v != v else f"{v:.3f}"


def pipeline_figure(artifacts_root: str | Path, profile: str, path: str | Path | None = None,
                    spread: dict | None = None):
    """The book's pipeline as a map — CAM → erasing rounds → PSL → PSL++, the oracle beside — with
    each stage's number from its metrics.json ('–' where the stage has not run) and, where
    ``spread`` has it (``{number: (mean, sd, seeds)}``, keys of :data:`aepsl.book.lessons.ROWS`),
    the mean ± sd over the seeds study's training seeds under the box. Saved as a PNG at ``path``
    when given; returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = pipeline_numbers(artifacts_root, profile)
    fig, ax = plt.subplots(figsize=(12, 4.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4.6)
    ax.axis("off")

    spread = spread or {}

    def box(x, y, title, value, note, colour, w=1.9, h=1.05, dashed=False, size=13, key=None):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=colour, ec="0.25",
                                    lw=1.2, ls="--" if dashed else "-"))
        mean, sd, seeds = spread.get(key, (None, None, 0))
        if seeds and seeds > 1:
            ax.text(x + w / 2, y - 0.13, f"{seeds} seeds: {mean:.3f} ± {sd:.3f}", ha="center", va="center",
                    fontsize=7.5, color="0.15")
        ax.text(x + w / 2, y + h - 0.2, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + w / 2, y + h / 2 - 0.05, value, ha="center", va="center", fontsize=size)
        ax.text(x + w / 2, y + 0.14, note, ha="center", va="center", fontsize=7.5, color="0.3")
        return x, y, w, h

    def arrow(a, b, text=""):
        (x0, y0, w0, h0), (x1, y1, _, h1) = a, b
        ax.annotate("", xy=(x1 - 0.08, y1 + h1 / 2), xytext=(x0 + w0 + 0.08, y0 + h0 / 2),
                    arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.4))
        if text:
            ax.text((x0 + w0 + x1) / 2, y0 + h0 / 2 + 0.14, text, ha="center", va="bottom", fontsize=7.5,
                    color="0.3")

    ae = n["AE"]
    ae_text = " → ".join(_num(v) for v in ae) if ae else "–"
    row = 1.75
    cam = box(0.1, row, "CAM", _num(n["CAM"]), "seeds, mIoU (train)", "#dbe9f6", key="CAM")
    rounds = box(3.0, row, f"AE, rounds 1{'–' + str(len(ae)) if len(ae) > 1 else ''} merged", ae_text,
                 "pseudo masks, mIoU (train)", "#fde9d0", w=2.8, size=11.5 if len(ae) <= 3 else 9.5, key="best AE")
    psl = box(6.8, row, "AE + PSL", _num(n["PSL"]), "segmenter, mIoU (held-out)", "#e3f1dc", key="PSL")
    pp = box(9.8, row, "PSL++", _num(n["PSL++"]), "segmenter, mIoU (held-out)", "#e3f1dc", key="PSL++")
    arrow(cam, rounds, "erase, retrain")
    arrow(rounds, psl, "learn from S, Ŝ")
    arrow(psl, pp, "CRF, retrain")
    box(6.8, 3.2, "AE segmenter", _num(n["AE segmenter"]), "no Ŝ term, mIoU (held-out)", "#f3f3f3",
        h=1.0, dashed=True, key="AE segmenter")
    box(9.8, 3.2, "oracle", _num(n["oracle"]), "true masks, mIoU (held-out)", "#eeeeee", h=1.0, dashed=True, key="oracle")
    box(0.1, 0.2, "CAM + random walk", _num(n["CAM + random walk"]), "seeds, mIoU (train)", "#f1e6f6",
        w=2.3, h=1.0, key="CAM + random walk")
    box(3.0, 0.2, "CAM + HFPL", _num(n["CAM + HFPL"]), "seeds, mIoU (train)", "#f1e6f6", w=2.0, h=1.0, key="CAM + HFPL")
    ax.text(5.35, 0.7, "add-ons on any seeds\n(chapters 6 and 7)", fontsize=8.5, color="0.3", va="center")
    ax.text(0.1, 4.25, f"profile {profile!r}: each number read from its stage's metrics.json",
            fontsize=9, color="0.2")
    ax.text(0.1, 3.95, "'–': the stage has not run" + ("; under a box: the seeds study's mean ± sd (best AE round)"
                                                        if spread else ""), fontsize=8.5, color="0.4")
    if path is not None:
        from ..engine.artifacts import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def seed_points(chains: dict[str, dict], keys: list[str], ax=None):
    """One row per number in ``keys``, one point per chain (``{label: numbers}``), the mean as a
    bar with ± one standard deviation: how far the seeds spread against the gaps between rows."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.42 * len(keys) + 0.9))
    labels = list(chains)
    colours = plt.get_cmap("tab10")
    seen: set = set()
    for row, key in enumerate(keys):
        values = [(i, chains[c].get(key)) for i, c in enumerate(labels)
                  if isinstance(chains[c].get(key), (int, float))]
        if not values:
            continue
        xs = np.array([v for _, v in values], float)
        for (i, v) in values:
            ax.plot(v, row + 0.5 * (i - (len(labels) - 1) / 2) / max(len(labels), 1), "o", ms=5,
                    color=colours(i % 10), label=None if i in seen else labels[i])
            seen.add(i)
        if len(xs) > 1:
            ax.errorbar(xs.mean(), row, xerr=xs.std(ddof=1), fmt="|", color="black", ms=14, capsize=4, lw=1)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mIoU (val mAP for the classifier)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, names, fontsize=7, ncol=min(len(names), 7), loc="lower center",
                  bbox_to_anchor=(0.5, 1.0), frameon=False)
    return ax


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from ..engine.config import ParameterError, load_profile, resolve

    ap = argparse.ArgumentParser(prog="python -m aepsl.book.viz",
                                 description="Figures the book's prose pages show, drawn from saved metrics.")
    ap.add_argument("--pipeline-figure", required=True, metavar="PNG",
                    help="write the intro's pipeline map, with each stage's number, to this PNG")
    ap.add_argument("--profile", default="default", help="profile name or YAML path whose metrics it reads")
    ap.add_argument("--seeds-record", default="benchmarks/seeds.json", metavar="JSON",
                    help="the seeds study's record, whose spread the map shows for the book's profile "
                         "(default benchmarks/seeds.json; ignored where missing)")
    args = ap.parse_args(argv)
    try:
        common = load_profile(args.profile)["common"]
    except (ParameterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = str(common.get("profile") or Path(args.profile).stem)
    from . import lessons
    from .notes import read_record
    from .records import BOOK_PROFILE

    study = lessons.study_chains(read_record(resolve(args.seeds_record)) or {}, "book", BOOK_PROFILE)
    spread = None
    if name == BOOK_PROFILE and len(study) > 1:
        table = lessons.spread_table({k: r["numbers"] for k, r in study.items()})
        spread = {k: (row["mean"], row["sd"], int(row["seeds"])) for k, row in table.iterrows() if row["seeds"] > 1}
    pipeline_figure(resolve(common.get("artifacts_root", "artifacts")), name, resolve(args.pipeline_figure), spread)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())



def walk_steps_figure(m: dict, logt: int):
    """The random walk's seed mIoU against its number of steps (an affinity stage's metrics ``m``):
    the walk as the run reads it, PSA's background on the same walk where the stage scored it, the
    seeds before the walk, and the run's own ``logt`` circled."""
    import matplotlib.pyplot as plt

    sweep = {int(k): v for k, v in m["logt_sweep"].items()}
    fig, ax = plt.subplots(figsize=(6, 3))
    mine = "cut after the walk" if m["walk"].get("background") == "cut" else "after the walk"
    ax.plot(sorted(sweep), [sweep[k] for k in sorted(sweep)], marker="o", label=mine)
    if "power_walk" in m:
        power = {int(k): v for k, v in m["power_walk"]["logt_sweep"].items()}
        ax.plot(sorted(power), [power[k] for k in sorted(power)], marker="s", color="C1",
                label=f"PSA's background (α = {m['power_walk']['alpha_infer']:g})")
    ax.axhline(m["miou_before"], ls="--", color="gray", label="seeds before the walk")
    ax.plot([logt], [m["miou_after"]], "o", ms=12, mfc="none", color="C3", label=f"this run (logt = {logt})")
    ax.set_xlabel("logt (t = 2^logt steps)")
    ax.set_ylabel("mIoU (train)")
    ax.set_title("seed mIoU against the number of walk steps")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def cam_variant_maps_figure(tree, names: list[str], maps: dict[str, list[np.ndarray]], m: dict,
                            size: float = 1.25):
    """The CAM-variants stage's figure images (its metrics ``m``, the maps of
    :func:`aepsl.book.records.cam_variant_figure`): per image, the image, each method's map
    overlaid (the highest map of the labelled classes at each pixel) and the truth."""
    order = [k for k in m["order"] if k in maps]
    labels = [m["methods"][k]["label"] for k in order]
    rows, titles = [], []
    for i, name in enumerate(names):
        image = tree.image(name)
        heat = [maps[k][i].max(axis=0) if len(maps[k][i]) else None for k in order]
        rows.append([image] + [None if h is None else overlay(image, h) for h in heat] + [colorize(tree.mask(name))])
        titles.append(["image"] + labels + ["ground truth"])
    fig = image_grid(rows, titles, size=size)
    return fig


def cam_variant_seeds_figure(tree, names: list[str], maps: dict[str, list[np.ndarray]], m: dict,
                             size: float = 1.25):
    """The same images as :func:`cam_variant_maps_figure`, each method's map cut into a seed at its
    own best background threshold (:func:`aepsl.methods.metrics.cam_to_mask`), with a legend."""
    from ..methods.metrics import cam_to_mask

    order = [k for k in m["order"] if k in maps]
    rows, titles = [], []
    for i, name in enumerate(names):
        ids = np.flatnonzero(tree.labels(name)) + 1
        row, title = [tree.image(name)], ["image"]
        for k in order:
            t = m["methods"][k]["best_threshold"]
            row.append(colorize(cam_to_mask(maps[k][i], ids, t)))
            title.append(f"{m['methods'][k]['label']}\nt = {t:.2f}")
        rows.append(row + [colorize(tree.mask(name))])
        titles.append(title + ["ground truth"])
    fig = image_grid(rows, titles, size=size)
    fig.legend(handles=legend_handles(tree.classes), loc="lower center", ncol=4, fontsize=7,
               bbox_to_anchor=(0.5, -0.04))
    return fig


def threshold_sweep_figure(m: dict):
    """Each CAM-variants method's seed mIoU at every background threshold (the stage's ``m``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k in m["order"]:
        r = m["methods"][k]
        ax.plot(r["thresholds"], r["miou"], marker=".", label=r["label"])
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("seed mIoU (train)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
