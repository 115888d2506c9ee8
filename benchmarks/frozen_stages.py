"""Times one training step of the book's three networks for each number of frozen backbone stages.

The classifier (96 px crops), the segmenter (64 px crops, stride-4 decoder) and AffinityNet
(96 px crops), each on the EfficientNet-Lite0 cut after stage 5 with its ImageNet weights, batch
32, channels_last, AdamW: the median seconds of a forward, backward and optimiser step over
``--steps`` steps (after two warm-up steps) with ``frozen_stages`` = 0 (train every layer) ... 4,
measured in this process one setting after another. Written to benchmarks/frozen_stages.json
with the machine, the code revision and the date. What freezing does to the learned numbers is
measured on whole chains, several training seeds each, by benchmarks/seeds.py.

    .venv/bin/python benchmarks/frozen_stages.py
    .venv/bin/python benchmarks/frozen_stages.py --dry-run   # one step of each setting on 2 images, nothing written
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.engine.artifacts import cpu_model, git_revision, write_json  # noqa: E402
from aepsl.methods.cam import CAMConfig, build_model  # noqa: E402
from aepsl.methods.psl import PSLConfig, build_segmenter  # noqa: E402
from aepsl.methods.randomwalk import AffinityConfig, build_affinity_net  # noqa: E402

OUT = ROOT / "benchmarks" / "frozen_stages.json"
SETTINGS = (0, 1, 2, 3, 4)


def networks(frozen: int, batch: int = 32):
    """(name, model, input crop, loss of a forward pass) of the book's three networks."""
    classifier = build_model(CAMConfig(frozen_stages=frozen), 10)
    segmenter = build_segmenter(PSLConfig(frozen_stages=frozen), 11)
    affinity = build_affinity_net(AffinityConfig(frozen_stages=frozen))
    labels = (torch.rand(batch, 10) > 0.7).float()
    return [
        ("classifier", classifier, 96, lambda m, x: F.multilabel_soft_margin_loss(m(x), labels)),
        ("segmenter", segmenter, 64, _segmenter_loss),
        ("AffinityNet", affinity, 96, lambda m, x: m(x).float().pow(2).mean()),
    ]


def _segmenter_loss(model, x):
    out = model(x)
    return out["seg"].float().logsumexp(1).mean() + out["cls"].float().pow(2).mean()


def step_seconds(model, crop: int, loss_fn, steps: int, batch: int = 32, warm_up: int = 2) -> float:
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + warm_up):
        t0 = time.perf_counter()
        loss = loss_fn(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warm_up:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting (default 8)")
    ap.add_argument("--dry-run", action="store_true", help="one untimed step of each setting on 2 images, nothing written")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    steps = 1 if args.dry_run else args.steps
    batch, warm_up = (2, 0) if args.dry_run else (32, 2)
    rows = []
    for frozen in SETTINGS:
        row = {"frozen_stages": frozen}
        for name, model, crop, loss_fn in networks(frozen, batch):
            row[name] = round(step_seconds(model, crop, loss_fn, steps, batch, warm_up), 4)
            row[f"{name} trained parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append(row)
        print(row, flush=True)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    write_json(OUT, {"command": "python benchmarks/frozen_stages.py", "steps": steps, "batch": 32,
                     "threads": torch.get_num_threads(), "cpu": cpu_model(), "cores": os.cpu_count(),
                     "git_revision": git_revision(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "rows": rows})
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
