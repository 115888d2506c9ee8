"""Run the notebooks of a profile, in order, through papermill.

    python -m aepsl --profile default --book        # the book's notebooks -> book/notebooks/
    python -m aepsl --profile quick                 # executed notebooks -> artifacts/quick/notebooks/
    python -m aepsl --profile default --only 01_cam --force

Each notebook is a jupytext py:percent file in ``notebooks/``.  The profile file
``notebooks/params/<profile>.yaml`` gives each run's parameters; they are checked against
the notebook's ``parameters`` cell (unknown names and wrong types are refused before
anything runs).  Stages skip their work when their artifacts exist for the same parameters,
so rerunning the pipeline only re-executes notebooks (cheap) unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

from .artifacts import REPO_DIR, ArtifactError, atomic_path, missing_ancestor, remove_stale_temps, write_json
from .config import ParameterError, check_declared, from_params, load_profile, notebook_runs, resolve

NOTEBOOK_DIR = REPO_DIR / "notebooks"
BOOK_NOTEBOOK_DIR = REPO_DIR / "book" / "notebooks"

# The parameter dataclass of each stage notebook: the pipeline checks every run's values with
# it (ranges, choices) before executing anything. Notebooks not listed are checked against
# their parameters cell only (names and types).
STAGE_CONFIGS = {
    "00_data": ("aepsl.data.stage", "DataConfig"),
    "01_cam": ("aepsl.cam", "CAMConfig"),
    "02_erasing": ("aepsl.erasing", "ErasingConfig"),
    "03_pseudo_masks": ("aepsl.erasing", "MergeConfig"),
    "04_psl": ("aepsl.psl", "PSLConfig"),
    "05_psl_plus_plus": ("aepsl.psl", "PSLConfig"),
    "06_affinity": ("aepsl.randomwalk", "AffinityConfig"),
    "07_hfpl": ("aepsl.hfpl", "HFPLCompareConfig"),
}


class NotebookError(RuntimeError):
    """A notebook raised an error while papermill executed it."""


def notebook_source(name: str) -> Path:
    path = NOTEBOOK_DIR / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"notebook source not found: {path}")
    return path


def parameters_cell(path: Path) -> dict:
    """The literal values assigned in the notebook's ``parameters`` cell."""
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged 'parameters' (found {len(cells)})")
    values = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}: the parameters cell may only hold 'name = literal' lines")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path}: parameter {node.targets[0].id} is not a literal") from None
    return values


def check_parameters(name: str, params: dict) -> None:
    """Refuse parameters the notebook does not declare, or of another type than its literal."""
    check_declared(f"notebook {name}", params, parameters_cell(notebook_source(name)))


def check_values(name: str, params: dict) -> None:
    """Check a run's values with the stage's parameter dataclass (e.g. ``round`` >= 1), so a bad
    value is refused before anything runs rather than by the notebook halfway through."""
    if name not in STAGE_CONFIGS:
        return
    module, cls = STAGE_CONFIGS[name]
    cls = getattr(importlib.import_module(module), cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        from_params(cls, {k: v for k, v in params.items() if k in fields}, f"notebook {name}")
    except ParameterError:
        raise
    except ValueError as exc:
        raise ParameterError(f"notebook {name}: {exc}") from None


def _literal(value) -> str:
    """Python source for a YAML value, with double-quoted strings."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def sync_parameters_cell(name: str, profile: str = "default") -> bool:
    """Rewrite notebook ``name``'s parameters cell with the first run of ``profile`` (so the
    notebook run by hand reproduces that profile). Returns True when the file changed."""
    path = notebook_source(name)
    params = {k: v for k, v in notebook_runs(profile, name)[0].items() if not k.startswith("_")}
    lines = [f"{key} = {_literal(value)}" for key, value in params.items()]
    text = path.read_text()
    start = text.index('# %% tags=["parameters"]\n') + len('# %% tags=["parameters"]\n')
    end = text.index("\n# %%", start)
    new = text[:start] + "\n".join(lines) + "\n" + text[end:]
    if new != text:
        path.write_text(new)
        return True
    return False


def run_name(name: str, run: dict, base: dict) -> str:
    """Output name of one run: ``_name`` if the run gives one, else the notebook name plus the
    parameters the run changes (e.g. '02_erasing_round2' for a run with round=2)."""
    if run.get("_name"):
        return str(run["_name"])
    changed = [k for k in run if not k.startswith("_") and (k not in base or base[k] != run[k]) and k != "force"]
    return name + "".join(f"_{k}{run[k]}" for k in changed)


def execute(name: str, params: dict, output: Path, log_output: bool = False) -> float:
    """Execute notebook ``name`` with ``params`` into ``output`` (atomically); returns seconds."""
    import jupytext
    import nbformat
    import papermill

    check_parameters(name, params)
    nb = jupytext.read(notebook_source(name))
    if output.parent.is_dir():
        remove_stale_temps(output.parent, output.name)   # left by a run killed while executing
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmpdir:
        src = Path(tmpdir) / f"{name}.ipynb"
        nbformat.write(nb, str(src))
        with atomic_path(output) as tmp:
            try:
                papermill.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                                           cwd=str(REPO_DIR), progress_bar=False, log_output=log_output,
                                           language="python")
            except papermill.PapermillExecutionError as exc:
                raise NotebookError(f"notebook {output.stem} failed: {exc.ename}: {exc.evalue}") from None
            check_executed(tmp, name)
    return time.time() - t0


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
                log_output: bool = False) -> dict:
    data = load_profile(profile)
    source = profile
    # a profile given as a YAML path is named by its common.profile (where its stages write)
    profile = str(data["common"].get("profile") or Path(profile).stem)
    out_dir = BOOK_NOTEBOOK_DIR if book else resolve(data["common"].get("artifacts_root", "artifacts")) / profile / "notebooks"
    names = list(data["notebooks"])
    if only:
        bad = [n for n in only if n not in names]
        if bad:
            raise ParameterError(f"--only {bad}: profile {profile!r} has notebooks {names}")
        names = [n for n in names if n in only]
    plan = []
    for name in names:  # check every run's parameters before executing anything
        base = {**data["common"], **{k: v for k, v in (data["notebooks"][name] or {}).items() if k != "runs"}}
        for params in notebook_runs(source, name):
            out_name = run_name(name, params, base)
            params = {k: v for k, v in params.items() if not k.startswith("_")}
            if force:
                params = {**params, "force": True}
            check_parameters(name, params)
            check_values(name, params)
            plan.append((name, out_name, params))
    timings = {}
    created = missing_ancestor(out_dir)
    try:
        for name, out_name, params in plan:
            print(f"[aepsl] {profile}: executing {out_name} ...", flush=True)
            seconds = execute(name, params, out_dir / f"{out_name}.ipynb", log_output=log_output)
            timings[out_name] = round(seconds, 1)
            print(f"[aepsl] {profile}: {out_name} done in {seconds:.1f} s", flush=True)
    except Exception:
        _remove_empty(out_dir, created)
        raise
    # merge with earlier runs, so a run of a few notebooks (--only) keeps the others' last times
    path = resolve(data["common"].get("artifacts_root", "artifacts")) / profile / "pipeline.json"
    earlier = json.loads(path.read_text()).get("notebooks", {}) if path.exists() else {}
    record = {"profile": profile, "notebooks": {**earlier, **timings}, "output_dir": str(out_dir)}
    write_json(path, record)
    return record


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default", help="profile name (notebooks/params/<name>.yaml) or a YAML path")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 01_cam)")
    ap.add_argument("--force", action="store_true", help="recompute stages even when their artifacts exist")
    ap.add_argument("--book", action="store_true", help="write executed notebooks where the book reads them")
    ap.add_argument("--log-output", action="store_true", help="stream notebook output to the terminal")
    ap.add_argument("--sync-params", action="store_true",
                    help="developers: rewrite every notebook's parameters cell from the profile, then exit")
    args = ap.parse_args(argv)
    if args.sync_params:
        for name in load_profile(args.profile)["notebooks"]:
            if sync_parameters_cell(name, args.profile):
                print(f"updated the parameters cell of notebooks/{name}.py")
        return 0
    try:
        run_profile(args.profile, args.only, args.force, args.book, args.log_output)
    except (ParameterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NotebookError, ArtifactError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
