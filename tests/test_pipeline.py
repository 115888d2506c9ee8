"""Notebook parameters cells against the profiles, parameter checking, the CLI's errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from aepsl.engine.artifacts import REPO_DIR
from aepsl.engine.config import ParameterError, load_profile, notebook_runs, stage_params
from aepsl.engine.run_notebooks import check_parameters, check_values, notebook_source, parameters_cell, run_name, run_profile

PROFILES = ["quick", "default", "voc"]
NOTEBOOKS = list(load_profile("default")["notebooks"])  # in reading order


def _papermill_params(params: dict) -> dict:
    """What run_profile hands papermill: keys starting with '_' (e.g. _name) are run metadata."""
    return {k: v for k, v in params.items() if not k.startswith("_")}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_is_a_dict_of_literals(name):
    values = parameters_cell(notebook_source(name))
    assert isinstance(values, dict)
    for key in ("profile", "seed", "device", "data_root", "artifacts_root", "force"):
        assert key in values


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_without_papermill_reproduces_default_profile(name):
    """Run by hand, a notebook computes what the default profile's first run of it computes:
    its parameters cell holds the registry's defaults, and the profile's values build the same
    config as the cell's."""
    from aepsl.engine.registry import entry

    cell = parameters_cell(notebook_source(name))
    assert cell == entry(name).parameter_defaults()
    profile = _papermill_params(stage_params("default", name))
    assert entry(name).build({**cell, **profile}) == entry(name).build(profile)


def test_profiles_list_the_notebooks_in_order():
    assert NOTEBOOKS[:2] == ["00_data", "01_cam"]
    assert NOTEBOOKS == sorted(NOTEBOOKS)
    on_disk = sorted(p.stem for p in (REPO_DIR / "notebooks").glob("[0-9][0-9]_*.py"))
    assert NOTEBOOKS == on_disk, "default.yaml (the book's profile) must list every notebook"
    quick = list(load_profile("quick")["notebooks"])
    assert quick == [n for n in NOTEBOOKS if n in quick], "quick.yaml lists notebooks out of order"
    assert quick[:2] == ["00_data", "01_cam"]
    for profile in PROFILES:
        assert load_profile(profile)["common"]["profile"] == profile


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_parameter_is_declared(profile):
    data = load_profile(profile)
    for name in data["notebooks"]:
        runs = notebook_runs(profile, name)
        assert runs
        for params in runs:
            params = _papermill_params(params)
            check_parameters(name, params)                   # no exception
            check_parameters(name, {**params, "force": True})  # what --force adds
            check_values(name, params)                       # values within the stage's ranges


def test_check_parameters_unknown_name():
    with pytest.raises(ParameterError, match="epochz"):
        check_parameters("01_cam", {**stage_params("quick", "01_cam"), "epochz": 3})


def test_check_parameters_wrong_type():
    with pytest.raises(ParameterError, match="epochs"):
        check_parameters("01_cam", {"epochs": "two"})
    with pytest.raises(ParameterError, match="cam_flip"):
        check_parameters("01_cam", {"cam_flip": "yes"})
    with pytest.raises(ParameterError, match="classes"):
        check_parameters("00_data", {"classes": "disc"})


def test_check_parameters_accepts_int_for_float_and_tuple_for_list():
    check_parameters("01_cam", {"lr": 1, "cam_scales": (1.0, 2.0)})


def test_unknown_notebook():
    with pytest.raises(FileNotFoundError, match="99_nothing"):
        check_parameters("99_nothing", {})


def test_stage_params_overrides_and_unknown_notebook():
    assert stage_params("quick", "01_cam", epochs=7)["epochs"] == 7
    with pytest.raises(ParameterError, match="99_nothing"):
        stage_params("quick", "99_nothing")


def test_unknown_profile():
    with pytest.raises(ParameterError, match="no_such_profile"):
        load_profile("no_such_profile")


def test_profile_from_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("common: {profile: mine, seed: 3}\nnotebooks:\n  01_cam:\n    epochs: 1\n"
                    "    runs: [{}, {lr: 0.5}]\n")
    runs = notebook_runs(str(path), "01_cam")
    assert runs == [{"profile": "mine", "seed": 3, "epochs": 1}, {"profile": "mine", "seed": 3, "epochs": 1, "lr": 0.5}]
    base = {"profile": "mine", "seed": 3, "epochs": 1}
    assert run_name("01_cam", runs[0], base) == "01_cam"
    assert run_name("01_cam", runs[1], base) == "01_cam_lr0.5"


def test_profile_without_sections(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\n")
    with pytest.raises(ParameterError, match="common"):
        load_profile(str(path))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aepsl", *args], cwd=REPO_DIR, capture_output=True,
                          text=True, timeout=120)


def test_cli_unknown_notebook_exits_2():
    result = _cli("--profile", "quick", "--only", "nonexistent")
    assert result.returncode == 2, result.stderr
    assert "nonexistent" in result.stderr
    assert "error" in result.stderr.lower()
    assert "executing" not in result.stdout


def test_cli_unknown_profile_exits_2():
    result = _cli("--profile", "no_such_profile")
    assert result.returncode == 2, result.stderr
    assert "no_such_profile" in result.stderr


def test_run_profile_from_yaml_path_writes_under_its_name(tmp_path):
    """A profile given as a path is named by its common.profile, not by the path."""
    path = tmp_path / "somefile.yaml"
    path.write_text(f"common: {{profile: mine, artifacts_root: {tmp_path / 'art'}}}\nnotebooks: {{}}\n")
    record = run_profile(str(path))
    assert record["profile"] == "mine"
    assert (tmp_path / "art" / "mine" / "pipeline.json").is_file()
    assert record["output_dir"] == str(tmp_path / "art" / "mine" / "notebooks")
    with pytest.raises(ParameterError, match="01_cam"):
        run_profile(str(path), only=["01_cam"])


def test_stage_params_leave_out_the_pipelines_own_keys():
    from aepsl.methods import psl
    from aepsl.engine.config import from_params

    for run in range(len(notebook_runs("default", "04_psl"))):
        params = stage_params("default", "04_psl", run)
        assert not [k for k in params if k.startswith("_")]
        from_params(psl.PSLConfig, params, "psl")   # every run's parameters build the stage's config


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_default_profile_restates_no_default(name):
    """One home per default: the stage's dataclass (with the registry's per-notebook defaults).
    default.yaml keeps only its runs and what a run changes, so its notebook-level entries are
    empty, and every run's config equals the dataclass defaults except where the run says."""
    from aepsl.engine.registry import entry

    data = load_profile("default")
    level = {k: v for k, v in (data["notebooks"][name] or {}).items() if k != "runs"}
    assert level == {}, f"default.yaml restates {sorted(level)} for {name}: drop them (they are the defaults)"
    defaults = entry(name).parameter_defaults()
    for params in notebook_runs("default", name):
        changed = {k for k, v in params.items() if not k.startswith("_") and defaults.get(k) != v}
        own = {k for k in params if not k.startswith("_")} - set(data["common"])
        assert changed <= own, f"{name}: a common value differs from the dataclass default: {changed - own}"


def test_a_profile_file_is_parsed_once_until_it_changes(tmp_path, monkeypatch):
    """The profile reader keeps what it parsed (a plan reads a profile's parents once per notebook);
    each caller gets its own copy, and a file changed since is read again."""
    import yaml as yaml_module

    from aepsl.engine import config

    path = tmp_path / "p.yaml"
    path.write_text("common: {seed: 1}\nnotebooks: {}\n")
    calls = []
    real = yaml_module.load
    monkeypatch.setattr(config.yaml, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = config._read_yaml(path)
    first["common"]["seed"] = 99   # a caller's change stays its own
    assert config._read_yaml(path)["common"]["seed"] == 1 and len(calls) == 1
    path.write_text("common: {seed: 2, device: cpu}\nnotebooks: {}\n")
    assert config._read_yaml(path)["common"]["seed"] == 2 and len(calls) == 2
