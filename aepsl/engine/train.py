"""The one training loop every stage uses.

* progress per epoch (a bar on a terminal, one line in a log: :mod:`.progress`), loss logs averaged per epoch;
* AMP on CUDA (bfloat16 where supported, else float16 with a gradient scaler) and on CPUs
  that multiply bfloat16 natively (:func:`.device.cpu_bfloat16`);
  channels_last memory format (it also speeds up convolutions on CPU here); cuDNN autotuning
  on CUDA; losses stay on the device and are read back every few steps, not every step;
  optionally ``torch.compile`` (``torch_compile=True``);
* under torchrun, DistributedDataParallel with a DistributedSampler shard per process
  (``batch_size`` stays the global batch) and checkpoints written by rank 0 only;
* SGD or AdamW with a polynomial learning-rate decay computed from the global step, so a
  resumed run needs no scheduler state;
* a checkpoint after every epoch (written atomically) and resume from it;
* determinism: the sample order and the augmentation of epoch ``e`` depend only on
  ``(seed, e)``, and torch's RNG is reseeded at every epoch start, so an interrupted and
  resumed run ends with the same weights as an uninterrupted one (on CPU).

Fault injection for tests: with ``AEPSL_TEST_HOLD=<epoch>:<batch>:<file>`` in the environment,
training stops before that batch (1-based epoch, 0-based batch), creates ``<file>`` and waits
there until the process is killed (or ``<file>`` is removed: training goes on); a test then kills
it with SIGKILL, or interrupts it, at a known point in the middle of an epoch, with weights in
memory that no checkpoint holds, or starts a second run against it.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import dist
from .artifacts import save_torch
from .progress import bar as progress_bar
from .device import cpu_bfloat16, pick_device  # noqa: F401  (pick_device: part of this module's API)
from ..data.transforms import collate


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _worker_init(worker_id: int) -> None:  # each worker: numpy/random from torch's seed
    s = torch.initial_seed() % (2 ** 32)
    np.random.seed(s)
    random.seed(s)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, epoch: int = 0,
                num_workers: int = 0, drop_last: bool = False, device: torch.device | None = None) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch).

    Under torchrun a shuffled loader reads this process's DistributedSampler shard
    (``batch_size`` is then the per-process batch)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    gen = torch.Generator()
    gen.manual_seed(seed * 100_003 + epoch)
    sampler = None
    if shuffle and dist.world_size() > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, dist.world_size(), dist.rank(), shuffle=True,
                                                      seed=seed * 100_003, drop_last=True)
        sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, generator=gen,
                      num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      worker_init_fn=_worker_init if num_workers else None,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=False)


def size_batches(sizes: list, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal image size: sizes in order of first appearance,
    file order within a size. One size (the generated scenes) gives plain consecutive batches."""
    groups: dict = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return [idx[j:j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]


def inference_loader(dataset: Dataset, batch_size: int, num_workers: int = 0,
                     device: torch.device | None = None) -> DataLoader:
    """Batches for inference, in a fixed order: images of one size go together, so trees of
    mixed sizes (PASCAL VOC) are batched too without padding. ``dataset`` must expose
    ``tree`` and ``names``; trees written by the scene generator (``dataset.json``) hold one
    size and need no header reads."""
    tree, names = dataset.tree, dataset.names
    if (tree.root / "dataset.json").exists():
        sizes = [(0, 0)] * len(names)
    else:
        sizes = [tree.image_size(n) for n in names]
    return DataLoader(dataset, batch_sampler=size_batches(sizes, max(1, batch_size)), num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=_worker_init if num_workers else None,
                      pin_memory=device is not None and device.type == "cuda")


def autocast(device: torch.device):
    """Mixed precision: on CUDA bfloat16 where supported, else float16; on the CPU bfloat16 where
    it is native (:func:`aepsl.engine.device.cpu_bfloat16`), else a no-op context."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bfloat16())


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device).to(memory_format=torch.channels_last)


def to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float):
    groups = model.param_groups() if hasattr(model, "param_groups") else [(list(model.parameters()), 1.0)]
    param_groups = [{"params": [p for p in ps if p.requires_grad], "lr_mult": m, "lr": lr * m}
                    for ps, m in groups]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"parameter optimizer must be 'sgd' or 'adamw', got {name!r}")


LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, dict]"]


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 AMP (CUDA without bf16); a pass-through otherwise."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())


def train_step(model: nn.Module, batch: dict, loss_fn: LossFn, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, device: torch.device) -> tuple[torch.Tensor, dict]:
    """One optimisation step under AMP; returns the (device) loss and logs, nothing synchronised."""
    with autocast(device):
        loss, logs = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss, logs
def _test_hold() -> tuple[int, int, Path] | None:
    """The (epoch, batch, marker file) of ``AEPSL_TEST_HOLD``, if set (see the module docstring)."""
    value = os.environ.get("AEPSL_TEST_HOLD")
    if not value:
        return None
    epoch, batch, marker = value.split(":", 2)
    return int(epoch), int(batch), Path(marker)


def _hold_forever(marker: Path, desc: str, epoch: int, batch: int) -> None:
    """Wait at the hold until the process is killed or interrupted, or until the test removes
    ``marker`` (then training goes on)."""
    marker.write_text(f"{desc}: holding before epoch {epoch} batch {batch} (pid {os.getpid()})\n")
    while marker.exists():
        time.sleep(0.05)


def fit(model: nn.Module, dataset: Dataset, loss_fn: LossFn, *, epochs: int, batch_size: int,
        lr: float, ckpt_path: str | os.PathLike, device: torch.device, seed: int,
        weight_decay: float = 1e-4, optimizer: str = "sgd", momentum: float = 0.9,
        poly_power: float = 0.9, warmup_steps: int = 0, num_workers: int = 0,
        fingerprint: str = "", stop_after: int | None = None, desc: str = "train",
        progress: bool = True, fresh: bool = False, torch_compile: bool = False,
        on_epoch: Callable[[int], None] | None = None) -> list[dict]:
    """Train ``model`` in place and return the per-epoch history.

    ``loss_fn(model, batch)`` gets a batch already on ``device`` (images still uint8) and
    returns ``(loss, logs)``; it must run the network through ``model(...)`` (its forward),
    which under torchrun is the DistributedDataParallel wrapper that averages gradients.
    A checkpoint at ``ckpt_path`` with the same ``fingerprint``
    is resumed; a different fingerprint, or ``fresh=True`` (a forced rerun), starts over.
    ``stop_after`` ends the call after
    that many epochs in total (used to test resume). ``torch_compile`` runs the training step's
    model through ``torch.compile``. ``on_epoch(epoch)``, if given, is called before each epoch
    (0-based, also on resume), for losses that change over training.
    """
    world = dist.world_size()
    if batch_size % world:
        raise ValueError(f"parameter batch_size={batch_size} must be a multiple of the number of "
                         f"processes ({world})")
    ckpt_path = Path(ckpt_path)
    model = prepare_model(model, device)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # same state_dict keys
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed crop size: let cuDNN pick its kernels
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    scaler = grad_scaler(device)
    start, history = 0, []
    if fresh and dist.is_main():
        ckpt_path.unlink(missing_ok=True)
    dist.barrier()   # no rank looks for a checkpoint before a forced run removed it
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, history = state["epoch"], state["history"]
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if torch_compile:
        net = torch.compile(net)
    steps_per_epoch = max(1, len(dataset) // batch_size)
    total_steps = epochs * steps_per_epoch
    end = epochs if stop_after is None else min(epochs, stop_after)
    sync_every = 1 if device.type == "cpu" else 20   # reading a CUDA loss back stalls the GPU
    hold = _test_hold()
    for epoch in range(start, end):
        if on_epoch is not None:
            on_epoch(epoch)
        torch.manual_seed(seed * 1009 + epoch)
        loader = make_loader(dataset, batch_size // world, True, seed, epoch, num_workers, drop_last=True,
                             device=device)
        model.train()
        keys: list[str] = []
        acc = torch.zeros(0, device=device, dtype=torch.float64)
        n, t0 = 0, time.time()
        bar = progress_bar(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress)
        for i, batch in enumerate(bar):
            if hold is not None and hold[:2] == (epoch + 1, i):
                _hold_forever(hold[2], desc, epoch + 1, i)
            step = epoch * steps_per_epoch + i
            factor = max(0.0, 1 - step / total_steps) ** poly_power
            if warmup_steps and step < warmup_steps:
                factor *= (step + 1) / warmup_steps
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_mult"] * factor
            batch = to_device(batch, device)
            loss, logs = train_step(net, batch, loss_fn, opt, scaler, device)
            if not keys:
                keys = ["loss", *logs]
                acc = torch.zeros(len(keys), device=device, dtype=torch.float64)
            acc += torch.stack([torch.as_tensor(v, device=device).detach().double().reshape(())
                                for v in (loss, *logs.values())])
            n += 1
            if n % sync_every == 0 or i == len(loader) - 1:
                means = (acc / n).tolist()
                if not all(np.isfinite(means)):
                    raise FloatingPointError(f"{desc}: loss became {means[0]} by epoch {epoch + 1}, step {i}; "
                                             f"lower the learning rate (parameter lr={lr})")
                bar.set_postfix(loss=f"{means[0]:.4f}")
        totals = torch.cat([acc, torch.tensor([float(n)], device=device, dtype=torch.float64)])
        totals = dist.all_reduce_sum(totals).tolist()   # the epoch's means over every process
        count = max(totals[-1], 1)
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2),
                  **{k: v / count for k, v in zip(keys, totals[:-1])}}
        history.append(record)
        if dist.is_main():
            save_torch(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "epoch": epoch + 1, "history": history, "fingerprint": fingerprint})
    return history
