"""Every benchmark and study script runs: ``--help`` for each ``benchmarks/*.py`` (a glob, so a new
or renamed script is covered), and ``--dry-run`` on the quick profile where the script has one
(it checks its inputs and prints its plan; it trains and records nothing). A function renamed
in the package then fails here, not in a reader's hands."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import runpy
import subprocess
import sys

import pytest

from aepsl.engine.artifacts import REPO_DIR

BENCHMARKS = REPO_DIR / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def _run(script, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_DIR)


def _help(script) -> tuple[int, str]:
    """``script --help`` run as ``__main__`` in this process (no second interpreter to start and
    no torch to import again): its exit status and what it printed."""
    out, argv, path = io.StringIO(), sys.argv, list(sys.path)
    sys.argv = [str(script), "--help"]
    sys.path.insert(0, str(script.parent))   # as `python script.py` puts it first
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = argv, path
    return code, out.getvalue()


def _records() -> dict:
    """The benchmark folder's files and their modification times (a dry run writes none)."""
    return {p.name: p.stat().st_mtime_ns for p in BENCHMARKS.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scripts_are_found():
    names = {p.name for p in SCRIPTS}
    assert {"segmenter_recipe.py", "calibrate.py", "gpu_step.py", "book_time.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_help_and_dry_run(script):
    code, helped = _help(script)
    assert code == 0, f"{script.name} --help exited with {code}:\n{helped[-3000:]}"
    assert helped.startswith("usage:"), helped[:500]
    if "--dry-run" not in helped:
        return
    args = ["--dry-run"] + (["--profile", "quick"] if "--profile" in helped else [])
    before = _records()
    dry = _run(script, *args)
    assert dry.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{dry.stdout[-2000:]}\n{dry.stderr[-3000:]}"
    assert dry.stdout.strip(), f"{script.name} --dry-run printed no plan"
    assert _records() == before, f"{script.name} --dry-run wrote to benchmarks/"


def test_every_script_that_trains_or_times_has_a_dry_run():
    no_dry_run = {"erasing_design.py", "record_results.py", "crf_label_guard.py",   # they only read saved records
                  "cam_variants_seeds.py"}
    for script in SCRIPTS:
        if script.name not in no_dry_run:
            assert "--dry-run" in script.read_text(), f"{script.name} has no --dry-run"


# where the project gives commands: each benchmark script it names exists and takes the options given
DOCUMENTS = ("README.md", "Makefile", "book/*.md", "notebooks/*.py", "aepsl/**/*.py", "benchmarks/*.py",
             "data/*.md", "docs/**/*.md")
COMMAND = re.compile(r"benchmarks/(\w+)\.py([^`\"'()\n]*)")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, options) for every ``benchmarks/<name>.py ...`` a document mentions."""
    found = []
    for pattern in DOCUMENTS:
        for path in sorted(REPO_DIR.glob(pattern)):
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
                for match in COMMAND.finditer(line):
                    options = re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(2))
                    found.append((f"{path.relative_to(REPO_DIR)}:{number}", match.group(1), options))
    return found


def test_every_documented_benchmark_command_names_a_script_and_its_options():
    commands = documented_commands()
    assert any(where.startswith("README.md") for where, _, _ in commands)
    problems = []
    for where, name, options in commands:
        script = BENCHMARKS / f"{name}.py"
        if not script.is_file():
            problems.append(f"{where}: benchmarks/{name}.py does not exist")
            continue
        source = script.read_text()
        problems += [f"{where}: benchmarks/{name}.py has no option {option}" for option in options
                     if option != "--help" and f'"{option}"' not in source]   # argparse adds --help
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- segmenter_recipe.py
def test_segmenter_recipe_plans_every_setting_on_the_book_oracle():
    recipe = _module("segmenter_recipe")
    book = recipe.book_oracle_params()
    assert book["stage"] == "oracle" and book["labels"] == "ground_truth"
    for name, overrides, _ in recipe.SETTINGS:
        params = recipe.setting_params(name, overrides)
        assert all(params[k] == v for k, v in overrides.items())
        if params["stage"] != "oracle":   # a setting apart from the book's: its own folder
            assert params["artifacts_root"] == "artifacts/segmenter-recipe" and params["stage"].startswith("oracle_")
    stages = [recipe.setting_params(n, o)["stage"] for n, o, _ in recipe.SETTINGS]
    assert len(set(stages)) == len(stages)


def test_segmenter_recipe_reads_the_drop_sweep_the_stage_saved():
    recipe = _module("segmenter_recipe")
    params = recipe.setting_params(*recipe.SETTINGS[0][:2])
    scores = {"fg_precision": 0.81234, "fg_recall": 0.79876, "iou": {"background": 0.91111, "bag": 0.52222}}
    rec = {"metrics": {"eval": {"miou": 0.61234, "crf_miou": 0.63456, "scores": scores},
                       "drop_sweep": {"miou": {"0.0": 0.60011, "0.1": 0.6, "0.5": 0.61234},
                                      "dropped_true": {"0.0": 0.0, "0.5": 0.03333}, "used": 0.5}},
           "timings_s": {"train": 12.5}, "code_hash": "c0de", "git_revision": "abc123"}
    row = recipe.result_row(3, params, rec, threads=2, train_miou=0.70004)
    assert row["val_miou"] == 0.6123 and row["val_miou_crf"] == 0.6346
    assert row["val_miou_drop05"] == 0.6123 and row["val_miou_nodrop"] == 0.6001
    assert row["true_classes_dropped_05"] == 0.0333 and row["train_miou_300"] == 0.7
    assert row["iou"] == {"background": 0.9111, "bag": 0.5222}
    assert row["order"] == 3 and row["threads"] == 2 and row["stage"] == params["stage"]
    del rec["metrics"]["drop_sweep"]
    with pytest.raises(KeyError, match="no drop_sweep"):
        recipe.result_row(3, params, rec, threads=2, train_miou=0.7)


@pytest.mark.slow
def test_segmenter_recipe_trains_and_records_one_setting_on_the_quick_scenes(tmp_path):
    """A real run of one setting, on the quick profile's scenes in a temporary folder."""
    import yaml

    from aepsl.data import stage as data_stage
    from aepsl.engine.config import PARAMS_DIR, stage_params

    profile = yaml.safe_load((PARAMS_DIR / "quick.yaml").read_text())
    profile["common"].update(artifacts_root=str(tmp_path / "artifacts"), data_root=str(tmp_path / "data"),
                             device="cpu")
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    data_stage.run(stage_params(str(path), "00_data"), progress=False)
    out = tmp_path / "recipe.json"
    run = _run(BENCHMARKS / "segmenter_recipe.py", "--profile", str(path), "--only", "stride4/e5", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(out.read_text())
    row = record["stride4/e5"]
    assert row["stage"] == "oracle_stride4_e5" and row["epochs"] == 5 and row["decoder"] == "stride4"
    folder = tmp_path / "artifacts" / "segmenter-recipe" / "quick" / "oracle_stride4_e5"
    sweep = json.loads((folder / "metrics.json").read_text())["metrics"]["drop_sweep"]
    assert row["val_miou_drop05"] == round(sweep["miou"]["0.5"], 4)
    assert row["val_miou_nodrop"] == round(sweep["miou"]["0.0"], 4)
    assert 0 <= row["train_miou_300"] <= 1 and set(record) == {"stride4/e5", "_machine"}


def test_suite_time_reads_pytests_closing_line():
    summary = _module("suite_time").pytest_summary
    out = "....\n=========== 398 passed, 1 skipped, 2 deselected in 361.20s (0:06:01) ===========\n"
    assert summary(out) == {"passed": 398, "skipped": 1, "deselected": 2, "seconds": 361.2}
    assert summary("3 failed, 5 passed in 2.50s\n")["failed"] == 3
    assert summary("no closing line") == {}
