"""Run a profile: its stages in order, then its notebooks through papermill.

    python -m aepsl --profile default --book        # the book's notebooks -> book/notebooks/
    python -m aepsl --profile quick                 # executed notebooks -> artifacts/quick/notebooks/
    python -m aepsl --profile default --only 01_cam --force
    python -m aepsl --profile voc --check           # print the plan, touch nothing
    python -m aepsl --profile default --seed 1      # the book's chain, training seed 1 -> artifacts/default_seed1/

Each notebook is a jupytext py:percent file in ``notebooks/``; :mod:`aepsl.engine.registry` says
which package function computes its stage, with which parameter dataclass. The profile file
``notebooks/params/<profile>.yaml`` gives each run's parameters where they differ from the
notebook's defaults; every run's config is built and checked (unknown names, wrong types, bad
values, a stage read before any run writes it) before anything runs. Stages skip their work
when their artifacts exist for the same parameters, so rerunning the pipeline only
re-executes notebooks (cheap) unless ``--force`` is given. A run marked ``_page: false`` in
the profile has no page: its stage function runs without the notebook.

``--seed K`` runs the same profile with training seed K (every run's ``seed`` but the data's,
so the scenes stay the same) under the profile name ``<profile>_seed<K>``: its stages and pages
go to ``artifacts/<profile>_seed<K>/``, never over the profile's own; the folder's
``profile.json`` says the seed and the profile it is a seed of (:func:`aepsl.engine.config.with_seed`).

A second run on the same artifacts (another terminal, a notebook run by hand) waits for a stage or
page another process is writing and then reuses it; ``--no-wait`` stops it at once with one line
(:mod:`aepsl.engine.locks`). Ctrl-C ends a run with one line naming the stage or page and exit
status 130; the same command resumes.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .artifacts import (REPO_DIR, ArtifactError, atomic_path, missing_ancestor, pin_code, remove_stale_temps, unpin_code,
                        write_json)
from .config import PROFILE_RECORD, ParameterError, check_declared, load_profile, profile_record, resolve
from .locks import WAIT_ENV, locked
from .registry import REGISTRY, describe, entry, plan, run_name, stage_modules  # noqa: F401  (run_name: API)

NOTEBOOK_DIR = REPO_DIR / "notebooks"
BOOK_NOTEBOOK_DIR = REPO_DIR / "book" / "notebooks"
FAILED_SUFFIX = ".failed.ipynb"
# the kernel's own log stays off the terminal; errors in cells still reach the user through papermill
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]
# pages executed at once after the stages (each a kernel of its own; 2: the cores of the laptop
# the embedded default is sized for)
PAGE_WORKERS = 2


class NotebookError(RuntimeError):
    """A notebook raised an error while papermill executed it, or its stage failed before it."""


def notebook_source(name: str) -> Path:
    path = NOTEBOOK_DIR / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"notebook source not found: {path}")
    return path


def _parameters_source(path: Path) -> str:
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged 'parameters' (found {len(cells)})")
    return cells[0].source


def parameters_cell(path: Path) -> dict:
    """The literal values assigned in the notebook's ``parameters`` cell
    (``name: type = literal  # help`` or ``name = literal`` lines)."""
    values = {}
    for node in ast.parse(_parameters_source(path)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            raise ValueError(f"{path}: the parameters cell may only hold 'name: type = literal' lines")
        try:
            values[name] = ast.literal_eval(value)
        except ValueError:
            raise ValueError(f"{path}: parameter {name} is not a literal") from None
    return values


def check_parameters(name: str, params: dict) -> None:
    """Refuse parameters the notebook does not declare, or of another type than its literal."""
    check_declared(f"notebook {name}", params, parameters_cell(notebook_source(name)))


def check_values(name: str, params: dict) -> None:
    """Build the run's config with the stage's parameter dataclass (e.g. ``round`` >= 1), so a
    bad value is refused before anything runs rather than by the notebook halfway through."""
    entry(name).build(params)


# --------------------------------------------------------------------------- parameters cells
def _literal(value) -> str:
    """Python source for a parameter value, with double-quoted strings."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell_source(name: str) -> str:
    """The parameters cell of notebook ``name`` as the registry defines it: every parameter of
    its dataclass with a type annotation, the notebook's default and a one-line help comment
    (the dataclass field's comment), which ``papermill --help-notebook`` shows."""
    import dataclasses
    import typing

    from .config import field_docs

    e = entry(name)
    cls = e.config_class()
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        value = e.parameter_defaults()[f.name]
        typ = hints[f.name]
        typ = "list" if typing.get_origin(typ) is list else getattr(typ, "__name__", str(typ))
        doc = docs.get(f.name)
        if not doc or "=" in doc:   # papermill's inspector gives up on a line with a second '='
            raise ValueError(f"{cls.__name__}.{f.name} needs a help comment without '=' (a '# ...' on its line)")
        lines.append(f"{f.name}: {typ} = {_literal(value)}  # {doc}")
    return "\n".join(lines) + "\n"


def sync_parameters_cell(name: str) -> bool:
    """Rewrite notebook ``name``'s parameters cell from the registry (dataclass defaults and
    help comments). Returns True when the file changed."""
    path = notebook_source(name)
    text = path.read_text()
    head = '# %% tags=["parameters"]\n'
    start = text.index(head) + len(head)
    end = text.index("\n# %%", start)
    new = text[:start] + parameters_cell_source(name) + text[end:]
    if new != text:
        path.write_text(new)
        return True
    return False


# --------------------------------------------------------------------------- executing
def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def execute(name: str, params: dict, output: Path, log_output: bool = False) -> float:
    """Execute notebook ``name`` with ``params`` into ``output`` (atomically); returns seconds.

    When a cell raises, the executed copy (with the traceback in its outputs) is kept as
    ``<output stem>.failed.ipynb`` beside it and :class:`NotebookError` names the notebook,
    the cell and the exception."""
    check_parameters(name, params)
    with locked(output, f"page {output.stem!r}", "executing"):   # one process writes a page (and clears its temp files)
        return _execute(name, params, output, log_output)


def _execute(name: str, params: dict, output: Path, log_output: bool) -> float:
    import jupytext
    import nbformat
    import papermill

    nb = jupytext.read(notebook_source(name))
    if output.parent.is_dir():
        remove_stale_temps(output.parent, output.name)   # left by a run killed while executing
    failed = output.with_name(output.stem + FAILED_SUFFIX)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmpdir:
        src = Path(tmpdir) / f"{name}.ipynb"
        nbformat.write(nb, str(src))
        with atomic_path(output) as tmp:
            try:
                _run_papermill(src, tmp, params, log_output, Path(tmpdir) / "kernel")
            except papermill.PapermillExecutionError as exc:
                shutil.copyfile(tmp, failed)
                code_cell = _code_cell_number(tmp, exc.cell_index)
                raise NotebookError(
                    f"notebook {output.stem} (notebooks/{name}.py) failed in code cell {code_cell} "
                    f"(execution count {exc.exec_count}): {exc.ename}: {exc.evalue}\n"
                    f"  the executed copy, traceback included: {_relative(failed)}") from None
            check_executed(tmp, name)
            hide_parameter_cells(tmp)
    failed.unlink(missing_ok=True)
    return time.time() - t0


def _run_papermill(src: Path, out: Path, params: dict, log_output: bool, sockets: Path) -> None:
    """papermill on a kernel of its own. The kernel talks over Unix sockets named after
    ``sockets`` (a fresh temporary folder's), not over TCP ports: a port the client picks is free
    when picked but may be taken by another process's kernel before its own kernel binds it, and
    then the kernel dies on start (pages run two at a time, test processes beside them). A kernel
    that still dies before it answers (nothing executed yet) is started once more."""
    import papermill

    kwargs = dict(parameters=params, kernel_name="python3", cwd=str(REPO_DIR), progress_bar=False,
                  log_output=log_output, language="python", extra_arguments=KERNEL_QUIET)
    if os.name == "posix" and len(str(sockets)) < UNIX_PATH_MAX - 8:
        kwargs["kernel_manager_class"] = _socket_kernel_manager(str(sockets))
    for attempt in (1, 2):
        try:
            papermill.execute_notebook(str(src), str(out), **kwargs)
            return
        except RuntimeError as exc:
            if attempt == 2 or KERNEL_DIED not in str(exc):
                raise
            print(f"warning: the kernel for {src.stem} died on start ({exc}); starting it once more",
                  file=sys.stderr, flush=True)


# what jupyter_client raises when the kernel process ends before it answers its first request
KERNEL_DIED = "Kernel died before replying to kernel_info"
UNIX_PATH_MAX = 107   # the longest Unix socket path Linux accepts (sun_path, less its final NUL)


def _socket_kernel_manager(prefix: str) -> type:
    """A kernel manager class whose kernels use Unix sockets ``<prefix>-<n>``."""
    from jupyter_client.manager import AsyncKernelManager

    class SocketKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", prefix)
            super().__init__(**kwargs)

    return SocketKernelManager


def _code_cell_number(path: Path, cell_index: int) -> int:
    """1-based number of the code cell at ``cell_index`` among the notebook's code cells, as a
    reader counts them in the source (papermill's injected-parameters cell not counted)."""
    try:
        cells = json.loads(Path(path).read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return cell_index + 1
    # papermill puts a markdown cell announcing the error on top of the saved copy: not counted
    cells = [c for c in cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    number = 0
    for cell in cells[:cell_index + 1]:
        if cell["cell_type"] == "code" and "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            number += 1
    return number


def hide_parameter_cells(path: Path) -> None:
    """Tag the notebook's parameters cell and papermill's injected one ``remove-cell``: the book
    shows no parameter assignments (a page shows its run's parameters once, as a table)."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            cell.setdefault("metadata", {})["tags"] = tags + ["remove-cell"]
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def check_executed(path: Path, name: str) -> None:
    """Every code cell ran (has an execution count) and papermill recorded a duration."""
    nb = json.loads(Path(path).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"]]
    missing = [i for i, c in enumerate(code) if not c.get("execution_count")]
    if missing:
        raise RuntimeError(f"notebook {name}: code cells {missing} did not execute")
    duration = nb.get("metadata", {}).get("papermill", {}).get("duration") or 0
    if not code or duration <= 0:
        raise RuntimeError(f"notebook {name}: no recorded execution (0-second run)")


def run_profile(profile: str, only: list[str] | None = None, force: bool = False, book: bool = False,
                log_output: bool = False, page_workers: int = PAGE_WORKERS, seed: int | None = None) -> dict:
    """Every run of ``profile`` (with training seed ``seed``, when given): first each run's stage,
    in order, computed by its stage function in this process (progress bars on the terminal, none
    in the pages), then the pages, executed by papermill (each notebook finds its stage done and
    only draws), ``page_workers`` at a time. One line per stage and per page on stdout."""
    data = load_profile(profile, seed)
    # a profile given as a YAML path is named by its common.profile (where its stages write)
    name = str(data["common"].get("profile") or Path(profile).stem)
    if book and data.get("seed_of"):
        raise ParameterError(f"--book writes the book's pages, which are the profile's own seed's; the pages of "
                             f"--seed {seed} go to artifacts/{name}/notebooks (run without --book)")
    root = resolve(data["common"].get("artifacts_root", "artifacts"))
    out_dir = BOOK_NOTEBOOK_DIR if book else root / name / "notebooks"
    runs = plan(profile, only, force, seed)   # every run checked before anything executes
    for run in runs:
        if run.page:
            check_parameters(run.notebook, run.params)
    timings = {}
    created = missing_ancestor(out_dir)
    try:
        pin_code(stage_modules(runs))   # the code the stages run is the code their records name
        for i, run in enumerate(runs, start=1):
            t0 = time.time()
            fn = run.entry.stage_function()
            if fn is not None:
                try:
                    fn(run.stage_params, progress=True)
                except KeyboardInterrupt as exc:
                    exc.stage = getattr(exc, "stage", None) or run.name
                    raise
                except (ParameterError, ArtifactError):
                    raise
                except Exception as exc:   # one line naming the run and the error, as a failed cell does
                    raise NotebookError(f"run {run.name} (notebooks/{run.notebook}.py) failed computing its stage "
                                        f"({run.entry.function}): {type(exc).__name__}: {exc}") from None
            timings[run.name] = round(time.time() - t0, 1)
            print(f"[aepsl] {name} {i}/{len(runs)} {run.name}: stage done in {timings[run.name]:.1f} s"
                  + ("" if run.page else " (no page)"), flush=True)
        pages = [(run.name, run.notebook, {k: v for k, v in run.params.items() if k != "force"})
                 for run in runs if run.page]   # force: the stage was computed just now
        for page, seconds in execute_pages(pages, out_dir, log_output, 1 if log_output else page_workers, name):
            timings[page] = round(timings[page] + seconds, 1)
    except Exception:
        _remove_empty(out_dir, created)
        raise
    finally:
        unpin_code()
    # merge with earlier runs, so a run of a few notebooks (--only) keeps the others' last times
    path = root / name / "pipeline.json"
    earlier = json.loads(path.read_text()).get("notebooks", {}) if path.exists() else {}
    record = {"profile": name, "notebooks": {**earlier, **timings}, "output_dir": str(out_dir)}
    write_json(path, record)
    write_json(root / name / PROFILE_RECORD, profile_record(data))   # its seed, and whose seed run it is
    return record


def _execute_page(page: tuple, out_dir: Path, log_output: bool) -> float:
    run_name_, notebook, params = page
    return execute(notebook, params, out_dir / f"{run_name_}.ipynb", log_output=log_output)


def execute_pages(pages: list[tuple], out_dir: Path, log_output: bool = False, workers: int = PAGE_WORKERS,
                  profile: str = ""):
    """Execute ``pages`` ((run name, notebook, parameters) each) into ``out_dir``, ``workers`` at a
    time in forked processes (each page's kernel is its own process anyway: two pages keep two
    cores busy where one page's imports and drawing keep one). Yields (run name, seconds) in page
    order as the pages finish. After a failure no further page starts; the pages already running
    end, those before the failed one are yielded, and its error is raised."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    total = len(pages)
    if workers <= 1 or total <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for i, page in enumerate(pages, start=1):
            try:
                seconds = _execute_page(page, out_dir, log_output)
            except KeyboardInterrupt as exc:
                exc.stage = f"page {page[0]}"
                raise
            print(f"[aepsl] {profile} page {i}/{total} {page[0]}: done in {seconds:.1f} s", flush=True)
            yield page[0], seconds
        return
    # fork: the workers start before any kernel or zmq context exists in this process
    with ProcessPoolExecutor(min(workers, total), mp_context=multiprocessing.get_context("fork")) as pool:
        todo = iter(range(total))
        running: dict = {}

        def start_next() -> None:   # one page at a time per free worker: nothing queued ahead
            i = next(todo, None)
            if i is not None:
                running[pool.submit(_execute_page, pages[i], out_dir, log_output)] = i

        for _ in range(min(workers, total)):
            start_next()
        try:
            yield from _collect(pages, running, start_next, profile)
        except KeyboardInterrupt as exc:   # Ctrl-C: stop the pages now (a page is written whole or not at all)
            exc.stage = "page " + ", ".join(pages[i][0] for i in sorted(running.values()))
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _collect(pages: list[tuple], running: dict, start_next, profile: str):
    """The pages of :func:`execute_pages` as they finish, in page order."""
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, wait

    total = len(pages)
    seconds: dict[int, float] = {}
    failed: dict[int, BaseException] = {}
    shown = 0
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:   # every outcome of this batch first: a failure in it stops new starts
            i = running.pop(future)
            try:
                seconds[i] = future.result()
            except BrokenExecutor as exc:   # its worker was killed (out of memory, a signal)
                failed[i] = NotebookError(
                    f"page {pages[i][0]} (notebooks/{pages[i][1]}.py): its worker process died before the "
                    f"page ended ({type(exc).__name__}: {exc}); run again, or with --page-workers 1")
            except BaseException as exc:   # noqa: BLE001 (re-raised below, after the running pages)
                failed[i] = exc
        if not failed:
            for _ in done:
                start_next()
        while shown in seconds:   # in page order: never past a failed page
            print(f"[aepsl] {profile} page {shown + 1}/{total} {pages[shown][0]}: done in {seconds[shown]:.1f} s",
                  flush=True)
            yield pages[shown][0], seconds[shown]
            shown += 1
    if failed:
        raise failed[min(failed)]


def _remove_empty(folder: Path, top: Path | None) -> None:
    """After a failure: remove ``folder`` and its parents up to ``top`` (the first folder this
    run created) where they are empty, so a failed first run leaves no empty artifact folders."""
    if top is None:
        return
    folder = folder.absolute()
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


def print_plan(profile: str, only: list[str] | None = None, seed: int | None = None) -> None:
    """The dry run: every run's config built and checked, the plan printed, nothing touched."""
    runs = plan(profile, only, seed=seed)
    data = load_profile(profile, seed)
    common = data["common"]
    derived = f"; training seed {common.get('seed')} of profile {data['seed_of']!r}" if data.get("seed_of") else ""
    print(f"profile {common.get('profile')!r} ({len(runs)} runs; stage folders under "
          f"{common.get('artifacts_root', 'artifacts')}/{common.get('profile')}/{derived}):")
    for line in describe(runs):
        print("  " + line)


def add_profile_options(ap, default: str) -> None:
    """The options both runners take to name what they run: ``--profile`` and ``--seed``."""
    ap.add_argument("--profile", default=default,
                    help="profile name (notebooks/params/<name>.yaml), a YAML path or FILE.yaml#DESIGN")
    ap.add_argument("--seed", type=int, help="training seed of every run (the data's excepted); writes to "
                    "artifacts/<profile>_seed<K>/ (the profile's own seed: the profile itself)")


def add_wait_option(ap) -> None:
    """``--no-wait``, taken by both runners: what a run does when another process is computing a
    stage (or executing a page) it needs (see :mod:`aepsl.engine.locks`)."""
    ap.add_argument("--no-wait", action="store_true",
                    help="when another process is computing a stage this run needs, stop at once "
                         "instead of waiting for it and reusing its result")


def apply_wait_option(args) -> None:
    if args.no_wait:   # in the environment, so that the pages' kernels see it too
        import os

        os.environ[WAIT_ENV] = "0"


def interrupted(exc: KeyboardInterrupt) -> int:
    """Ctrl-C: one line naming what was running (the stage keeps what it had finished: its
    checkpoint and atomically written files; no metrics.json), exit status 130."""
    what = getattr(exc, "stage", None)
    print(f"interrupted{': ' + what if what else ''}; rerun the same command to resume", file=sys.stderr, flush=True)
    return 130


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl", description=__doc__.split("\n\n")[0])
    add_profile_options(ap, default="default")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 01_cam)")
    ap.add_argument("--force", action="store_true", help="recompute stages even when their artifacts exist")
    ap.add_argument("--book", action="store_true", help="write executed notebooks where the book reads them")
    ap.add_argument("--log-output", action="store_true", help="stream notebook output to the terminal (pages one at a time)")
    ap.add_argument("--page-workers", type=int, default=PAGE_WORKERS, help=f"pages executed at once (default {PAGE_WORKERS})")
    ap.add_argument("--check", action="store_true", help="dry run: check every run's parameters, print the plan, exit")
    add_wait_option(ap)
    ap.add_argument("--sync-params", action="store_true",
                    help="developers: rewrite every notebook's parameters cell from the registry, then exit")
    args = ap.parse_args(argv)
    try:
        if args.sync_params:
            for e in REGISTRY:
                if sync_parameters_cell(e.notebook):
                    print(f"updated the parameters cell of notebooks/{e.notebook}.py")
            return 0
        if args.check:
            print_plan(args.profile, args.only, args.seed)
            return 0
        apply_wait_option(args)
        run_profile(args.profile, args.only, args.force, args.book, args.log_output, args.page_workers, args.seed)
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    except (ParameterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NotebookError, ArtifactError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
