"""Does the way host memory is managed speed up the book's work? Timed three ways, alternately.

glibc's malloc serves every large block with a fresh ``mmap`` and returns it to the system when
it is freed; a stage that computes keeps freed memory in the process instead
(:func:`aepsl.engine.device.keep_freed_memory`, off with ``AEPSL_MALLOC=system``). Debian's
``libtcmalloc-minimal4`` ships tcmalloc as a library that ``LD_PRELOAD`` puts in place of glibc's
malloc for one process. This script times, with glibc's malloc as it comes, with freed memory
kept and with tcmalloc, one after the other ``--repeats`` times: the fixed reference workload of
benchmarks/book_time.py (ten training steps of the book's classifier), and the CAM stage of the
default profile computed from empty on the default scenes (training, then CAM inference at three
scales with flips, scoring) in a temporary artifacts folder. It records the seconds of each run
(the stage's training and CAM inference apart), the ratios of the medians to glibc's and whether
the stage's numbers (its metrics.json ``metrics``) are the same every way, in
benchmarks/allocator.json with the CPU, the code revision and the date. Run nothing else
meanwhile.

    .venv/bin/python benchmarks/allocator.py                 # needs data/scenes-default (make book)
    .venv/bin/python benchmarks/allocator.py --repeats 3
    .venv/bin/python benchmarks/allocator.py --dry-run       # what it would run; runs nothing
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from aepsl.engine.artifacts import cpu_model, git_revision, read_json, write_json  # noqa: E402
from book_time import REFERENCE  # noqa: E402

OUT = ROOT / "benchmarks" / "allocator.json"
TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")
STAGE_PROFILE = {"extends": "default", "common": {}, "notebooks": {"00_data": {}, "01_cam": {"runs": [{}]}}}


def tcmalloc_path() -> str | None:
    return next((p for p in TCMALLOC if Path(p).is_file()), None)


# the ways timed: glibc's malloc as it comes, glibc keeping freed memory (what a stage does), tcmalloc
WAYS = ("glibc", "kept", "tcmalloc")
# the reference workload with freed memory kept as a stage keeps it
KEPT_PREFIX = "from aepsl.engine.device import keep_freed_memory\nassert keep_freed_memory()\n"


def env_for(way: str, preload: str | None) -> dict:
    """The environment of a run timed ``way``: LD_PRELOAD for tcmalloc, and AEPSL_MALLOC=system
    except where freed memory is to be kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "AEPSL_MALLOC")}
    if way == "tcmalloc":
        env["LD_PRELOAD"] = preload
    if way != "kept":
        env["AEPSL_MALLOC"] = "system"
    return env


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {res.returncode}): {res.stderr[-1500:]}")
    return time.perf_counter() - t0, res.stdout


def stage_run(env: dict, data_root: str) -> tuple[float, dict, dict]:
    """The default profile's CAM stage from empty in a temporary artifacts folder: (wall seconds of
    the stage as its record gives it, its timed parts, its metrics)."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="aepsl-allocator-") as tmp:
        profile = json.loads(json.dumps(STAGE_PROFILE))
        profile["common"] = {"profile": "allocator", "artifacts_root": str(Path(tmp) / "artifacts"),
                             "data_root": data_root, "device": "cpu"}
        path = Path(tmp) / "allocator.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        timed([sys.executable, "-m", "aepsl.stages", "--profile", str(path), "--only", "00_data", "01_cam",
               "--no-progress"], env)
        record = read_json(Path(tmp) / "artifacts" / "allocator" / "cam" / "metrics.json")
    return record["wall_time_s"], record.get("timings_s", {}), record["metrics"]


def _same(a: dict, b: dict) -> bool:
    """The learned numbers of two runs agree (the stage's timings aside)."""
    drop = ("history",)
    strip = lambda m: {k: v for k, v in m.items() if k not in drop}  # noqa: E731
    return json.dumps(strip(a), sort_keys=True, default=str) == json.dumps(strip(b), sort_keys=True, default=str)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each workload each way (default 2)")
    ap.add_argument("--data-root", default="data/scenes-default", help="the scenes the stage trains on")
    ap.add_argument("--dry-run", action="store_true", help="say what would run; run nothing")
    args = ap.parse_args(argv)
    lib = tcmalloc_path()
    if lib is None:
        print(f"no tcmalloc library ({' or '.join(TCMALLOC)}): install the Debian package libtcmalloc-minimal4",
              file=sys.stderr)
        if not args.dry_run:
            return 2
        lib = TCMALLOC[0]
    if not (ROOT / args.data_root / "dataset.json").is_file() and not args.dry_run:
        print(f"no scenes in {args.data_root}: run `make book` (or the data stage) first", file=sys.stderr)
        return 2
    plan = [(name, way) for _ in range(args.repeats) for name in ("reference", "cam stage") for way in WAYS]
    if args.dry_run:
        for name, way in plan:
            print(f"{name}, {way}")
        print(f"dry run: {len(plan)} runs, nothing run")
        return 0
    parts = ("cam stage", "training", "CAM inference")
    seconds: dict[str, dict[str, list[float]]] = {k: {w: [] for w in WAYS} for k in ("reference",) + parts}
    metrics: dict[str, dict] = {}
    for name, way in plan:
        env = env_for(way, lib)
        if name == "reference":
            _, out = timed([sys.executable, "-c", (KEPT_PREFIX if way == "kept" else "") + REFERENCE], env)
            seconds[name][way].append(round(float(out.strip().splitlines()[-1]), 3))
        else:
            wall, timings, metrics[way] = stage_run(env, args.data_root)
            for key, value in zip(parts, (wall, timings.get("train"), timings.get("cams"))):
                seconds[key][way].append(round(value, 3))
        print(f"{name} ({way}): {seconds[name][way][-1]:.2f} s", flush=True)
    ratios = {way: {name: round(statistics.median(v[way]) / statistics.median(v["glibc"]), 3)
                    for name, v in seconds.items()} for way in WAYS[1:]}
    record = read_json(OUT) if OUT.exists() else {"runs": []}
    record["runs"].append({"command": "python benchmarks/allocator.py --repeats " + str(args.repeats),
                           "library": Path(lib).name, "seconds": seconds, "over_glibc": ratios,
                           "same_numbers": all(_same(metrics["glibc"], metrics[w]) for w in WAYS[1:]),
                           "cpu": cpu_model(), "cores": os.cpu_count(), "git_revision": git_revision(),
                           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_json(OUT, record)
    print(f"median seconds over glibc's: {ratios}; same numbers: {record['runs'][-1]['same_numbers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
