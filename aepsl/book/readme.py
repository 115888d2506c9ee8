"""The README's block of times, written from the records: `python -m aepsl.book.readme` rewrites
the lines between the README's ``<!-- times:begin -->`` and ``<!-- times:end -->`` markers from
benchmarks/book_time.json and benchmarks/test_time.json, so no time in the README is typed by hand."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.artifacts import REPO_DIR
from .notes import latest_book_time

BEGIN, END = "<!-- times:begin -->", "<!-- times:end -->"
BOOK_TIME = Path("benchmarks/book_time.json")
TEST_TIME = Path("benchmarks/test_time.json")


def _where(run: dict) -> str:
    """How a timed run names its machine and day: reference units (the run's wall time over the
    fixed reference workload of benchmarks/book_time.py), cores, CPU model, date."""
    refs = [r for r in (run.get("reference_s") or {}).values() if r]
    units = f"{run['wall_s'] / (sum(refs) / len(refs)):,.0f} reference units, " if refs else ""
    cpu = f", {run['cpu']}" if run.get("cpu") else ""
    return f"{units}{run.get('cores', '?')} cores{cpu}, {str(run.get('finished_at', ''))[:10]}"


def _run_line(what: str, run: dict | None, command: str) -> str:
    if run is None:
        return f"| {what} | no timed run recorded yet (`{command}`) |"
    return (f"| {what} | {round(run['wall_s']):,} s ({round(run.get('cpu_s', 0)):,} s CPU; "
            f"{_where(run)}) |")


def latest_test_time(path: str | Path) -> dict | None:
    """The last timed `make test` on a fresh clone in benchmarks/test_time.json, or None."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    runs = [r for r in json.loads(path.read_text()).get("runs", []) if r.get("command") == "make test"]
    return runs[-1] if runs else None


def _test_line(run: dict | None) -> str:
    what = "`make test` (fresh clone: set-up, then the suite)"
    if run is None:
        return f"| {what} | no timed run recorded yet (`python benchmarks/suite_time.py`) |"
    parts = [f"{round(run['wall_s']):,} s in all"]
    if run.get("setup_s") is not None:
        parts.append(f"set-up {round(run['setup_s']):,} s")
    if run.get("tests_s") is not None:
        parts.append(f"suite {round(run['tests_s']):,} s, {run.get('passed', 0)} passed")
    return f"| {what} | {', '.join(parts)} ({_where(run)}) |"


def times_block(root: str | Path = REPO_DIR) -> str:
    """The README's table of times, from ``<root>/benchmarks/book_time.json``: the last timed
    `make book` of the default and the extended profile, each from empty artifacts after the
    set-up, and the last timed `make test` on a fresh clone (``<root>/benchmarks/test_time.json``)."""
    path = Path(root) / BOOK_TIME
    lines = ["| command | last recorded time |", "|---|---|",
             _run_line("`make book` (from empty artifacts)", latest_book_time(path, "default"),
                       "make book-time"),
             _run_line("`make book PROFILE=extended`", latest_book_time(path, "extended"),
                       "make book-time PROFILE=extended"),
             _test_line(latest_test_time(Path(root) / TEST_TIME))]
    return "\n".join(lines)


def with_times(text: str, root: str | Path = REPO_DIR) -> str:
    """``text`` (a README) with its block between the markers replaced by :func:`times_block`."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{times_block(root)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(REPO_DIR / "README.md"), help="the README to rewrite in place")
    ap.add_argument("--check", action="store_true", help="only check that the block is current (exit 1 if not)")
    args = ap.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    new = with_times(text)
    if args.check:
        return 0 if new == text else 1
    if new != text:
        path.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
