"""Progress display: one line per loop where the output is no terminal (a log, CI), tqdm's bar
on a terminal, nothing when disabled (aepsl.engine.progress)."""
from __future__ import annotations

import io

import numpy as np
import torch

from aepsl.engine import progress
from aepsl.engine.train import fit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_loop_with_its_postfix():
    log = io.StringIO()
    loop = progress.bar(range(5), desc="cam epoch 1/2", file=log)
    assert len(loop) == 5
    seen = []
    for i in loop:
        seen.append(i)
        loop.set_postfix(loss=f"{0.5 / (i + 1):.4f}")
        assert log.getvalue() == ""            # nothing while the loop runs
    assert seen == list(range(5))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()
    assert lines[0].startswith("cam epoch 1/2: 5 steps in ") and lines[0].endswith(" s, loss=0.1000")
    # an iterator without a length, another unit
    log = io.StringIO()
    assert list(progress.bar(iter("abc"), desc="merge", file=log, unit="images")) == ["a", "b", "c"]
    assert log.getvalue().startswith("merge: 3 images in ")


def test_a_terminal_keeps_its_bar_and_disable_prints_nothing():
    tty = Terminal()
    assert progress.interactive(tty) and not progress.interactive(io.StringIO())
    assert list(progress.bar(range(3), desc="scenes train", file=tty)) == [0, 1, 2]
    assert "\r" in tty.getvalue() and "scenes train" in tty.getvalue()   # tqdm's frames
    for stream in (io.StringIO(), Terminal()):
        assert list(progress.bar(range(3), desc="quiet", disable=True, file=stream)) == [0, 1, 2]
        assert stream.getvalue() == ""


class _Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(i)
        return {"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
                "labels": rng.random(1).astype(np.float32), "name": f"toy{i}"}


def test_training_in_a_log_writes_one_line_per_epoch(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)

    def loss_fn(net, batch):
        return torch.nn.functional.mse_loss(net(batch["image"].float().mean((2, 3)) / 255), batch["labels"]), {}

    history = fit(model, _Pairs(), loss_fn, epochs=2, batch_size=4, lr=0.01, ckpt_path=tmp_path / "ckpt.pt",
                  device=torch.device("cpu"), seed=0, desc="toy", progress=True)
    assert len(history) == 2
    err = capsys.readouterr().err   # pytest's captured stderr is no terminal
    lines = [line for line in err.splitlines() if line.startswith("toy epoch")]
    assert [line.split(":")[0] for line in lines] == ["toy epoch 1/2", "toy epoch 2/2"]
    assert all(" 2 steps in " in line and ", loss=" in line for line in lines)
    assert "\r" not in err
    # the same numbers as a run without progress (and so as one with a bar): the line display
    # opens the shuffled loader as tqdm does, which draws the same seeds
    torch.manual_seed(0)
    quiet = fit(torch.nn.Linear(3, 1), _Pairs(), loss_fn, epochs=2, batch_size=4, lr=0.01,
                ckpt_path=tmp_path / "quiet.pt", device=torch.device("cpu"), seed=0, desc="toy", progress=False)
    assert [h["loss"] for h in quiet] == [h["loss"] for h in history]
