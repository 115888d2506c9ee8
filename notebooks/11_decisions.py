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
# decision is one entry here: what was decided, why, the evidence (read from the saved records)
# and the command that measures it again.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
force: bool = False  # unused: the page is rebuilt from metrics.json every time
