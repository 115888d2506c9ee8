"""The training loop: resume gives the same weights, fingerprints, devices, host memory, training views."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from aepsl.methods.cam import classification_loss
from aepsl.data.transforms import IMAGENET_MEAN, TrainView
from aepsl.data.voc import SegDataset, VOCTree
from aepsl.models import CAMClassifier
from aepsl.engine.train import fit, pick_device, seed_everything

CPU = torch.device("cpu")
FIT = dict(batch_size=8, lr=0.05, device=CPU, seed=0, progress=False)


def _view(tree_root) -> TrainView:
    return TrainView(SegDataset(VOCTree(tree_root), "train", with_masks=False), crop=32)


def _model(seed: int = 0) -> CAMClassifier:
    seed_everything(seed)
    return CAMClassifier(3, "small", width=4)


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"tensor {k} differs"


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(scene_tree, tmp_path_factory):
    """Two epochs in one call: (model, history)."""
    folder = tmp_path_factory.mktemp("fit-a")
    model = _model()
    history = fit(model, _view(scene_tree), classification_loss, epochs=2, ckpt_path=folder / "a.pt", **FIT)
    return model, history


def test_uninterrupted_history(uninterrupted):
    model, history = uninterrupted
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    init = _model()
    assert not _states_equal(model.state_dict(), init.state_dict()), "training changed nothing"


def test_resume_matches_uninterrupted(uninterrupted, scene_tree, tmp_path):
    model_a, history_a = uninterrupted
    ckpt = tmp_path / "b.pt"
    first = _model()
    history_1 = fit(first, _view(scene_tree), classification_loss, epochs=2, ckpt_path=ckpt,
                    stop_after=1, **FIT)
    assert [h["epoch"] for h in history_1] == [1]
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    assert not _states_equal(first.state_dict(), model_a.state_dict())  # only half trained

    resumed = _model()  # a fresh process would build the model again from the seed
    history_b = fit(resumed, _view(scene_tree), classification_loss, epochs=2, ckpt_path=ckpt, **FIT)
    _assert_same_state(resumed, model_a)
    assert _without_time(history_b) == _without_time(history_a)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2


def test_finished_checkpoint_is_not_retrained(uninterrupted, scene_tree, tmp_path):
    """A call whose checkpoint already holds every epoch only loads it."""
    model_a, history_a = uninterrupted
    ckpt = tmp_path / "c.pt"
    fit(_model(), _view(scene_tree), classification_loss, epochs=2, ckpt_path=ckpt, **FIT)
    loaded = _model(seed=123)  # a different initialisation: the checkpoint must overwrite it
    history = fit(loaded, _view(scene_tree), classification_loss, epochs=2, ckpt_path=ckpt, **FIT)
    _assert_same_state(loaded, model_a)
    assert _without_time(history) == _without_time(history_a)


def test_other_fingerprint_starts_over(scene_tree, tmp_path):
    ckpt = tmp_path / "d.pt"
    # a checkpoint of another run: different learning rate, fingerprint "x"
    other = _model()
    fit(other, _view(scene_tree), classification_loss, epochs=1, ckpt_path=ckpt, fingerprint="x",
        **{**FIT, "lr": 0.2})
    other_state = {k: v.clone() for k, v in other.state_dict().items()}
    model = _model()
    history = fit(model, _view(scene_tree), classification_loss, epochs=1, ckpt_path=ckpt,
                  fingerprint="y", **FIT)
    assert [h["epoch"] for h in history] == [1]
    assert not _states_equal(model.state_dict(), other_state), "the other run's weights were resumed"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["fingerprint"] == "y" and saved["epoch"] == 1


def test_nonfinite_loss_raises(scene_tree, tmp_path):
    def bad_loss(model, batch):
        logits = model(batch["image"].float())
        return logits.sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="lr"):
        fit(_model(), _view(scene_tree), bad_loss, epochs=1, ckpt_path=tmp_path / "e.pt", **FIT)
    assert not (tmp_path / "e.pt").exists()


# --------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_auto_is_cpu_without_cuda():
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_cuda_without_cuda():
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")


def test_pick_device_nonsense():
    with pytest.raises(ValueError, match="nonsense"):
        pick_device("nonsense")


# --------------------------------------------------------------------------- TrainView
@pytest.fixture(scope="module")
def masked(scene_tree):
    return SegDataset(VOCTree(scene_tree), "train", with_masks=True)


def _same_sample(a: dict, b: dict) -> bool:
    return np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])


def test_trainview_deterministic(masked):
    v1, v2 = TrainView(masked, crop=24, seed=3), TrainView(masked, crop=24, seed=3)
    for epoch in (0, 2):
        v1.set_epoch(epoch)
        v2.set_epoch(epoch)
        for i in (0, 5, len(masked) - 1):
            assert _same_sample(v1[i], v2[i])
            assert _same_sample(v1[i], v1[i])  # drawing twice gives the same sample


def test_trainview_changes_across_epochs_and_seeds(masked):
    view = TrainView(masked, crop=24, seed=0)
    view.set_epoch(0)
    epoch0 = [view[i] for i in range(len(masked))]
    view.set_epoch(1)
    epoch1 = [view[i] for i in range(len(masked))]
    assert any(not _same_sample(a, b) for a, b in zip(epoch0, epoch1))
    other = TrainView(masked, crop=24, seed=1)
    assert any(not _same_sample(a, other[i]) for i, a in enumerate(epoch0))


@pytest.mark.parametrize("crop", [16, 32, 40])
def test_trainview_crop_size(masked, crop):
    view = TrainView(masked, crop=crop, seed=0)
    for i in range(4):
        s = view[i]
        assert s["image"].shape == (crop, crop, 3) and s["image"].dtype == np.uint8
        assert s["mask"].shape == (crop, crop) and s["mask"].dtype == np.uint8
        assert s["name"] == masked.names[i]
        np.testing.assert_array_equal(s["labels"], masked[i]["labels"])


def test_trainview_padding(masked):
    """Crop 40 of a 32 px image at scale 1, no flip: the padding sits bottom/right."""
    view = TrainView(masked, crop=40, scale=(1.0, 1.0), flip=False, seed=0)
    fill = np.array([round(255 * m) for m in IMAGENET_MEAN], np.uint8)
    for i in range(3):
        s, orig = view[i], masked[i]
        assert (s["mask"][32:, :] == 255).all() and (s["mask"][:, 32:] == 255).all()
        np.testing.assert_array_equal(s["mask"][:32, :32], orig["mask"])
        np.testing.assert_array_equal(s["image"][:32, :32], orig["image"])
        assert (s["image"][32:, :] == fill).all() and (s["image"][:, 32:] == fill).all()


def test_trainview_without_masks(scene_tree):
    view = _view(scene_tree)
    s = view[0]
    assert s["image"].shape == (32, 32, 3)
    assert s.get("mask") is None


# a process's big block, allocated after keep_freed_memory(): the mmapped bytes it added (glibc's mallinfo2 hblkhd)
_MMAPPED = r"""
import ctypes, sys
from aepsl.engine.device import keep_freed_memory
kept = keep_freed_memory()
assert keep_freed_memory() == kept   # once per process: the same answer again
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(kept, libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("setting, kept", [("", True), ("system", False)])
def test_keep_freed_memory_serves_big_blocks_from_the_heap(setting, kept):
    env = {**os.environ, "AEPSL_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", _MMAPPED], env=env, capture_output=True, text=True, check=True)
    said, mapped = out.stdout.split()
    assert said == str(kept)
    # kept: a 64 MiB block comes from the heap; glibc as it comes maps it on its own
    assert (int(mapped) == 0) == kept


# ----------------------------------------------------------------- bfloat16 autocast on the CPU
def test_cpu_bfloat16_follows_the_variable_and_the_hardware(monkeypatch):
    from aepsl.engine.device import cpu_bfloat16, precision
    from aepsl.engine.train import autocast

    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    for value, on in (("1", True), ("0", False)):
        monkeypatch.setenv("AEPSL_CPU_AMP", value)
        assert cpu_bfloat16() is on
        assert precision(CPU) == ("bfloat16" if on else "float32")
        with autocast(CPU):
            assert conv(x).dtype == (torch.bfloat16 if on else torch.float32)
    monkeypatch.setenv("AEPSL_CPU_AMP", "auto")   # the CPU decides: native bfloat16 (AVX512-BF16 or AMX) or not
    assert cpu_bfloat16() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    monkeypatch.setenv("AEPSL_CPU_AMP", "yes")
    with pytest.raises(ValueError, match="AEPSL_CPU_AMP"):
        cpu_bfloat16()


def test_bfloat16_training_is_deterministic_resumes_and_differs_from_float32(monkeypatch, uninterrupted, scene_tree,
                                                                             tmp_path):
    """Under bfloat16 autocast a fit gives the same weights twice and after a resume, and not the
    float32 fit's weights (the switch reaches the training step)."""
    model_32, _ = uninterrupted
    monkeypatch.setenv("AEPSL_CPU_AMP", "1")
    a = _model()
    history_a = fit(a, _view(scene_tree), classification_loss, epochs=2, ckpt_path=tmp_path / "a.pt", **FIT)
    assert all(np.isfinite(h["loss"]) for h in history_a)
    assert all(p.dtype == torch.float32 for p in a.parameters())   # autocast: weights stay float32
    assert not _states_equal(a.state_dict(), model_32.state_dict())
    fit(_model(), _view(scene_tree), classification_loss, epochs=2, ckpt_path=tmp_path / "b.pt", stop_after=1, **FIT)
    resumed = _model()
    history_b = fit(resumed, _view(scene_tree), classification_loss, epochs=2, ckpt_path=tmp_path / "b.pt", **FIT)
    _assert_same_state(resumed, a)
    assert _without_time(history_b) == _without_time(history_a)
