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
# # Better CAMs instead of erasing?
#
# **What you will learn.** How the CAM's successors — Grad-CAM, Grad-CAM++, Score-CAM,
# LayerCAM, Ablation-CAM and Eigen-CAM — weigh a classifier's feature maps; why on the book's
# GAP classifier Grad-CAM *is* the CAM; and whether any of them finds the body of an item,
# which the next chapter's adversarial erasing gets by training the classifier again, from the
# trained classifier alone.
#
# ## The methods
# Every method below explains the CAM chapter's trained classifier, unchanged. Let $f_k(x)$ be
# its $K$ feature maps at output stride 8 and $s_c$ the logit of class $c$. Each method forms a
# map from the same features, weighted per channel (or per pixel), and keeps its positive part:
#
# $$
# L^{c}(x) = \operatorname{ReLU}\Big(\sum_{k=1}^{K} \alpha^{c}_{k}\, f_k(x)\Big).
# $$
#
# The CAM's weights are the class layer's own, $\alpha^c_k = w_{c,k}$. **Grad-CAM**
# {cite}`selvaraju2017gradcam` takes the gradient of the class score, averaged over the pixels:
#
# $$
# \alpha^{c}_{k} = \frac{1}{|\Omega|} \sum_{x \in \Omega} \frac{\partial s_c}{\partial f_k(x)} .
# $$
#
# For a classifier whose score is the average of its class map, $s_c = \frac{1}{|\Omega|}
# \sum_x \sum_k w_{c,k} f_k(x)$, the gradient is $w_{c,k} / |\Omega|$ at every pixel: the
# weights are the CAM's up to a constant, and once normalised the two maps are the same.
#
# **Grad-CAM++** {cite}`chattopadhay2018gradcampp` weighs each pixel's positive gradient
# $g_k(x) = \partial s_c / \partial f_k(x)$ by a coefficient built from higher powers of the
# gradient, meant to let several instances of a class count, not only the strongest:
#
# $$
# \alpha^{c}_{k} = \sum_{x} a^{c}_{k}(x)\, \operatorname{ReLU}\big(g_k(x)\big), \qquad
# a^{c}_{k}(x) = \frac{g_k(x)^2}{2\, g_k(x)^2 + \sum_{y} f_k(y)\, g_k(x)^3} .
# $$
#
# **Score-CAM** {cite}`wang2020scorecam` uses no gradient: each feature map, upsampled to the
# image and scaled to $[0, 1]$ ($H_k$), masks the image, and the class score of the masked image
# is the channel's weight, through a softmax over the channels:
#
# $$
# \alpha^{c}_{k} = \frac{\exp s_c(I \odot H_k)}{\sum_{j} \exp s_c(I \odot H_j)} .
# $$
#
# **LayerCAM** {cite}`jiang2021layercam` weighs every pixel by its own positive gradient:
#
# $$
# L^{c}(x) = \operatorname{ReLU}\Big(\sum_{k} \operatorname{ReLU}\big(g_k(x)\big)\, f_k(x)\Big) ;
# $$
#
# on a GAP classifier, where $g_k(x) = w_{c,k} / |\Omega|$, that is the CAM without the
# channels of negative weight.
#
# Two more come without gradients. **Ablation-CAM** {cite}`desai2020ablationcam` sets each
# channel to zero in turn and weighs it by the share of the score it takes away,
# $\alpha^c_k = (s_c - s_c^{(k)}) / s_c$. **Eigen-CAM** {cite}`muhammad2020eigencam` ignores
# the class altogether: its map is the projection of the (centred) features on their first
# principal component, the same map for every class of an image; and as the sign of a
# principal component is arbitrary, it may light the background rather than the objects.
#
# ## How the book runs them
# The methods come from the library `grad-cam` (`pytorch_grad_cam`), hooked on the output of
# the classifier's backbone, the stride-8 features the CAM is made of; the weights are the CAM
# chapter's, and nothing is downloaded. Each method's map of each labelled class is scaled by
# the library to $[0, 1]$, resized to the image, divided by its maximum as the CAM is, and
# scored exactly as the CAM chapter scores its seeds: a constant background $t$ swept over the
# same thresholds, mIoU on the training images with the ignore label left out, the best $t$
# reported. Two CAMs are scored beside them on the same images: the one-pass CAM of the same
# scales ("CAM"), and the CAM chapter's own maps, averaged over its scales and their mirror
# images ("CAM (saved)").
#
# The cost per image is measured in the run, on its machine. Score-CAM runs the classifier once
# per feature channel and class; that is why the default book scores the first images of the
# training split only (`max_images`; 0: all of them).

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
stage: str = "cam_variants"  # stage name: the output folder under artifacts_root/profile
cam_stage: str = "cam"  # CAM stage whose classifier every method explains, and whose maps are scored beside them
methods: list = ["gradcam", "gradcam++", "scorecam", "layercam", "ablationcam", "eigencam"]  # methods of grad-cam computed: gradcam, gradcam++, scorecam, layercam, ablationcam, eigencam
max_images: int = 24  # images of the CAM stage's score split scored, the first N in the split's order (0: all; Score-CAM costs seconds per image on a CPU)
cam_scales: list = [1.0]  # image scales whose maps are averaged, for every method and the plain CAM (positive)
cam_flip: bool = False  # also average the maps of the horizontally flipped images
figure_images: int = 4  # scored images whose maps of every method are saved for the page's figure
masks_method: str = ""  # method whose seeds, cut at its best threshold, are written as masks/ for every training image (a segmenter's labels): one of methods, best (the highest mIoU), or empty: none
batch_size: int = 8  # images per call of the library
score_batch_size: int = 32  # masked or ablated copies per forward pass of Score-CAM and Ablation-CAM
force: bool = False  # recompute even when finished artifacts exist

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from aepsl.book import notes, records, tables, viz
from aepsl.data.voc import VOCTree
from aepsl.engine.artifacts import stage_dir
from aepsl.engine.config import collect, resolve
from aepsl.methods import cam_variants

viz.page_setup()
params = collect(globals(), cam_variants.CAMVariantsConfig)
record = cam_variants.run(params)
m = record["metrics"]
tree = VOCTree(resolve(data_root))
root = resolve(artifacts_root)
folder = stage_dir(root, profile, stage)
seeds = tables.cam_variants_table(record)
display(tables.parameters_table(params))

# %% [markdown]
# ## The maps side by side
# The same training images under every method: the image, each method's map (for an image with
# several items, the highest map of its labelled classes at each pixel), and the truth. The CAM
# lights the class-pattern disc of each item; watch which methods spread over the rest of it.

# %% tags=["hide-input"]
names, maps = records.cam_variant_figure(folder)
viz.cam_variant_maps_figure(tree, names, maps, m)
plt.show()

# %% [markdown]
# Each map cut at its own best background threshold gives its seed:

# %% tags=["hide-input"]
viz.cam_variant_seeds_figure(tree, names, maps, m)
plt.show()

# %% [markdown]
# ## The seeds scored
# Per method: the seed mIoU on the scored training images at its best background threshold
# $t$, the share of the items' disc and body pixels the seed gives the right class there
# (the scenes' part maps, which the learner never sees), and the seconds per image the method
# took in this run.

# %% tags=["remove-input"]
display(seeds.style.format(tables.CAM_VARIANTS_FORMAT, na_rep="–"))
display(Markdown(notes.cam_variants_passes_note(m, cam_scales, cam_flip)))

# %% [markdown]
# The whole sweep: each method's seed mIoU at every background threshold.

# %% tags=["hide-input"]
viz.threshold_sweep_figure(m)
plt.show()

# %% [markdown]
# ## Do they find what erasing finds?
# Adversarial erasing (next chapter) mines, in each round, the pixels whose map is above a
# threshold, erases them and trains the classifier again. Here is what each method would mine
# as the first round, above the erasing chapter's mining threshold, beside what the erasing
# rounds mined, alone (round 1 is the CAM) and together: the share of disc and of body pixels
# given the right class. For the rounds, the cost is their wall time, retraining included, per
# training image.

# %% tags=["remove-input"]
mining, cut = tables.cam_variants_mining_table(record, root, profile, data_root)
if len(mining):
    display(Markdown(f"Mined above the erasing chapter's threshold, {cut:.2f}:"))
    display(mining.style.format(tables.CAM_VARIANTS_FORMAT, na_rep="–"))
else:
    display(Markdown("These scenes have no part maps (`part_size: [0, 0]` or a VOC tree)."))

# %% [markdown]
# ## The best of them through a segmenter
# Seeds are only the start: the question that counts is what a segmenter learns from them. The
# stage can write the seeds of the method with the best mIoU for every training image
# (`masks_method: best`); the plain segmenter of the PSL chapter (no PSL) then trains on them, as
# the AE segmenter trains on the erasing masks, and both are scored on the held-out scenes. The
# variants profile runs it beside its own erasing chain; the design
# `benchmarks/designs.yaml#variant-segmenter` runs it for the seeds study's training seeds.

# %% tags=["remove-input"]
segmenters, source = tables.cam_variant_segmenter_table(root, profile, data_root)
variant_seeds = notes.read_record(resolve("benchmarks") / "cam_variants_seeds.json")
segmenter_seeds = tables.cam_variant_segmenter_seeds_table(variant_seeds)
if len(segmenters):
    display(segmenters.style.format(tables.CAM_VARIANTS_FORMAT, na_rep="–"))
    display(Markdown("Seed mIoU on the training split, segmenter mIoU on the held-out scenes"
                     + notes.source_note(source, profile) + "."))
elif len(segmenter_seeds):
    display(Markdown("Held-out mIoU of the same plain segmenter trained on each seed's labels, per "
                     "training seed of the seeds study (`benchmarks/cam_variants_seeds.json`):"))
    display(segmenter_seeds.style.format(tables.CAM_VARIANTS_FORMAT, na_rep="–")
            .set_table_styles([{"selector": "td, th", "props": "padding: 0.1em 0.6em;"}]))
    display(Markdown(notes.cam_variant_segmenter_seeds_note(segmenter_seeds)))
else:
    display(Markdown(notes.not_run_note("The segmenter on the best variant's seeds")))

# %% [markdown]
# ## Over training seeds
# The numbers above come from one trained classifier. Every chain of the seeds study trains its
# own and runs this stage on it; over those seeds, each row's mean ± standard deviation (on the
# same first training images of each chain):

# %% tags=["remove-input"]
over_seeds = tables.cam_variants_seeds_table(variant_seeds)
if len(over_seeds):
    display(over_seeds.style.set_table_styles([{"selector": "td, th", "props": "padding: 0.1em 0.6em;"}]))
    display(Markdown(notes.cam_variants_seeds_note(variant_seeds)))
else:
    display(Markdown("No seeds are recorded yet: `make seeds` runs the chains, and "
                     "`.venv/bin/python benchmarks/cam_variants_seeds.py` records this stage of each."))

# %% [markdown]
# ## What we saw

# %% tags=["remove-input"]
display(Markdown(notes.cam_variants_note(seeds, mining, cut)))

# %% tags=["remove-input"]
best = seeds.drop(index=[cam_variants.label(k) for k in ("cam_stage", "cam")],
                  errors="ignore")["mIoU"].astype(float).idxmax()
display(Markdown(notes.try_it(
    "cam_scales",
    f"Give every method the CAM chapter's test-time averaging: in "
    f"`notebooks/params/{profile}.yaml`, under `01_cam_variants`, set "
    f"`cam_scales: {list(m['cam_stage_scales'])}` and "
    f"`cam_flip: {str(m['cam_stage_flip']).lower()}`, then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 01_cam_variants",
    f"Every method then runs {len(m['cam_stage_scales']) * (2 if m['cam_stage_flip'] else 1)} "
    f"times per image, and costs that much more. The row 'CAM' should move to the CAM "
    f"chapter's row ({seeds.loc[cam_variants.label('cam_stage'), 'mIoU']:.3f} here); "
    f"whether {best} (best of the methods here, {seeds.loc[best, 'mIoU']:.3f}) "
    "gains as much has not been measured for the book.")))
