"""Shared fixtures: one tiny scene tree made with the built-in drawn shapes (no downloads)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from aepsl.engine.config import PARAMS_DIR
from aepsl.data.scenes import SceneConfig, generate

# The tests run tiny models on a small machine that is often busy with other work. With
# several intra-op threads, every small operator waits at a barrier for threads the OS has
# descheduled (measured here: the same 2-epoch fit took 0.05 s or 6 s); one thread does not.
# Subprocesses (the CLI, papermill kernels) inherit the environment variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# The networks compute in float32 here on every machine, so that the suite checks the same
# numbers whether or not the CPU has native bfloat16 (where it has, the book's stages run under
# bfloat16 autocast: aepsl.engine.device.cpu_bfloat16). The tests of that path set it themselves.
os.environ["AEPSL_CPU_AMP"] = "0"

TINY_CLASSES = ["disc", "square", "triangle"]


def tiny_scene_config(data_root, seed: int = 0, **overrides) -> SceneConfig:
    """The tiny scene parameters the tests share (32 px, 24/8/8 images, <= 2 items)."""
    params = dict(source="shapes", classes=list(TINY_CLASSES), image_size=32, item_size=[12, 20], part_size=[0, 0],
                  n_train=24, n_val=8, n_test=8, max_items=2, data_root=str(data_root), seed=seed)
    params.update(overrides)
    return SceneConfig(**params)


@pytest.fixture(scope="session")
def scene_tree(tmp_path_factory) -> Path:
    """Root of a tiny VOC-style scene tree (3 shape classes, 24 train / 8 val / 8 test)."""
    root = tmp_path_factory.mktemp("scenes") / "tree"
    generate(tiny_scene_config(root), progress=False)
    assert (root / "dataset.json").is_file()
    return root


# `make test` runs the suite in two processes (pytest-xdist, --dist loadgroup), and each process
# computes the shared fixtures its tests use. So that the expensive ones are still computed once,
# the tests that share one run in the same process: every test that uses the quick profile's run
# (``quick_run``, directly or through another fixture) in the group "quick_run", and the tests of
# a file that use a module-scoped fixture of that file (a training, a torchrun launch, a runner
# call) in a group named after the file. The other tests go to whichever process is free.
SHARED_RUNS = ("quick_run",)


def xdist_group(item: pytest.Item) -> str | None:
    """The process group of a test (None: any process), as the comment above says."""
    names = set(item.fixturenames)
    for name in SHARED_RUNS:
        if name in names:
            return name
    module = item.nodeid.split("::")[0]
    for name in sorted(names):
        defs = item._fixtureinfo.name2fixturedefs.get(name) or ()
        if defs and defs[-1].scope == "module" and defs[-1].baseid == module:
            return module
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test with its group; in a pytest-xdist process run with --dist loadgroup, also
    append the group to the test's node id (``path::test@group``), which is how the scheduler
    learns it. pytest-xdist 3.8 does that itself through ``item._nodeid``, which pytest 9.2 no
    longer reads (it keeps node ids in a structured ``item._id``), so the groups were lost and
    each process ran the quick profile again. This hook runs after pytest-xdist's and sets the
    suffix itself (https://github.com/pytest-dev/pytest-xdist/issues/1386)."""
    loadgroup = getattr(config.option, "loadgroup", False)   # set in the processes pytest-xdist starts
    for item in items:
        group = xdist_group(item)
        if not group:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup and not item.nodeid.endswith(f"@{group}"):
            _append_to_node_id(item, f"@{group}")


def _append_to_node_id(item: pytest.Item, suffix: str) -> None:
    try:
        from _pytest.nodeid import NodeId
    except ImportError:   # pytest before 9.2: the node id is a string
        item._nodeid = item.nodeid + suffix
    else:
        item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture(scope="session")
def make_scene_config():
    """``make_scene_config(root, seed=0, **overrides)`` -> the tiny SceneConfig."""
    return tiny_scene_config


QUICK_ONLY = None   # e.g. ["00_data", "01_cam"] while debugging: the quick run executes only these


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """Run the quick profile once per test run through papermill, with data and artifacts under
    a temporary folder: ``{record, profile, artifacts, data}`` (the notebook tests check it,
    the book test builds the book from its executed notebooks)."""
    from aepsl.engine.run_notebooks import run_profile

    tmp = tmp_path_factory.mktemp("quick")
    profile = yaml.safe_load((PARAMS_DIR / "quick.yaml").read_text())
    profile["common"]["artifacts_root"] = str(tmp / "artifacts")
    profile["common"]["data_root"] = str(tmp / "data")
    path = tmp / "quick.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    record = run_profile(str(path), only=QUICK_ONLY)
    return {"record": record, "profile": profile, "artifacts": tmp / "artifacts" / "quick", "data": tmp / "data",
            "path": path}
