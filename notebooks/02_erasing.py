# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Adversarial erasing: mine, erase, retrain
#
# **What you will learn.** How Wei et al. {cite}`wei2017ae` push a classifier beyond the most
# discriminative part of an object: take the region its CAM is most confident about, *erase* it
# from the training images, and train a fresh classifier on the erased images. To keep answering
# "is there a shoe?" the new classifier has to find other evidence, the next part of the shoe.
# Each round mines a new region; their union covers more of the object.
#
# ## The method
# Round 1's classifier is trained on the clean images $I^{(1)} = I$. In round $k$, the
# classifier trained on $I^{(k)}$ gives each labelled class $c$ a normalised CAM
# $\bar M^{(k)}_c$ (the CAM chapter), and the round mines the pixels where that map is high and
# that no earlier round took:
#
# $$
# R^{(k)}_c = \Big\{ x : M^{(k)}_c(x) \ge \delta \cdot \max_{x'} M^{(k)}_c(x') \Big\} \setminus \bigcup_{j<k} R^{(j)},
# $$
#
# with the mining threshold $\delta$ (the paper's 0.5 is this notebook's default). The next round's
# images have every region mined so far replaced by the mean pixel $\mu$ of the training set,
#
# $$
# I^{(k+1)}(x) = \begin{cases} \mu & \text{if } x \in \bigcup_{j \le k} \bigcup_c R^{(j)}_c, \\ I(x) & \text{otherwise,} \end{cases}
# $$
#
# and a fresh classifier is trained on them. The paper stops after three rounds. The union of
# the regions of each class, with a background cue for the pixels no round mined, is the pseudo
# mask that the next chapter builds and the segmenter learns from.
#
# The pipeline runs this notebook's stage once per round, with the parameter `round`. This page
# is the last round's and shows every round so far, from what each saved. The default book runs
# the paper's three rounds; the `extended` profile runs a fourth, to show why the paper stops.
#
# ## The book's departures
# **Round 1 is the CAM chapter's classifier.** Round 1 trains on clean images, exactly what the
# CAM stage did, so the book reuses that classifier and its CAMs instead of training it again
# ({ref}`decision-round1-reuse`).
#
# **A background prior for rounds 2 and later.** A later round's classifier, denied the most
# telling parts, also fires on background: the rim of a hole, what lies around an item. With
# `mine_prior` above 0, rounds 2+ mine a pixel only where the clean image's CAM gives one of the
# image's labelled classes at least `mine_prior` (the paper's recipe is 0: mine wherever the
# round's own CAM is high). The round's classifier is believed about *where* the rest of an item
# is, but not in places the first CAM sees as plain background ({ref}`decision-mine-prior`).
#
# **A higher mining threshold.** Every round mines above a $\delta$ slightly above the paper's:
# round 1 leaves a little more of each disc and body, and round 2's regions are more precise
# ({ref}`decision-mine-threshold`). The extended profile runs the paper's recipe.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "erasing"  # stage name: the output folder under artifacts_root/profile
cam_stage: str = "cam"  # CAM stage whose classifier recipe and round-1 CAMs are used
round: int = 1  # erasing round to run (from 1; round k needs rounds 1..k-1 first)
mine_threshold: float = 0.5  # normalised CAM score above which a pixel is mined, in (0, 1)
erase_value: str = "mean"  # fill of erased regions: mean (pixel), blur or noise
init: str = "fresh"  # rounds 2+ start from fresh ImageNet weights (the paper) or from the previous round's classifier (previous)
clean_fraction: float = 0.0  # rounds 2+: share of training images shown unerased, drawn anew each epoch (0: the paper)
round_epochs: int = 0  # rounds 2+: training epochs (0: the CAM stage's)
erase_margin: int = 0  # rounds 2+: erased regions grown by this many pixels before the fill, so no rim of the mined part stays (0: the paper)
decoys: int = 0  # rounds 2+: other images' erased regions added as holes at random places to each training image (0: the paper)
mine_prior: float = 0.0  # rounds 2+: mine only where the CAM stage's map of a labelled class reaches this (0: everywhere, the paper)
collapse_map: float = 0.6  # mAP below which the round warns of collapse or a shortcut
eval_batch_size: int = 64  # images per batch at inference
num_workers: int = 0  # data-loader worker processes (0: load in the main process)
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
from IPython.display import Markdown, display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aepsl.book import notes, records, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import load_metrics, stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import erasing
from aepsl.methods.cam import load_cam

viz.page_setup()
params = collect(globals(), erasing.ErasingConfig)
record = erasing.run_round(params)
cfg = erasing.ErasingConfig(**params)
tree = VOCTree(resolve(data_root))
cam_dir = stage_dir(resolve(artifacts_root), profile, cam_stage)
n_rounds = erasing.rounds_available(artifacts_root, profile, stage, round)
round_records = [load_metrics(erasing.round_dir(cfg, k)) for k in range(1, n_rounds + 1)]
ms = [r["metrics"] for r in round_records]
m = ms[-1]
display(tables.parameters_table(params))


def round_cams(k: int, name: str) -> np.ndarray:
    """Round k's normalised CAMs of the image's labelled classes (round 1: the CAM stage's)."""
    return load_cam(cam_dir if k == 1 else erasing.round_dir(cfg, k), name)


def round_regions(k: int, name: str) -> np.ndarray:
    return erasing.load_regions(erasing.round_dir(cfg, k) / "regions" / f"{name}.png")


# %% [markdown]
# ## The rounds, image by image
# One strip per round: what that round's classifier trained on (the regions of earlier
# rounds erased with the *mean*, *blur* or *noise* fill of `erase_value`), its CAM (the
# highest of the labelled classes' maps at each pixel), the region it mined — pixels whose
# normalised CAM exceeds `mine_threshold` and that no earlier round took — and the union of
# the regions mined so far.

# %% tags=["hide-input"]
split = m.get("train_split", "train")
mean_px, std_px = np.array(m["mean_pixel"]), np.array(m["std_pixel"])
region_dirs = [erasing.round_dir(cfg, j) / "regions" for j in range(1, n_rounds)]
views = [erasing.ErasedView(tree, split, region_dirs[:k - 1], erase_value, mean_px,
                            std_px, seed=seed)
         for k in range(1, n_rounds + 1)]
names = views[0].names[:2]
rows, titles, labels = [], [], []
for name in names:
    gt = tree.mask(name)
    union = np.zeros(gt.shape, np.uint8)
    for k in range(1, n_rounds + 1):
        image = views[k - 1][views[k - 1].names.index(name)]["image"]
        regions = round_regions(k, name)
        union = np.where(union > 0, union, regions).astype(np.uint8)
        cams = round_cams(k, name)
        heat = cams.max(0) if len(cams) else np.zeros(gt.shape, np.float32)
        rows.append([image, viz.overlay(image, heat), viz.blend_mask(image, regions),
                     viz.blend_mask(tree.image(name), union),
                     viz.colorize(gt) if k == 1 else None])
        titles.append([f"round {k}: input", f"round {k}: CAM", f"mined in round {k}",
                       f"mined in rounds 1-{k}" if k > 1 else "mined so far",
                       "ground truth" if k == 1 else ""])
        labels.append(f"{name}, round {k}")
fig = viz.image_grid(rows, titles, size=1.7, row_labels=labels)
fig.legend(handles=viz.legend_handles(tree.classes, include_ignore=False),
           loc="lower center", ncol=len(tree.classes), fontsize=7,
           bbox_to_anchor=(0.5, -0.02))
plt.show()

# %% [markdown]
# ## The rounds in numbers
# Per round: the classifier's mAP on the images it trained on (for rounds 2 and later, the
# erased ones) and on clean validation images, the share of training pixels it mined, and
# how many of those belong to the right class (scored against the true masks, which only
# evaluation reads).

# %% tags=["remove-input"]
def part_found(r, when, part):
    return ((r.get("part_coverage") or {}).get(when) or {}).get(part)


table = pd.DataFrame([{
    "round": k + 1,
    "train mAP (its inputs)": r.get("train_map"),
    "val mAP (clean)": r.get("val_map"),
    "pixels mined": r["mined_total_fraction"],
    "precision of the mined pixels": r.get("region_precision"),
    "disc found (this round)": part_found(r, "this_round", "disc"),
    "body found (this round)": part_found(r, "this_round", "body"),
    "body found so far": part_found(r, "so_far", "body"),
    "safeguard": ("collapsed" if r.get("collapsed")
                  else "shortcut" if r.get("shortcut") else "–"),
} for k, r in enumerate(ms)]).set_index("round")
if table["body found so far"].isna().all():
    table = table.drop(columns=[c for c in table if "found" in c])
display(table.style.format(precision=3, na_rep="–"))

# %% tags=["hide-input"]
colours = viz.class_colours(tree.classes)
mined = pd.DataFrame({f"round {k + 1}": r["mined_fraction"] for k, r in enumerate(ms)})
fig, ax = plt.subplots(figsize=(7, 2.8))
mined.plot.bar(ax=ax, edgecolor="k", rot=0)
ax.set_ylabel("share of train pixels")
ax.set_title("pixels mined per class and round")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)   # beside the bars
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Choosing the mining threshold
# Round 1's maps are the CAM chapter's, so the threshold's effect can be read off them before
# any erasing: a low threshold mines most of every object but also much background (low
# precision); a high one mines only the confident core. The paper's idea needs the core — a
# discriminative part to erase — so that the next round has an object left to look at.
# (Computed on the training masks, which only evaluation reads.)

# %% tags=["hide-input"]
if tree.has_masks(split):
    sweep = erasing.mining_sweep(tree, cam_dir, [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                 split=split)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(sweep["thresholds"], sweep["precision"], marker="o",
            label="precision of mined pixels")
    ax.plot(sweep["thresholds"], sweep["coverage"], marker="o",
            label="share of object pixels mined")
    ax.axvline(mine_threshold, color="k", ls="--", lw=1,
               label=f"mine_threshold = {mine_threshold}")
    ax.set_xlabel("mining threshold on the normalised CAM")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
lines, told = [], set()
if all(r.get("part_coverage") for r in ms):
    body = [r["part_coverage"]["this_round"]["body"] for r in ms]
    prec = [r.get("region_precision") or 0 for r in ms]
    gains = [k + 1 for k in range(1, len(ms)) if prec[k] >= 0.5]
    lines.append(
        f"- **Part to whole.** Round 1 (the CAM) takes "
        f"{100 * ms[0]['part_coverage']['this_round']['disc']:.0f}% of the disc pixels and "
        f"{100 * body[0]:.0f}% of the body pixels. The later rounds add "
        + ", ".join(f"{100 * b:.0f}%" for b in body[1:])
        + " of the body, with precision " + ", ".join(f"{p:.2f}" for p in prec[1:])
        + f"; after {len(ms)} rounds {100 * ms[-1]['part_coverage']['so_far']['body']:.0f}% "
        "of the body is found. Each round's classifier, denied the disc and what earlier "
        "rounds took, has to recognise the item from what is left.")
    if len(ms) >= 4 and prec[-1] < 0.5:
        lines.append(
            f"- **Over-erasing.** Round {len(ms)} mines more background than object "
            f"(precision {prec[-1]:.2f}): with disc and most of the body gone, what still "
            "tells the class is the shape of the holes and what lies around them. That is "
            "the paper's reason to stop after three rounds; the merge chapter merges three "
            "and scores the fourth beside them."
            + (f" The background prior (`mine_prior` {mine_prior:g}) keeps those regions where "
               "the clean CAM still sees a labelled class, next to the items, so on these "
               "scenes the fourth round does not lower the masks (the merge chapter scores it)."
               if mine_prior > 0 else ""))
for k, r in enumerate(ms, start=1):
    prec = r.get("region_precision")
    text = (f"Round {k} mined {100 * r['mined_total_fraction']:.1f}% of the training pixels"
            + (f", {100 * prec:.1f}% of them of the right class" if prec is not None else "")
            + f"; its classifier reached train mAP {r['train_map']:.3f} on its own inputs")
    if r.get("val_map") is not None:
        text += f" and val mAP {r['val_map']:.3f} on clean images"
    text += "."
    if r.get("shortcut") and "shortcut" in told:
        text += " **Safeguard:** the same shortcut."
    elif r.get("shortcut"):
        text += (f" **Safeguard:** below {collapse_map} on clean images. Either it learned "
                 "the *erased* images — the shape of the fill, what is left around it — "
                 "rather than the objects, or the parts earlier rounds erased, which it "
                 "never saw, mislead it on clean images; the precision of its regions says "
                 "which (on the embedded scenes, `benchmarks/results.md` also scores each "
                 "round's classifier on held-out scenes with their discs erased).")
    if r.get("collapsed") and "collapsed" in told:
        text += f" **Safeguard:** train mAP below {collapse_map} again."
    elif r.get("collapsed"):
        text += (f" **Safeguard:** train mAP below {collapse_map}: this classifier no "
                 "longer learns the classes, and what it mines is mostly background — the "
                 "paper's reason to stop after three rounds.")
    told |= {s for s in ("shortcut", "collapsed") if r.get(s)}
    lines.append("- " + text)
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## The paper's recipe and the book's
# Why do the later rounds mine so much background? A round's classifier must still answer "which
# items are here?" with the mined parts gone, and whatever in the erased images predicts the
# labels will do: the rest of the item, but also the rim of a hole and the background around it.
# The table compares the two recipes on the book's scenes, each run under several training
# seeds: the share of round 2's mined pixels that belong to the right class, and how much the
# best pseudo masks beat the CAM. The appendix ({ref}`design-erasing`) has every recipe tried.

# %% tags=["remove-input"]
designs = tables.erasing_designs(records.design_record("erasing_design"))
book_hue = records.book_parameters("00_data")["class_hue"]
side = tables.erasing_recipe_table(designs, book_hue, [{}, tables.book_erasing_changes()])
if len(side):
    display(tables.show(side, f"Erasing on the book's scenes ({tables.scene_label({'class_hue': book_hue})}), "
                              "means over the training seeds"))
else:
    display(Markdown(notes.missing_record("erasing_design")))

# %% tags=["remove-input"]
t07 = [records.stage_metrics(resolve(artifacts_root), profile, f"erasing_t07/round{k}",
                            data_root) for k in (1, 2, 3)]
t07 = [(rec, src) for rec, src in t07 if rec is not None]
if mine_threshold != 0.7 and t07:
    src = t07[0][1]
    expect = (f"Measured{notes.source_note(src, profile)}: at 0.7 the rounds mine "
              + ", ".join(f"{100 * rec['metrics']['mined_total_fraction']:.1f}%"
                          for rec, _ in t07)
              + " of the training pixels (this page: "
              + ", ".join(f"{100 * r['mined_total_fraction']:.1f}%" for r in ms)
              + "), with precision "
              + ", ".join(f"{rec['metrics'].get('region_precision') or 0:.3f}"
                          for rec, _ in t07)
              + ". The merge chapter compares the pseudo masks they give.")
elif mine_threshold != 0.7:
    expect = ("Expect smaller first regions of higher precision, and later rounds that "
              "each add a part of the object. " + notes.not_run_note("This variant"))
else:
    expect = "Expect larger first regions and fewer pixels left for the later rounds."
value = 0.5 if mine_threshold == 0.7 else 0.7
display(Markdown(notes.try_it(
    "mine_threshold",
    f"Mine only the confident core: in `notebooks/params/{profile}.yaml` set "
    f"`mine_threshold: {value}` under `02_erasing` (it applies to every round), then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 02_erasing",
    "The rounds are recomputed, since their parameters changed (the old ones are "
    f"kept aside as `artifacts/{profile}/{stage}/round1@<hash>/` and so on). " + expect)))
