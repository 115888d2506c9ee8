"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py PROFILE TREE SCRATCH [ARGS]

1. the stages of PROFILE through the real CLI entry point (``aepsl.stages.main``, with ARGS);
2. rank 1 tries to write an artifact (the guard must refuse);
3. one more data-parallel ``fit`` on TREE, then every rank's parameters are gathered.
Results go to stdout as ``RESULT {json}`` lines (rank 1 may not write files).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as td

from aepsl import stages

from aepsl.engine import dist
from aepsl.engine.artifacts import write_text
from aepsl.methods.cam import classification_loss
from aepsl.data.transforms import TrainView
from aepsl.data.voc import SegDataset, VOCTree
from aepsl.models import CAMClassifier
from aepsl.engine.train import fit, seed_everything


def main() -> int:
    profile, tree, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_from_env("cpu")
    rc = stages.main(["--profile", profile, "--no-progress", *sys.argv[4:]])
    result: dict = {"rank": dist.rank(), "world": dist.world_size(), "rc": rc}

    guard = "wrote"
    if dist.rank() == 1:
        try:
            write_text(scratch / "rank1.txt", "rank 1 was here\n")
        except RuntimeError as exc:
            guard = str(exc)
        result["guard"] = guard

    seed_everything(0)
    model = CAMClassifier(3, "small", width=4)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    view = TrainView(SegDataset(VOCTree(tree), "train", with_masks=False), crop=32, seed=0)
    history = fit(model, view, classification_loss, epochs=1, batch_size=8, lr=0.05, ckpt_path=scratch / "fit.pt",
                  device=torch.device("cpu"), seed=0, progress=False)
    vec = torch.cat([p.detach().flatten() for p in model.parameters()])
    everyone = [torch.zeros_like(vec) for _ in range(dist.world_size())]
    td.all_gather(everyone, vec)
    result["replica_max_diff"] = max(float((v - vec).abs().max()) for v in everyone)
    result["moved"] = float((vec - start).abs().max())
    result["history"] = history
    for r in range(dist.world_size()):   # one rank at a time, so the two lines cannot interleave
        if dist.rank() == r:
            print("RESULT " + json.dumps(result), flush=True)
        dist.barrier()
    dist.shutdown()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
