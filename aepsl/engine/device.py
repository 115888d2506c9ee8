"""Which torch device a stage runs on."""
from __future__ import annotations

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
