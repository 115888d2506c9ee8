"""The one training loop every stage uses.

* progress bar per epoch (tqdm), loss logs averaged per epoch;
* AMP on CUDA (bfloat16 where supported, else float16 with a gradient scaler);
  channels_last memory format (it also speeds up convolutions on CPU here);
* SGD or AdamW with a polynomial learning-rate decay computed from the global step, so a
  resumed run needs no scheduler state;
* a checkpoint after every epoch (written atomically) and resume from it;
* determinism: the sample order and the augmentation of epoch ``e`` depend only on
  ``(seed, e)``, and torch's RNG is reseeded at every epoch start, so an interrupted and
  resumed run ends with the same weights as an uninterrupted one (on CPU).

Fault injection for tests: with ``AEPSL_TEST_HOLD=<epoch>:<batch>:<file>`` in the environment,
training stops before that batch (1-based epoch, 0-based batch), creates ``<file>`` and waits
there until the process is killed; a test then kills it with SIGKILL at a known point in the
middle of an epoch, with weights in memory that no checkpoint holds.
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

from .artifacts import save_torch
from .data.transforms import collate


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"parameter device: unknown device {device!r} (use 'auto', 'cpu', 'cuda')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("parameter device is 'cuda' but no CUDA device is available; use device='auto' or 'cpu'")
    return dev


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
    """A DataLoader whose order depends only on (seed, epoch)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    gen = torch.Generator()
    gen.manual_seed(seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      worker_init_fn=_worker_init if num_workers else None,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=False)


def autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 if supported, else fp16); a no-op context on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


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


def _optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float):
    groups = model.param_groups() if hasattr(model, "param_groups") else [(list(model.parameters()), 1.0)]
    param_groups = [{"params": [p for p in ps if p.requires_grad], "lr_mult": m, "lr": lr * m}
                    for ps, m in groups]
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"parameter optimizer must be 'sgd' or 'adamw', got {name!r}")


LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, dict]"]


def _test_hold() -> tuple[int, int, Path] | None:
    """The (epoch, batch, marker file) of ``AEPSL_TEST_HOLD``, if set (see the module docstring)."""
    value = os.environ.get("AEPSL_TEST_HOLD")
    if not value:
        return None
    epoch, batch, marker = value.split(":", 2)
    return int(epoch), int(batch), Path(marker)


def _hold_forever(marker: Path, desc: str, epoch: int, batch: int) -> None:
    marker.write_text(f"{desc}: holding before epoch {epoch} batch {batch} (pid {os.getpid()})\n")
    while True:
        time.sleep(3600)


def fit(model: nn.Module, dataset: Dataset, loss_fn: LossFn, *, epochs: int, batch_size: int,
        lr: float, ckpt_path: str | os.PathLike, device: torch.device, seed: int,
        weight_decay: float = 1e-4, optimizer: str = "sgd", momentum: float = 0.9,
        poly_power: float = 0.9, warmup_steps: int = 0, num_workers: int = 0,
        fingerprint: str = "", stop_after: int | None = None, desc: str = "train",
        progress: bool = True, fresh: bool = False) -> list[dict]:
    """Train ``model`` in place and return the per-epoch history.

    ``loss_fn(model, batch)`` gets a batch already on ``device`` (images still uint8) and
    returns ``(loss, logs)``.  A checkpoint at ``ckpt_path`` with the same ``fingerprint``
    is resumed; a different fingerprint, or ``fresh=True`` (a forced rerun), starts over.
    ``stop_after`` ends the call after
    that many epochs in total (used to test resume).
    """
    from tqdm.auto import tqdm

    ckpt_path = Path(ckpt_path)
    model = prepare_model(model, device)
    opt = _optimizer(model, optimizer, lr, weight_decay, momentum)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    start, history = 0, []
    if fresh:
        ckpt_path.unlink(missing_ok=True)
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, history = state["epoch"], state["history"]
    steps_per_epoch = max(1, (len(dataset) // batch_size))
    total_steps = epochs * steps_per_epoch
    end = epochs if stop_after is None else min(epochs, stop_after)
    hold = _test_hold()
    for epoch in range(start, end):
        torch.manual_seed(seed * 1009 + epoch)
        loader = make_loader(dataset, batch_size, True, seed, epoch, num_workers, drop_last=True, device=device)
        model.train()
        sums: dict[str, float] = {}
        n, t0 = 0, time.time()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for i, batch in enumerate(bar):
            if hold is not None and hold[:2] == (epoch + 1, i):
                _hold_forever(hold[2], desc, epoch + 1, i)
            step = epoch * steps_per_epoch + i
            factor = (1 - step / total_steps) ** poly_power
            if warmup_steps and step < warmup_steps:
                factor *= (step + 1) / warmup_steps
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_mult"] * factor
            batch = to_device(batch, device)
            with autocast(device):
                loss, logs = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, step {i}; "
                                         f"lower the learning rate (parameter lr={lr})")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            logs = {"loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2),
                  **{k: v / max(n, 1) for k, v in sums.items()}}
        history.append(record)
        save_torch(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "epoch": epoch + 1, "history": history, "fingerprint": fingerprint})
    return history

