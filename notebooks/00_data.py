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
# # The data: scenes with image-level labels
#
# **What you will learn.** What weak supervision hands a learner: for each training image only
# the *set of classes* it contains, never where they are. We build a small dataset in the format
# of PASCAL VOC 2012 {cite}`everingham2010voc`, so that every later chapter runs on a laptop CPU
# and the same code runs on VOC itself; the exact pixel masks are kept aside for evaluation.
#
# A *scene* holds one to three real Fashion-MNIST items {cite}`xiao2017fashion` (clothes and
# shoes photographed by Zalando, 28x28 grey) scaled up, tinted and pasted onto a crop of a photo
# or texture from scikit-image. Items may overlap; one left mostly hidden is dropped from the
# labels and its visible scraps are marked *ignore* (255), as VOC marks uncertain pixels.

# %% tags=["parameters"]
data_root: str = "data/scenes-default"  # scene folder to write, or VOC tree to check (source voc); repo-relative
source: str = "fashion"  # items: fashion (Fashion-MNIST), shapes (built-in) or voc (existing tree)
classes: list = ["tshirt", "trouser", "dress", "sneaker", "bag", "boot"]  # item classes to draw, chosen from the class names of the source
fashion_dir: str = ""  # folder of the Fashion-MNIST IDX files (empty: search the usual places)
fashion_download: bool = False  # download Fashion-MNIST via torchvision when no local copy is found
image_size: int = 96  # side of each square scene image, px
n_train: int = 1000  # number of training scenes
n_val: int = 200  # number of validation scenes
n_test: int = 200  # number of test scenes
min_items: int = 1  # fewest items pasted into one scene (at least 1)
max_items: int = 3  # most items per scene, each of another class (at most the number of classes)
item_size: list = [48, 72]  # [min, max] side of a pasted item, px (within 8 and image_size)
min_visible: float = 0.7  # fraction of an item that must stay visible, else it is dropped
bg_contrast: float = 0.6  # background contrast relative to the photo (1: unchanged)
part_size: list = [20, 26]  # [min, max] diameter of each item's class-pattern disc, px ([0, 0]: no disc)
class_hue: float = 0.34  # width of each class's band of item hues, share of the colour wheel (1: any hue, colour tells nothing)
seed: int = 0  # random seed of the scene generator
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
mask_dir: str = "SegmentationClass"  # subfolder of data_root holding the ground-truth mask PNGs
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
from IPython.display import Markdown, display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aepsl.book import notes, records, tables, viz
from aepsl.data import stage as data_stage
from aepsl.data.voc import VOCTree
from aepsl.engine.config import collect, resolve
from aepsl.methods.erasing import part_map

viz.page_setup()
params = collect(globals(), data_stage.DataConfig)
record = data_stage.run(params)
tree = VOCTree(resolve(data_root), mask_dir=mask_dir)
stats = record["metrics"]["splits"]
train = stats["train"]
display(tables.parameters_table(params))

# %% [markdown]
# ## A scene and its files
# The tree follows VOC's layout. `JPEGImages/<name>.jpg` is the image;
# `ImageSets/Segmentation/<split>.txt` lists the names of each split; `image_labels.json` maps
# every name to its classes, the only supervision the learner reads. `SegmentationClass/<name>.png`
# holds one class index per pixel (0 background, 255 ignore), read only to score. Top row: images
# as the learner sees them, their label sets as titles. Bottom row: the masks it never sees.

# %% tags=["hide-input"]
names = tree.ids("train")[:8]
rows = [[tree.image(n) for n in names], [viz.colorize(tree.mask(n)) for n in names]]
labels = [np.flatnonzero(tree.labels(n)) + 1 for n in names]
titles = [[", ".join(tree.classes[i] for i in ids) for ids in labels], None]
fig = viz.image_grid(rows, titles, size=1.7)
fig.legend(handles=viz.legend_handles(tree.classes), loc="lower center",
           ncol=len(tree.classes) + 1, fontsize=7, bbox_to_anchor=(0.5, -0.06))
plt.show()

# %% [markdown]
# ## Why the scenes have this shape
# The book's central method, adversarial erasing, needs objects with one part far more telling
# than the rest, like a dog's head on a VOC photo. Bare clothes have none, so every item carries a
# **discriminative part**: a black-and-white disc whose pattern (stripes, rings, a checkerboard
# ...) belongs to its class. The disc's outline is the same for every class, so a hole of its
# shape tells nothing, and its pattern is left-right symmetric, so a mirrored scene keeps its
# meaning ({ref}`decision-scene-parts`).
#
# With the disc erased, something must still tell the class, as a real object's body does. Each
# class's items take their hue from a band around the class's own hue (`class_hue`, a share of
# the colour wheel); neighbouring bands overlap, so colour narrows the class down without
# settling it, as grass is green but not everything green is grass. Items fill a large share of
# the scene and the disc a small share of the item, so a CAM that finds only the disc misses most
# of the object. The ground-truth mask counts the disc as part of its item; a second map,
# `SegmentationPart/<name>.png` (evaluation only), says which object pixels are disc and which
# are the rest, the *body*. Below, each scene beside it: disc dark, body light.
#
# The appendix shows how these choices were made: the scene designs tried
# ({ref}`design-scenes`), the classifier that learns them in minutes ({ref}`design-calibration`)
# and the budget that set the number of scenes ({ref}`design-budget`).

# %% tags=["hide-input"]
maps = [part_map(tree, n) for n in names[:6]]
if all(m is not None for m in maps):
    shade = {0: 0, 1: 110, 2: 230}
    grey = [np.vectorize(shade.get)(m).astype(np.uint8) for m in maps]
    rows = [[tree.image(n) for n in names[:6]],
            [np.repeat(g[..., None], 3, axis=2) for g in grey]]
    titles = [["scene"] * 6, ["disc (dark) / body (light)"] * 6]
    fig = viz.image_grid(rows, titles, size=1.7)
    plt.show()
else:
    display(Markdown("No part maps here (`part_size: [0, 0]`, or a VOC tree)."))

# %% [markdown]
# ## Class statistics
# How often each class is present, how many pixels it covers and how many classes an image
# holds. Background dominates the pixels, as in VOC, which is why the background threshold of a
# CAM matters so much in the next chapter.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
pd.Series(train["images_per_class"]).plot.bar(ax=axes[0], color="tab:blue")
axes[0].set_title("train images containing the class")
pd.Series(train["pixel_fraction"]).plot.bar(ax=axes[1], color="tab:orange", logy=True)
axes[1].set_title("share of train pixels (log)")
pd.Series(train["classes_per_image"]).plot.bar(ax=axes[2], color="tab:green")
axes[2].set_title("labels per image")
axes[2].set_xlabel("number of classes")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
kind = "images (PASCAL VOC)" if source == "voc" else f"scenes of {image_size} px"
display(Markdown(
    f"This run has {train['images']} training, {stats.get('val', {}).get('images', 0)} validation and "
    f"{stats.get('test', {}).get('images', 0)} test {kind} with {tree.num_classes - 1} classes "
    f"({', '.join(tree.classes[1:])}). Background covers "
    f"{100 * train['pixel_fraction']['background']:.1f}% of the training pixels; the rarest class is "
    f"present in {min(train['images_per_class'].values())} training images."))

# %% tags=["remove-input"]
display(Markdown(notes.try_it(
    "class_hue",
    "Let an item take any colour, so that once its disc is erased only its outline tells its "
    f"class: in `notebooks/params/{profile}.yaml` give `00_data` the entry "
    "`{data_root: data/scenes-anyhue, class_hue: 1.0}`, then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 00_data",
    f"The page lands in `artifacts/{profile}/notebooks/00_data.ipynb` and the scenes in "
    "`data/scenes-anyhue`, the same items in colours of any hue; the later chapters keep reading "
    f"`{records.shown_path(data_root)}`. What such scenes did to erasing is in the appendix ({{ref}}`design-scenes`).")))
