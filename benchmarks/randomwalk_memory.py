"""Peak memory of the random walk at 512x512 input on CPU (a benchmark, not a test).

    .venv/bin/python benchmarks/randomwalk_memory.py     # -> benchmarks/randomwalk_memory.json
    .venv/bin/python benchmarks/randomwalk_memory.py --dry-run   # each case once at 64x64; records nothing

Each case runs in a fresh subprocess and reports the growth of the process's peak resident
memory (ru_maxrss) over its resident memory just before the measured step, so the Python
interpreter, torch and the inputs are not counted:

* ``walk``: AffinityNet embedding of a 512x512 image (EfficientNet-Lite0 to stage 5, 128
  channels) -> banded transition matrix (radius 5, beta 8) -> 2^8 = 256 walk steps on 21 score
  maps (PASCAL VOC's background + 20 classes) at stride 8 (64x64 cells) -> upsampled to 512x512.
* ``dense``: the same walk with PSA's dense form (a 4096 x 4096 matrix squared 8 times), for
  comparison; its memory grows with the square of the number of cells.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASE = r'''
import json, resource, sys, time
import torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from aepsl.methods import randomwalk as rw
from aepsl.models.affinity import AffinityNet
torch.manual_seed(0)
torch.set_num_threads(1)
size, classes = {size}, 21
model = AffinityNet("efficientnet_lite0", "", depth="stage5", embed_dim=128).eval()
image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
scores = torch.rand(1, classes, size, size)
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
base = rss_mb()
t0 = time.time()
with torch.no_grad():
    emb = rw.embed(model, image)
    small = F.adaptive_avg_pool2d(scores, emb.shape[-2:])
    if {dense!r}:
        walked = rw.random_walk_dense(small, emb, 5, 8.0, 8)
    else:
        walked = rw.random_walk(small, rw.transition_band(emb, 5, 8.0), 256)
    out = F.interpolate(walked, size=(size, size), mode="bilinear", align_corners=False).argmax(1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"cells": emb.shape[-2] * emb.shape[-1], "baseline_mb": round(base, 1), "peak_mb": round(peak, 1),
                  "added_mb": round(peak - base, 1), "seconds": round(time.time() - t0, 2)}}))
'''


def run_case(size: int, dense: bool) -> dict:
    code = CASE.format(root=str(ROOT), size=size, dense=dense)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


CASES = [("walk_512", 512, False), ("dense_512", 512, True), ("walk_1024", 1024, False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="run each kind of walk once at 64x64; record nothing")
    if ap.parse_args().dry_run:
        for name, size, dense in CASES:
            print(f"{name}: {size}x{size}, {'dense' if dense else 'banded'}")
        for dense in (False, True):   # each kind of walk once, small
            print(f"{'dense' if dense else 'banded'} at 64x64:", run_case(64, dense), flush=True)
        return
    results = {"command": "python benchmarks/randomwalk_memory.py", "machine": f"{platform.machine()}, CPU, 1 thread",
               "date": time.strftime("%Y-%m-%d"), "cases": {}}
    for name, size, dense in CASES:
        results["cases"][name] = {"input": f"{size}x{size}", "method": "dense" if dense else "banded",
                                  **run_case(size, dense)}
        print(name, results["cases"][name], flush=True)
    sys.path.insert(0, str(ROOT))
    from aepsl.engine.artifacts import write_json

    write_json(ROOT / "benchmarks" / "randomwalk_memory.json", results)
    print("wrote benchmarks/randomwalk_memory.json")


if __name__ == "__main__":
    main()
