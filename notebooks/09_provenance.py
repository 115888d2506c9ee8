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
# uncommitted changes; `+` in the table), the device and the wall time. The table lists each
# stage's code hash, seed, revision and wall time; the rest (the full parameters, the device, the load of the
# machine) is in its `metrics.json` under `artifacts/<profile>/<stage>/`.
#
# The *code hash* is part of a stage's cache key: a hash of the source of the stage's module
# and of every `aepsl` module it imports (comments and docstrings left out). A stage whose
# parameters or code hash differ from those recorded is recomputed; otherwise it is reused.

# %% tags=["parameters"]
profile: str = "default"  # parameter profile name; outputs go to artifacts_root/profile/stage
seed: int = 0  # random seed of data order, augmentation and weight initialisation
device: str = "auto"  # torch device: auto (CUDA when available, else CPU), cpu or cuda
data_root: str = "data/scenes-default"  # dataset folder (VOC layout), relative to the repository root
artifacts_root: str = "artifacts"  # folder of all stage outputs, relative to the repository root
force: bool = False  # unused: the page is rebuilt from metrics.json every time

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from aepsl.book import notes, tables, viz
from aepsl.engine.artifacts import code_modules
from aepsl.engine.config import PageConfig, collect, resolve
from aepsl.engine.registry import REGISTRY

viz.page_setup()
display(tables.parameters_table(collect(globals(), PageConfig)))
table = tables.provenance_table(resolve(artifacts_root), profile)
if len(table):   # a narrow view; the full record is each stage's metrics.json
    table = table[["code hash", "seed", "git revision", "wall time (s)"]]
    table.columns = ["code hash", "seed", "revision", "time (s)"]
    table["revision"] = table["revision"].map(tables.short_revision)
display(table.style.format({"time (s)": "{:.0f}"}, na_rep="–"))

# %% tags=["remove-input"]
hit = [e.notebook for e in REGISTRY
       if e.function and "aepsl.methods.psl" in code_modules(e.function.split(":")[0])]
display(Markdown(notes.try_it(
    "a docstring",
    "See the cache at work: edit only a docstring or a comment in `aepsl/methods/psl.py`, then "
    "print the plan and rebuild",
    f".venv/bin/python -m aepsl --profile {profile} --check && make book PROFILE={profile}",
    "The code hash ignores comments and docstrings, so every stage is found done: the "
    "notebooks are executed again and nothing is trained; the code hash column above does "
    "not change. Change a line of code in `aepsl/methods/psl.py` instead, and the runs of the "
    "notebooks whose stage code imports it — " + ", ".join(f"`{n}`" for n in hit)
    + " — are recomputed, and only they.")))
