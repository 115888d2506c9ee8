"""Time `make book` from empty artifacts, in one go, and append the figures to a record.

    .venv/bin/python benchmarks/book_time.py                   # default profile
    .venv/bin/python benchmarks/book_time.py --profile extended
    .venv/bin/python benchmarks/book_time.py --profile quick --dry-run   # the plan; moves and runs nothing

The profile's artifact folder (artifacts/<profile>) and its generated scenes (its data_root, when
the data stage generates them) are moved aside first (to `<folder>.before-book-time`, replacing an
older copy there), so the run computes every stage, generates the data and builds the HTML book
as a new reader's `make book` does after set-up. Recorded in benchmarks/book_time.json (newest
last): total wall and CPU seconds (this process's children: make, the pipeline, papermill
kernels, CRF workers), the peak resident memory of the largest process, the machine's cores,
the 1-minute load average before and after, and per stage the wall / CPU seconds and load its
metrics.json recorded. Run nothing else meanwhile: two jobs on two cores double both timings.

The same machine is not always equally fast (a virtual machine shares its host): between two
runs here the unchanged stages took 5-15 % more CPU time. So before and after the build a fixed
workload is timed in a fresh process (:data:`REFERENCE`: ten training steps of the book's
classifier on one random batch), and its seconds are recorded beside the run's: two runs compare
fairly only at similar reference times.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.engine.artifacts import cpu_model, current_metrics_files, git_revision, write_json  # noqa: E402
from aepsl.engine.config import load_profile, resolve  # noqa: E402


REFERENCE = r"""
import time, torch
import torch.nn.functional as F
from aepsl.models import backbones
# the network as first timed here (PyTorch's own depthwise backward): the reference measures the
# machine, so a later speed-up of our code must not move it
backbones.fast_depthwise_backward = lambda module: 0
from aepsl.methods.cam import CAMConfig, build_model
torch.manual_seed(0)
model = build_model(CAMConfig(backbone_weights=""), 6).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(32, 3, 96, 96).contiguous(memory_format=torch.channels_last)
y = (torch.rand(32, 6) > 0.5).float()
for step in range(12):
    if step == 2:
        t0 = time.perf_counter()
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(time.perf_counter() - t0)
"""


def reference_seconds(repeats: int = 3) -> float | None:
    """The fastest of ``repeats`` runs of :data:`REFERENCE`, each in a fresh process (None if it
    fails): back to back, single runs differed by up to a fifth here."""
    times = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", REFERENCE], cwd=ROOT, capture_output=True, text=True)
        try:
            times.append(float(res.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            print(f"[book_time] the reference workload failed: {res.stderr[-500:]}", file=sys.stderr)
            return None
    return round(min(times), 2)


def reference_units(wall: float, before: float | None, after: float | None) -> float | None:
    """The build's wall time in units of the reference workload (its mean before and after): a
    number that compares builds across hosts of different speed; None without a reference."""
    refs = [r for r in (before, after) if r]
    return round(wall / (sum(refs) / len(refs)), 1) if refs else None


def _aside(path: Path) -> None:
    if path.exists():
        target = path.with_name(path.name + ".before-book-time")
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
        print(f"[book_time] moved {path} aside to {target}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--record", default=str(ROOT / "benchmarks" / "book_time.json"))
    ap.add_argument("--dry-run", action="store_true", help="print what would be moved aside and run; do nothing")
    args = ap.parse_args()
    data = load_profile(args.profile)
    common = data["common"]
    art = resolve(common.get("artifacts_root", "artifacts")) / common["profile"]
    source = ((data["notebooks"].get("00_data") or {}).get("source") or "fashion")
    # generated scenes: generating them is part of the book's work
    aside = [art] + ([resolve(common.get("data_root", "data/scenes-default"))] if source != "voc" else [])
    command = f"make book PROFILE={args.profile}"
    if args.dry_run:
        for path in aside:
            print(f"move aside: {path}" + ("" if path.exists() else " (not there)"))
        print(f"time: {command}, then the reference workload; record in {args.record}")
        return 0
    for path in aside:
        _aside(path)
    reference_before = reference_seconds()
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.time()
    proc = subprocess.run(command.split(), cwd=ROOT)
    wall = time.time() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)   # before the reference run: the book's alone
    reference_after = reference_seconds()
    if proc.returncode != 0:
        print(f"[book_time] {command} failed (exit {proc.returncode}) after {wall:.0f} s; nothing recorded",
              file=sys.stderr)
        return proc.returncode
    stages = {}
    for path in current_metrics_files(art):
        rec = json.loads(path.read_text())
        load = rec.get("load_average") or {}
        stages[str(path.parent.relative_to(art))] = {
            "wall_s": rec.get("wall_time_s"), "cpu_s": rec.get("cpu_time_s"),
            "load": f"{load.get('start')} / {load.get('end')}"}
    run = {"profile": args.profile, "command": command, "git_revision": git_revision(),
           "wall_s": round(wall, 1), "cpu_s": round(kids.ru_utime + kids.ru_stime, 1),
           "peak_rss_mib": round(kids.ru_maxrss / 1024, 1), "cores": os.cpu_count(), "cpu": cpu_model(),
           "reference_units": reference_units(wall, reference_before, reference_after),
           "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
           "reference_s": {"before": reference_before, "after": reference_after},
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": stages}
    path = Path(args.record)
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    record["runs"].append(run)
    write_json(path, record)
    print(f"[book_time] {command}: {wall:.0f} s wall, {run['cpu_s']} s CPU, peak {run['peak_rss_mib']} MiB, "
          f"reference workload {reference_before} / {reference_after} s -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
