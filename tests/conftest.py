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
