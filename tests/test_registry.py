"""The stage registry: one list of notebooks for both runners, the book's table of contents and the
parameters cells; the dry run; what a failed notebook leaves; which code a stage's hash covers."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aepsl.engine.artifacts import REPO_DIR, code_hash
from aepsl.engine.config import PARAMS_DIR, ParameterError, load_profile
from aepsl.engine.run_notebooks import NotebookError, execute, parameters_cell, parameters_cell_source, notebook_source
from aepsl.engine.registry import REGISTRY, describe, entry, plan

SHIPPED = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
NOTEBOOKS = [e.notebook for e in REGISTRY]


def test_registry_lists_every_notebook_in_reading_order():
    on_disk = sorted(p.stem for p in (REPO_DIR / "notebooks").glob("[0-9][0-9]_*.py"))
    assert NOTEBOOKS == on_disk
    for e in REGISTRY:
        cls = e.config_class()
        fn = e.stage_function()
        assert fn is None or fn.config is cls, f"{e.notebook}: the stage function takes another config"
        assert not e.trains or fn is not None


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_is_generated_from_the_registry(name):
    """One home per default: the dataclass (and the registry's few per-notebook defaults); the
    cell repeats them with types and help (rewrite with `python -m aepsl --sync-params`)."""
    import jupytext

    nb = jupytext.read(notebook_source(name))
    cell = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0]
    assert cell.source.strip() == parameters_cell_source(name).strip(), \
        f"notebooks/{name}.py: run `python -m aepsl --sync-params`"
    assert parameters_cell(notebook_source(name)) == entry(name).parameter_defaults()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_documents_every_parameter(name, tmp_path):
    """`papermill --help-notebook` shows a type and a one-line help for every parameter."""
    import jupytext
    import nbformat
    import papermill

    path = tmp_path / f"{name}.ipynb"
    nbformat.write(jupytext.read(notebook_source(name)), str(path))
    inferred = papermill.inspect_notebook(str(path))
    assert set(inferred) == set(entry(name).parameter_defaults())
    for key, info in inferred.items():
        assert info["inferred_type_name"] in ("str", "int", "float", "bool", "list"), (key, info)
        assert len(info["help"].split()) >= 2, f"{name}: parameter {key} has no help: {info}"


@pytest.mark.parametrize("profile", SHIPPED)
def test_dry_run_of_every_shipped_profile(profile, tmp_path):
    """`python -m aepsl.stages --profile P --check` builds every run's config, prints the plan in
    order with what each run reads, and touches nothing."""
    data = yaml.safe_load((PARAMS_DIR / f"{profile}.yaml").read_text())
    data["common"]["artifacts_root"] = str(tmp_path / "artifacts")
    path = tmp_path / f"{profile}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "aepsl.stages", "--profile", str(path), "--check"],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = plan(str(path))
    resolved = load_profile(str(path))   # its `extends` chain merged
    assert len(runs) == sum(len((entry_ or {}).get("runs") or [{}]) for entry_ in resolved["notebooks"].values())
    for run, line in zip(runs, describe(runs)):
        assert run.name in line and line in result.stdout
        if run.writes:
            assert f"writes {run.writes}" in line
    assert not (tmp_path / "artifacts").exists()
    # the stages each run reads come from earlier runs of the profile
    written = set()
    for run in runs:
        assert set(run.reads) <= written, run.name
        written |= {run.writes} if run.writes else set()


def _profile(tmp_path, notebooks: dict) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"common": {"profile": "p", "artifacts_root": str(tmp_path / "a")},
                                    "notebooks": notebooks}, sort_keys=False))
    return str(path)


def test_dry_run_refuses_what_a_stage_does_not_know(tmp_path):
    path = _profile(tmp_path, {"03_pseudo_masks": {"compare_stages": ["erasing_blur"]}})
    for runner in ("aepsl", "aepsl.stages"):
        result = subprocess.run([sys.executable, "-m", runner, "--profile", path, "--check"], cwd=REPO_DIR,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        assert "compare_stages" in result.stderr and "03_pseudo_masks" in result.stderr
        assert result.stderr.count("\n") <= 2   # one message, no traceback


def test_dry_run_refuses_a_stage_read_before_it_is_written(tmp_path):
    path = _profile(tmp_path, {"01_cam": {}, "07_hfpl": {}})
    with pytest.raises(ParameterError, match=r"07_hfpl reads stage\(s\) \['cam_hfpl'"):
        plan(path)
    plan(path, only=["07_hfpl"])   # a subset may read what an earlier run left on disk
    bad = _profile(tmp_path, {"01_cam": {"runs": [{}, {"_name": "again"}]}})
    with pytest.raises(ParameterError, match="both write stage 'cam'"):
        plan(bad)


def test_notebook_defaults_of_the_registry_reach_the_stage_runner():
    """05 is the segmenter notebook with other defaults (its stage, its labels): the stage runner
    passes them as the notebook's parameters cell would."""
    run = [r for r in plan("quick") if r.notebook == "05_psl_plus_plus"][0]
    assert run.config.stage == "psl_plus_plus" and run.config.labels == "psl/train_crf"
    assert run.stage_params["stage"] == "psl_plus_plus" and run.reads == ["psl"]


def test_book_toc_follows_the_default_profile():
    """Every page of the default profile is in the book's table of contents, in order, and the
    table names no other notebook."""
    toc = yaml.safe_load((REPO_DIR / "book" / "_toc.yml").read_text())

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for value in node:
                yield from files(value)

    listed = [f.split("/", 1)[1] for f in files(toc) if f.startswith("notebooks/")]
    pages = [r.name for r in plan("default") if r.page]
    assert listed == pages
    for profile in SHIPPED:   # every profile builds the same book: the same pages, in order
        assert [r.name for r in plan(profile) if r.page] == pages, profile


def test_a_failed_notebook_names_its_cell_and_keeps_its_executed_copy(tmp_path, monkeypatch):
    from aepsl.engine import run_notebooks as pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "99_fails.py").write_text(
        '# %% [markdown]\n# A page that fails.\n\n# %% tags=["parameters"]\nprofile: str = "x"  # the profile\n\n'
        '# %%\nvalues = []\n\n# %%\nfirst = values[0]\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", src)
    out = tmp_path / "out" / "99_fails.ipynb"
    with pytest.raises(NotebookError) as err:
        execute("99_fails", {"profile": "y"}, out)
    message = str(err.value)
    assert "99_fails" in message and "code cell 3" in message and "IndexError" in message
    kept = tmp_path / "out" / "99_fails.failed.ipynb"
    assert kept.is_file() and str(kept.name) in message
    assert "IndexError" in kept.read_text()
    assert not out.exists()
    # fixed, it runs and the failed copy goes
    (src / "99_fails.py").write_text((src / "99_fails.py").read_text().replace("values = []", "values = [1]"))
    execute("99_fails", {"profile": "y"}, out)
    assert out.is_file() and not kept.exists()


def test_pages_run_in_pairs_and_the_first_failure_is_raised(tmp_path, monkeypatch):
    """execute_pages with two workers: a page before the failing one that is still running when it
    fails is awaited and yielded in order, the failure (a NotebookError naming its page) is raised
    after it, and no page starts once the failure is known. The order is fixed by files, not by
    timing: b runs until c's failed copy exists, then 2 s more."""
    from aepsl.engine import run_notebooks as pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    out = tmp_path / "out"
    head = '# %% tags=["parameters"]\nprofile: str = "x"  # the profile\n\n'
    (src / "98_ok.py").write_text(head + '# %%\nanswer = 42\n')
    (src / "97_waits.py").write_text(
        head + '# %%\nimport pathlib, time\nfor _ in range(1200):\n'
        f'    if pathlib.Path({str(out / "c.failed.ipynb")!r}).exists():\n        break\n    time.sleep(0.1)\n'
        'else:\n    raise RuntimeError("c never failed")\ntime.sleep(2)\n')
    (src / "99_fails.py").write_text(head + '# %%\nfirst = [][0]\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", src)
    pages = [("a", "98_ok", {"profile": "y"}), ("b", "97_waits", {"profile": "y"}), ("c", "99_fails", {"profile": "y"}),
             *((name, "98_ok", {"profile": "y"}) for name in "de")]
    seen = []
    with pytest.raises(NotebookError, match="99_fails"):
        for name, seconds in pipeline.execute_pages(pages, out, workers=2):
            assert seconds > 0
            seen.append(name)
    # a ran beside b; c started when a ended and failed while b waited; b was awaited and yielded
    assert seen == ["a", "b"]
    assert (out / "a.ipynb").is_file() and (out / "b.ipynb").is_file() and (out / "c.failed.ipynb").is_file()
    assert not any((out / f"{name}.ipynb").exists() for name in "de")   # nothing started after c failed


def test_a_page_whose_worker_dies_is_one_notebook_error(tmp_path, monkeypatch):
    """A page worker killed from outside (here by its own kernel, which is its child) breaks the
    pool: execute_pages raises one NotebookError naming the page and the way out, not a
    BrokenProcessPool traceback."""
    from aepsl.engine import run_notebooks as pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    head = '# %% tags=["parameters"]\nprofile: str = "x"  # the profile\n\n'
    (src / "96_dies.py").write_text(head + '# %%\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n')
    (src / "98_ok.py").write_text(head + '# %%\nanswer = 42\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", src)
    pages = [("a", "96_dies", {"profile": "y"}), ("b", "98_ok", {"profile": "y"}), ("c", "98_ok", {"profile": "y"})]
    with pytest.raises(NotebookError, match=r"page a \(notebooks/96_dies.py\): its worker process died.*--page-workers 1"):
        list(pipeline.execute_pages(pages, tmp_path / "out", workers=2))


def test_cli_reports_a_failed_notebook_in_one_message(tmp_path):
    """`python -m aepsl` on a profile whose notebook fails: exit 1, the message names the notebook,
    its cell and the exception, and the executed copy is where it says."""
    path = _profile(tmp_path, {"08_results": {}})
    # the results page on an artifacts folder of another profile's making fails in a cell
    folder = tmp_path / "a" / "p" / "cam"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"params": {"profile": "other"}, "metrics": {}}')
    result = subprocess.run([sys.executable, "-m", "aepsl", "--profile", path], cwd=REPO_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    err = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "08_results" in err[0] and "code cell" in err[0] and "ArtifactError" in err[0]
    assert (tmp_path / "a" / "p" / "notebooks" / "08_results.failed.ipynb").is_file()


def _package_copy(tmp_path) -> Path:
    dst = tmp_path / "aepsl"
    shutil.copytree(REPO_DIR / "aepsl", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


TRAINING_STAGES = ("aepsl.methods.cam", "aepsl.methods.erasing", "aepsl.methods.psl")


@pytest.mark.parametrize("edited", ["methods/hfpl_compare.py", "book/tables.py", "book/viz.py", "engine/registry.py", "engine/run_notebooks.py"])
def test_presentation_code_is_outside_the_training_stages_code_hash(tmp_path, edited):
    pkg = _package_copy(tmp_path)
    before = {m: code_hash(m, pkg) for m in TRAINING_STAGES}
    with open(pkg / edited, "a") as f:
        f.write("\n\ndef _an_edit():\n    return 42\n")
    assert {m: code_hash(m, pkg) for m in TRAINING_STAGES} == before


def test_training_code_is_inside_every_training_stages_code_hash(tmp_path):
    pkg = _package_copy(tmp_path)
    before = {m: code_hash(m, pkg) for m in TRAINING_STAGES + ("aepsl.methods.hfpl_compare",)}
    with open(pkg / "engine" / "train.py", "a") as f:
        f.write("\n\ndef _an_edit():\n    return 42\n")
    after = {m: code_hash(m, pkg) for m in TRAINING_STAGES}
    assert all(after[m] != before[m] for m in TRAINING_STAGES)
    assert code_hash("aepsl.methods.hfpl_compare", pkg) == before["aepsl.methods.hfpl_compare"]   # it trains nothing


def test_no_import_cycles_between_stage_modules():
    from aepsl.engine.artifacts import code_modules

    for module in ("aepsl.methods.cam", "aepsl.methods.hfpl", "aepsl.methods.psl", "aepsl.methods.seedmaps", "aepsl.engine.stage"):
        deps = set(code_modules(module)) - {module}
        for dep in deps:
            assert module not in code_modules(dep), f"{module} and {dep} import each other"
    assert "aepsl.methods.cam" not in code_modules("aepsl.methods.psl")
    assert "aepsl.methods.hfpl_compare" not in code_modules("aepsl.methods.cam")


def test_every_profile_notebook_is_a_registry_entry():
    for profile in SHIPPED:
        for name in load_profile(profile)["notebooks"]:
            assert entry(name).notebook == name


def test_the_ablation_table_reads_stages_the_default_profile_writes():
    from aepsl.book.tables import ABLATION_STAGES

    written = {r.writes for r in plan("default") + plan("extended")}
    assert set(ABLATION_STAGES) <= written, sorted(set(ABLATION_STAGES) - written)



def test_a_page_kernel_talks_over_unix_sockets(tmp_path, monkeypatch):
    """A page's kernel uses Unix sockets in the page's own temporary folder, not TCP ports that a
    kernel started at the same moment by another process could take first."""
    from aepsl.engine import run_notebooks as pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "98_sockets.py").write_text(
        '# %% tags=["parameters"]\nprofile: str = "x"  # the profile\n\n'
        '# %%\nimport json\nfrom ipykernel import get_connection_info\ninfo = json.loads(get_connection_info())\n'
        'assert info["transport"] == "ipc", info\nassert "98_sockets" not in info["ip"]\nprint(info["ip"])\n')
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", src)
    out = tmp_path / "out" / "sockets.ipynb"
    pipeline.execute("98_sockets", {"profile": "y"}, out)
    text = out.read_text()
    assert "kernel" in text and "AssertionError" not in text


def test_a_kernel_that_dies_on_start_is_started_once_more(tmp_path, monkeypatch, capfd):
    """A kernel that ends before it answers (here: the first one exits while it starts up) is
    started again once, with a warning; the page is executed by the second."""
    from aepsl.engine import run_notebooks as pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    (src / "98_ok.py").write_text('# %% tags=["parameters"]\nprofile: str = "x"  # the profile\n\n# %%\nanswer = 42\n')
    marker = tmp_path / "started-once"
    exit_first = (f"--IPKernelApp.exec_lines=import os, pathlib; m = pathlib.Path({str(marker)!r}); "
                  "seen = m.exists(); m.touch(); seen or os._exit(3)")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", src)
    monkeypatch.setattr(pipeline, "KERNEL_QUIET", [*pipeline.KERNEL_QUIET, exit_first])
    out = tmp_path / "out" / "ok.ipynb"
    pipeline.execute("98_ok", {"profile": "y"}, out)
    assert out.is_file() and marker.exists()
    assert "died on start" in capfd.readouterr().err
