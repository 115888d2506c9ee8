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
# # AffinityNet and the random walk
#
# **What you will learn.** How seeds that are right about *what* is in an image but sloppy
# about *where* can be spread over whole objects by learning which pixels belong together —
# PSA (Ahn & Kwak, CVPR 2018). A second network, AffinityNet, is trained on pairs of nearby
# pixels whose labels the seeds are sure of: "same class" pairs should get affinity near 1,
# "different class" pairs near 0. Its affinities then define a random walk, which replaces
# every pixel's class scores by an average over the pixels it is similar to, many times over,
# so scores flow inside objects and stop at their edges.
#
# The recipe works on *any* seeds. This notebook runs three times: on the CAM seeds
# (chapter 2) with PSA's published $\alpha$ values, on the adversarial-erasing pseudo masks
# (chapter 4), and on the CAM seeds again with $\alpha$ values matched to where our CAMs are
# best cut. PSA's $\alpha = 16$ sets the background against a CAM value of about 0.13 —
# $(1-t)^{\alpha} = t$ — close to where VOC's CAMs are best cut; the CAM chapter found our
# scenes best cut near 0.45, which $\alpha \approx 1.34$ matches (and 0.56 / 3.38 put the
# confident foreground above 0.6 and the confident background below 0.3). That third run also
# walks only $t = 2$ steps instead of PSA's 256: our maps are 12×12 cells, not 41×41, and the
# step sweep below shows what many steps do to them. (Like the CAM threshold, this choice is
# read off the training split's scores.)
#
# - **Affinity labels.** From CAMs, a background score $(1-\max_k \mathrm{CAM}_k)^\alpha$ is set
#   against the class maps twice: with a small $\alpha$ the background is strong, so a pixel
#   that still goes to a class is *confident foreground*; with a large $\alpha$ it is weak, so
#   a pixel that still goes to background is *confident background*. Both maps are refined by
#   the dense CRF; the rest is uncertain. From pseudo masks, the mask's own labels and its
#   unlabelled pixels play these roles.
# - **Pairs.** On the stride-8 grid every pair of pixels closer than the radius $\gamma$ is
#   background-positive, foreground-positive, negative, or ignored (it touches an uncertain
#   pixel). The loss weighs them $\tfrac14, \tfrac14, \tfrac12$, each averaged over its own pairs.
# - **The walk.** $a_{ij} = \exp(-\lVert f_i - f_j \rVert_1 / E)$ within the radius, raised to
#   $\beta$; $T$ is that matrix with each column divided by its sum, and the score maps become
#   $v\,T^{t}$ with $t = 2^{\text{logt}}$. The background score here uses $\alpha$ = `alpha_infer`.

# %% tags=["parameters"]
profile = "default"
seed = 0
device = "auto"
data_root = "data/scenes-default"
artifacts_root = "artifacts"
stage = "affinity_cam"
seeds = "cam"
alpha_low = 4.0
alpha_high = 32.0
alpha_infer = 16.0
label_crf = True
radius = 5
beta = 8.0
logt = 8
logt_sweep = [0, 1, 2, 3, 4, 5, 6, 7, 8]
embed_dim = 128
backbone = "efficientnet_lite0"
backbone_weights = "package"
backbone_depth = "stage5"
width = 32
epochs = 3
batch_size = 32
lr = 0.001
weight_decay = 0.0001
optimizer = "adamw"
crop = 96
scale_range = [0.9, 1.1]
train_split = "train"
score_split = "train"
eval_batch_size = 64
num_workers = 0
force = False

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from PIL import Image

from aepsl import randomwalk, report, viz
from aepsl.artifacts import stage_dir
from aepsl.config import collect, resolve
from aepsl.data.voc import VOCTree
from aepsl.train import pick_device

record = randomwalk.run(collect(globals(), randomwalk.AffinityConfig))
m = record["metrics"]
tree = VOCTree(resolve(data_root))
folder = stage_dir(resolve(artifacts_root), profile, stage)
seed_folder = stage_dir(resolve(artifacts_root), profile, seeds)
label_folder = folder / "labels" if m["seed_kind"] == "cams" else seed_folder / "masks"
print(f"seeds: {seeds!r} ({m['seed_kind']}); AffinityNet trained {epochs} epochs "
      f"({record['timings_s']['train']:.0f} s on {record['device']}), walk of {m['walk']['steps']} steps "
      f"({record['timings_s']['walk']:.0f} s for {m['mask_count']} images)")

# %% [markdown]
# ## The affinity labels
# Share of training pixels that are confident background, confident foreground, or uncertain,
# and how often the confident ones are right (scored against the true masks, which the method
# never sees). Below: images, their seeds' affinity labels (white = uncertain) and the truth.

# %%
display(pd.Series(m["labels"], name="affinity labels").to_frame().T.round(3))
names = tree.ids("train")[:5]
rows, titles = [], []
for name in names:
    lab = np.asarray(Image.open(label_folder / f"{name}.png"))
    rows.append([tree.image(name), viz.colorize(lab), viz.colorize(tree.mask(name))])
    titles.append(["image", "affinity labels", "ground truth"])
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center", ncol=4, fontsize=7,
           bbox_to_anchor=(0.5, -0.05))
plt.show()

# %% [markdown]
# ## Training
# The three loss terms per epoch: background-positive and foreground-positive pairs pull
# embeddings together, negative pairs push them apart.

# %%
hist = pd.DataFrame(m["history"]).set_index("epoch")
hist[["bg_pos", "fg_pos", "neg", "loss"]].plot(marker="o", figsize=(6, 3), title="AffinityNet loss terms")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What AffinityNet learned: affinity to one pixel
# For a pixel at the centre of an item (marked ×), the affinity of every other stride-8 cell
# to it. A good AffinityNet is bright over the item the pixel lies on and dark elsewhere,
# including over other items.

# %%
model, _ = randomwalk.load_affinity_net(folder, pick_device(device))
fig, axes = plt.subplots(2, 4, figsize=(9, 4.6))
for col, name in enumerate(names[:4]):
    image, gt = tree.image(name), tree.mask(name)
    ys, xs = np.nonzero((gt > 0) & (gt != 255))
    y, x = (int(np.median(ys)), int(np.median(xs))) if len(ys) else (gt.shape[0] // 2, gt.shape[1] // 2)
    aff = randomwalk.affinity_to_pixel(model, image, y, x, pick_device(device))
    axes[0, col].imshow(image)
    axes[1, col].imshow(aff, vmin=0, vmax=1, cmap="magma")
    for ax in axes[:, col]:
        ax.plot([x], [y], "x", color="cyan", ms=9, mew=2)
        ax.axis("off")
    axes[1, col].set_title("affinity to ×", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Seeds before and after the walk
# Before: the seed as it is (for CAMs, the arg-max against the background score with
# $\alpha$ = `alpha_infer`). After: the same scores walked with $T^t$.

# %%
rows, titles = [], []
for name in tree.ids("train")[5:11]:
    image = tree.image(name)
    if m["seed_kind"] == "cams":
        from aepsl import cam as cam_mod
        cams = cam_mod.load_cam(seed_folder, name)
        ids = np.flatnonzero(tree.labels(name)) + 1
        scores = np.concatenate([((1 - cams.max(0)) ** alpha_infer)[None], cams])
        before = np.concatenate([[0], ids])[scores.argmax(0)].astype(np.uint8)
    else:
        before = np.asarray(Image.open(seed_folder / "masks" / f"{name}.png"))
    after = np.asarray(Image.open(folder / "masks" / f"{name}.png"))
    rows.append([image, viz.colorize(before), viz.colorize(after), viz.colorize(tree.mask(name))])
    titles.append(["image", "seed", "after the walk", "ground truth"])
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center", ncol=4, fontsize=7,
           bbox_to_anchor=(0.5, -0.03))
plt.show()

# %% [markdown]
# Per class, intersection-over-union of the seeds before and after the walk, on the
# training split:

# %%
if "after" in m:
    per = pd.DataFrame({"before": m["before"]["iou"], "after": m["after"]["iou"]})
    ax = per.plot.bar(figsize=(7, 3), edgecolor="k", title="IoU per class, seeds before / after the walk")
    ax.set_ylim(0, 1)
    plt.tight_layout()
    plt.show()
    display(viz.confusion_figure(np.asarray(m["confusion_after"]), tree.classes,
                                 title="after the walk (rows: truth, normalised)"))
    plt.close("all")

# %% [markdown]
# ## How many steps?
#
# PSA walks $t = 2^8 = 256$ steps on VOC's 41×41 maps. Every step averages a pixel's scores
# with its neighbours' within the radius, so the number of steps sets how far a score can
# travel — and how much of the seed's detail survives. The stage scores the walk after
# $t = 2^{\text{logt}}$ steps for every `logt` of `logt_sweep` (the masks it writes use `logt`);
# the dashed line is the seeds before the walk.

# %%
if "logt_sweep" in m:
    sweep = pd.Series({int(k): v for k, v in m["logt_sweep"].items()}).sort_index()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(sweep.index, sweep.values, marker="o", label="after the walk")
    ax.axhline(m["miou_before"], ls="--", color="gray", label="seeds before the walk")
    ax.plot([logt], [m["miou_after"]], "o", ms=12, mfc="none", color="C3", label=f"this run (logt = {logt})")
    ax.set_xlabel("logt (t = 2^logt steps)")
    ax.set_ylabel("mIoU (train)")
    ax.set_title(f"{stage}: seed mIoU against the number of walk steps")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    best = int(sweep.idxmax())
    display(Markdown(f"Best after $t = 2^{{{best}}}$ = {2 ** best} steps: {sweep.max():.3f} mIoU; "
                     f"after {2 ** int(sweep.index.max())} steps: {sweep.iloc[-1]:.3f}; before the walk: "
                     f"{m['miou_before']:.3f}."))

# %% [markdown]
# ## Its rows of the ablation table, and what we saw

# %%
table = report.ablation_table(resolve(artifacts_root), profile)
mine = [r for r in table.index if "random walk" in r or r.startswith(("CAM (", "AE, "))]
display(table.loc[mine].style.format(precision=3, na_rep="–"))
if "after" in m:
    b, a = m["miou_before"], m["miou_after"]
    extra = ""
    if m["seed_kind"] == "cams" and m.get("cam_best_threshold_miou") is not None:
        extra = (f" For reference, the CAM seeds at their best single threshold score "
                 f"{m['cam_best_threshold_miou']:.3f}.")
    display(Markdown(
        f"On the {m['mask_count']} training images, the {seeds!r} seeds score {b:.3f} mIoU before the walk and "
        f"{a:.3f} after it ({'+' if a >= b else ''}{a - b:.3f}). Foreground precision goes "
        f"{m['before']['fg_precision']:.3f} → {m['after']['fg_precision']:.3f} and recall "
        f"{m['before']['fg_recall']:.3f} → {m['after']['fg_recall']:.3f}. "
        f"{100 * m['labels']['uncertain_fraction']:.0f}% of the pixels had no affinity label, and the confident "
        f"ones were right for {100 * m['labels'].get('certain_pixel_accuracy', float('nan')):.0f}% of them." + extra))
