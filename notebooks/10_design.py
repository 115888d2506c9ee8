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
# # Appendix: how the default was designed
#
# The embedded default is a choice: scene sizes, a discriminative part on every item, class
# colours, a classifier recipe, a segmenter recipe and the erasing recipe all had to fit a few
# minutes on a laptop CPU while keeping each chapter's lesson visible. This appendix shows the
# evidence behind each choice, read from the JSON records the benchmark scripts wrote.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
force: bool = False  # unused: the page is rebuilt from metrics.json every time
