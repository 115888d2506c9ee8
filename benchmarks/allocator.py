"""Does a faster memory allocator (tcmalloc) speed up the book's work? Timed both ways, alternately.

Debian's ``libtcmalloc-minimal4`` ships tcmalloc as a library that ``LD_PRELOAD`` puts in place of
glibc's malloc for one process. This script times, with glibc's allocator and with tcmalloc, one
after the other ``--repeats`` times: the fixed reference workload of benchmarks/book_time.py (ten
training steps of the book's classifier), and the CAM stage of the default profile computed from
empty on the default scenes (training, CAM inference, scoring) in a temporary artifacts folder. It
records the seconds of each run, the ratio of the medians and whether the stage's numbers (its
metrics.json ``metrics``) are the same both ways, in benchmarks/allocator.json with the CPU, the
code revision and the date. Run nothing else meanwhile.

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


def env_for(preload: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {res.returncode}): {res.stderr[-1500:]}")
    return time.perf_counter() - t0, res.stdout


def stage_run(env: dict, data_root: str) -> tuple[float, dict]:
    """The default profile's CAM stage from empty in a temporary artifacts folder: (wall seconds of
    the stage as its record gives it, its metrics)."""
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
    return record["wall_time_s"], record["metrics"]


def _same(a: dict, b: dict) -> bool:
    """The learned numbers of two runs agree (the stage's timings aside)."""
    drop = ("history",)
    strip = lambda m: {k: v for k, v in m.items() if k not in drop}  # noqa: E731
    return json.dumps(strip(a), sort_keys=True, default=str) == json.dumps(strip(b), sort_keys=True, default=str)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each workload with each allocator (default 2)")
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
    plan = [(name, preload) for _ in range(args.repeats) for name in ("reference", "cam stage")
            for preload in (None, lib)]
    if args.dry_run:
        for name, preload in plan:
            print(f"{name} with {'tcmalloc' if preload else 'glibc malloc'}")
        print(f"dry run: {len(plan)} runs, nothing run")
        return 0
    seconds: dict[str, dict[str, list[float]]] = {"reference": {"glibc": [], "tcmalloc": []},
                                                  "cam stage": {"glibc": [], "tcmalloc": []}}
    metrics: dict[str, dict] = {}
    for name, preload in plan:
        which = "tcmalloc" if preload else "glibc"
        if name == "reference":
            _, out = timed([sys.executable, "-c", REFERENCE], env_for(preload))
            value = float(out.strip().splitlines()[-1])
        else:
            value, metrics[which] = stage_run(env_for(preload), args.data_root)
        seconds[name][which].append(round(value, 3))
        print(f"{name} ({which}): {value:.2f} s", flush=True)
    ratios = {name: round(statistics.median(v["tcmalloc"]) / statistics.median(v["glibc"]), 3)
              for name, v in seconds.items()}
    record = read_json(OUT) if OUT.exists() else {"runs": []}
    record["runs"].append({"command": "python benchmarks/allocator.py --repeats " + str(args.repeats),
                           "library": Path(lib).name, "seconds": seconds, "tcmalloc_over_glibc": ratios,
                           "same_numbers": _same(metrics["glibc"], metrics["tcmalloc"]),
                           "cpu": cpu_model(), "cores": os.cpu_count(), "git_revision": git_revision(),
                           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_json(OUT, record)
    print(f"tcmalloc / glibc (median seconds): {ratios}; same numbers: {record['runs'][-1]['same_numbers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
