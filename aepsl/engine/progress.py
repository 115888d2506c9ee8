"""Progress display of the stages: a bar on a terminal, one line per loop in a log.

Every loop that shows progress (an epoch of training, predicting a split, generating scenes)
goes through :func:`bar`, which takes tqdm's arguments. Where it goes decides the form:

* a terminal (``isatty()``), or a Jupyter kernel: tqdm's bar, redrawn in place, as before;
* anything else (``make book > log``, CI, a pipe): no carriage-return frames, one line when the
  loop ends, ``"cam epoch 2/4: 62 steps in 14 s, loss=0.4321"``.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, TextIO


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` shows a redrawn bar to a person: a terminal or a Jupyter kernel's output."""
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


class LineProgress:
    """A loop's progress as one line written when it ends (tqdm's ``set_postfix`` included)."""

    def __init__(self, iterable: Iterable, desc: str = "", total: int | None = None, stream: TextIO | None = None,
                 unit: str = "steps"):
        self.iterable, self.desc, self.stream, self.unit = iterable, desc, stream, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = 0
        self.postfix: dict = {}

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def __iter__(self):
        t0 = time.time()
        for item in self.iterable:
            yield item
            self.n += 1
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        stream = self.stream or sys.stderr
        stream.write(f"{self.desc + ': ' if self.desc else ''}{self.n} {self.unit} in {time.time() - t0:.0f} s{extra}\n")
        stream.flush()

    def set_postfix(self, **values) -> None:
        self.postfix.update({k: v for k, v in values.items()})

    def close(self) -> None:
        pass


def bar(iterable: Iterable, desc: str = "", total: int | None = None, disable: bool = False, leave: bool = False,
        file: TextIO | None = None, unit: str = "steps"):
    """``iterable`` with progress: tqdm's bar on a terminal or in a Jupyter kernel, one line at the
    end of the loop elsewhere, nothing with ``disable``. ``file`` is where it goes (stderr by default)."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    if disable or interactive(stream):
        return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, file=stream)
    # Iterated through a silent tqdm, not directly: tqdm.auto opens one iterator of a DataLoader
    # when it is made (and another to loop), and each opening draws a seed from the loader's
    # generator (or torch's global one); looping the same way keeps the random streams, hence
    # every trained number, what they are with a bar or with none.
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    return LineProgress(tqdm(iterable, total=total, disable=True), desc, total, file, unit)
