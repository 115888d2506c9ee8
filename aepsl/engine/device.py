"""Which torch device a stage runs on, and how the process's host memory is managed."""
from __future__ import annotations

import ctypes
import os
import platform

import torch


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device.
    A CUDA device comes with its index: the process's current GPU (under torchrun, its own)."""
    if device in ("auto", "", None):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"parameter device: unknown device {device!r} (use 'auto', 'cpu', 'cuda')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("parameter device is 'cuda' but no CUDA device is available; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def cpu_bfloat16() -> bool:
    """Whether work on the CPU runs under bfloat16 autocast (:func:`aepsl.engine.train.autocast`).

    ``AEPSL_CPU_AMP=1`` or ``0`` decides. Unset (or ``auto``), it is on where the CPU multiplies
    bfloat16 natively (AVX512-BF16 or AMX): there oneDNN runs the book's convolutions about
    twice as fast as in float32 (``benchmarks/cpu_amp.py``); elsewhere bfloat16 is emulated and
    no faster, so float32 stays."""
    value = os.environ.get("AEPSL_CPU_AMP", "auto").strip().lower()
    if value in ("0", "1"):
        return value == "1"
    if value not in ("", "auto"):
        raise ValueError(f"AEPSL_CPU_AMP must be 1, 0 or auto, got {value!r}")
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def precision(device: torch.device) -> str:
    """The floating-point type a stage's networks compute in on ``device`` (as its record says)."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_bfloat16() else "float32"


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_KEPT: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a process frees, for the next tensor of that size.

    By default glibc serves every large block (a batch of activations, from 128 KiB up) with a
    fresh ``mmap`` and returns it to the system when it is freed, so each forward pass faults in
    and zeroes its activations' pages anew: on two cores that was about a fifth of the CAM
    stage's time. With ``mmap`` off and the heap never trimmed, freed blocks are reused; the
    numbers are the same (``benchmarks/allocator.py`` records both ways). Called once per
    process when a stage computes; a no-op off glibc or with ``AEPSL_MALLOC=system`` in the
    environment. Returns whether the setting is in force."""
    global _KEPT
    if _KEPT is not None:
        return _KEPT
    _KEPT = False
    if os.environ.get("AEPSL_MALLOC", "") == "system" or not platform.libc_ver()[0] == "glibc":
        return _KEPT
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _KEPT
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _KEPT = all(mallopt(param, value) == 1 for param, value in
                ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 30), (_M_TOP_PAD, 64 << 20)))
    return _KEPT
