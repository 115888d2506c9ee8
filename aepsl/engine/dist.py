"""Several processes (``torchrun --nproc_per_node N``): one training, one writer.

Under torchrun every process runs the same stage function. Training is data-parallel
(DistributedDataParallel, a DistributedSampler shard per process, gradients averaged);
everything else — evaluation, CAM inference, every artifact write — happens on rank 0
while the other ranks wait at a barrier, then read what rank 0 wrote. ``artifacts``
refuses writes from any other rank, so a stage that forgot this fails loudly.

Without torchrun (``WORLD_SIZE`` unset) every function here is a no-op and world size is 1.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as td


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        td.barrier()


def init_from_env(device: str = "auto", timeout_s: int = 4 * 3600) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``...). NCCL when the processes use CUDA, else gloo; each CUDA process
    takes GPU ``LOCAL_RANK``. The long timeout covers rank 0's evaluation, during which the
    other ranks wait. Returns whether a group of more than one process is running."""
    if is_initialized():
        return world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = device in ("auto", "", None, "cuda") and torch.cuda.is_available()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("parameter device is 'cuda' but no CUDA device is available; use device='auto' or 'cpu'")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices: "
                             f"use torchrun --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    td.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if is_initialized():
        td.destroy_process_group()


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank. Every rank must call it: a training stage decides with it
    whether its artifacts are already done, so that no rank skips a stage that rank 0 runs (a
    rank that checked after rank 0 had finished would skip its barriers and hang the others)."""
    if world_size() <= 1:
        return flag
    box = [bool(flag)]
    td.broadcast_object_list(box, src=0)
    return bool(box[0])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place); unchanged with one process."""
    if world_size() > 1:
        td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def wait_for_main(folder) -> dict | None:
    """On a rank other than 0: wait until rank 0 finished the stage, return its metrics.json."""
    from .artifacts import load_metrics

    barrier()
    return load_metrics(folder)


def release(record: dict) -> dict:
    """On rank 0, after writing the stage's artifacts: let the waiting ranks go on."""
    barrier()
    return record
