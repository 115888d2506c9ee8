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
# # Provenance: where every number came from
#
# Each stage wrote a `metrics.json` beside its artifacts, holding its parameters, the seed, the
# git revision of the `aepsl` package that computed it (`+dirty` when the package had
# uncommitted changes), the device and the wall time. This page lists them; a stage's full
# parameters are in its `metrics.json` under `artifacts/<profile>/<stage>/`.
#
# The *code hash* is part of a stage's cache key: a hash of the source of the stage's module
# and of every `aepsl` module it imports (comments and docstrings left out). A stage whose
# parameters or code hash differ from those recorded is recomputed; otherwise it is reused.

# %% tags=["parameters"]
profile = "default"
seed = 0
device = "auto"
data_root = "data/scenes-default"
artifacts_root = "artifacts"
force = False

# %%
from IPython.display import display

from aepsl import report
from aepsl.config import resolve

table = report.provenance_table(resolve(artifacts_root), profile)
display(table)
