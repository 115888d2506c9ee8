"""Time `make test` on a fresh clone, as CI runs it, and append the figures to a record.

    .venv/bin/python benchmarks/suite_time.py             # clone HEAD, make test there, record
    .venv/bin/python benchmarks/suite_time.py --dry-run   # the plan; clones and runs nothing

The clone is made from the committed HEAD into a temporary folder, so the run sets up its own
venv (pip's cache may be warm) and runs the whole suite, as a new user's `make test` does.
Recorded in benchmarks/test_time.json (newest last): the git revision, CPU model, cores, date,
the wall and CPU seconds of the whole command, the set-up's seconds (the Makefile writes them
to .venv/.aepsl-setup-seconds), the suite's own seconds and counts from pytest's closing line,
the 1-minute load before and after, and the reference workload of benchmarks/book_time.py
before and after, so runs on hosts of different speed compare. Run nothing else meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.engine.artifacts import cpu_model, git_revision, write_json  # noqa: E402

SUMMARY = re.compile(r"^=*\s*(?P<body>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s")


def pytest_summary(output: str) -> dict:
    """Counts and seconds from pytest's closing line ('398 passed, 1 skipped in 361.20s (0:06:01)'),
    the last one in ``output``; {} where there is none."""
    found = {}
    for line in output.splitlines():
        m = SUMMARY.match(line.strip())
        if m:
            found = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", m.group("body"))}
            found["seconds"] = float(m.group("seconds"))
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", default=str(ROOT / "benchmarks" / "test_time.json"))
    ap.add_argument("--target", default="test", help="the make target to time (test or test-fast)")
    ap.add_argument("--dry-run", action="store_true", help="print what would be cloned and run; do nothing")
    args = ap.parse_args(argv)
    revision = git_revision()
    command = f"make {args.target}"
    if args.dry_run:
        print(f"clone {ROOT} at {revision} into a temporary folder, run `{command}` there, "
              f"then the reference workload; record in {args.record}")
        return 0
    from book_time import reference_seconds   # benchmarks/ is this script's folder

    workdir = Path(tempfile.mkdtemp(prefix="aepsl-suite-time-"))
    clone = workdir / "aepsl"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        reference_before = reference_seconds()
        load_before = round(os.getloadavg()[0], 2)
        t0 = time.time()
        proc = subprocess.run(command.split(), cwd=clone, capture_output=True, text=True)
        wall = time.time() - t0
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = round(os.getloadavg()[0], 2)
        reference_after = reference_seconds()
        summary = pytest_summary(proc.stdout)
        setup_file = clone / ".venv" / ".aepsl-setup-seconds"
        setup_s = float(setup_file.read_text()) if setup_file.is_file() else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        print(f"[suite_time] {command} failed (exit {proc.returncode}) after {wall:.0f} s; nothing recorded",
              file=sys.stderr)
        return proc.returncode
    run = {"command": command, "git_revision": revision, "cpu": cpu_model(), "cores": os.cpu_count(),
           "wall_s": round(wall, 1), "cpu_s": round(kids.ru_utime + kids.ru_stime, 1), "setup_s": setup_s,
           "tests_s": summary.get("seconds"), "passed": summary.get("passed", 0),
           "failed": summary.get("failed", 0), "skipped": summary.get("skipped", 0),
           "load_before": load_before, "load_after": load_after,
           "reference_s": {"before": reference_before, "after": reference_after},
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = Path(args.record)
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    record["runs"].append(run)
    write_json(path, record)
    print(f"[suite_time] {command}: {wall:.0f} s in all, suite {run['tests_s']} s, "
          f"{run['passed']} passed; recorded in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
