"""Seeds as an axis (--seed K on both runners), profiles that extend profiles, the one file of
design studies and the scripts that run and record them."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
import yaml

from aepsl.engine.artifacts import REPO_DIR
from aepsl.engine.config import (DATA_NOTEBOOK, PROFILE_RECORD, ParameterError, load_designs, load_profile,
                                 notebook_runs, seed_runs)
from aepsl.engine.registry import plan

DESIGNS = REPO_DIR / "benchmarks" / "designs.yaml"
DESIGN_RECORD = REPO_DIR / "benchmarks" / "erasing_design.json"


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _fingerprint(runs) -> str:
    text = json.dumps([[r.name, r.params, r.writes, r.reads, r.page] for r in runs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- extends
def test_extends_merges_common_by_key_and_notebooks_by_entry(tmp_path):
    base = _write(tmp_path / "base.yaml", {
        "common": {"profile": "base", "seed": 0, "data_root": "data/a"},
        "notebooks": {"00_data": {"n_train": 10},
                      "01_cam": {"epochs": 3, "runs": [{"stage": "cam_hfpl", "hfpl": True}, {}]},
                      "02_erasing": {"runs": [{"round": 1}, {"round": 2}]}}})
    child = _write(tmp_path / "child.yaml", {
        "extends": base, "common": {"profile": "child"},
        "notebooks": {"01_cam": {"lr": 0.5}, "02_erasing": {"runs": [{"round": 1, "mine_prior": 0.2}]},
                      "03_pseudo_masks": {"rounds": 1}}})
    data = load_profile(child)
    assert data["common"] == {"profile": "child", "seed": 0, "data_root": "data/a"}
    assert list(data["notebooks"]) == ["00_data", "01_cam", "02_erasing", "03_pseudo_masks"]
    assert data["notebooks"]["00_data"] == {"n_train": 10}                       # not named: the base's
    assert data["notebooks"]["01_cam"]["lr"] == 0.5 and data["notebooks"]["01_cam"]["epochs"] == 3
    assert len(data["notebooks"]["01_cam"]["runs"]) == 2                          # no runs given: the base's
    assert data["notebooks"]["02_erasing"]["runs"] == [{"round": 1, "mine_prior": 0.2}]   # runs replaced whole
    assert data["extends"] == base
    assert notebook_runs(child, "01_cam")[1] == {"profile": "child", "seed": 0, "data_root": "data/a", "epochs": 3,
                                                 "lr": 0.5}


def test_stop_after_keeps_the_bases_notebooks_up_to_one(tmp_path):
    base = _write(tmp_path / "base.yaml", {"common": {"profile": "b"},
                                           "notebooks": {"00_data": {}, "01_cam": {}, "02_erasing": {}}})
    child = _write(tmp_path / "child.yaml", {"extends": base, "stop_after": "01_cam"})
    assert list(load_profile(child)["notebooks"]) == ["00_data", "01_cam"]
    with pytest.raises(ParameterError, match="stop_after"):
        load_profile(_write(tmp_path / "bad.yaml", {"extends": base, "stop_after": "07_hfpl"}))
    with pytest.raises(ParameterError, match="stop_after needs"):
        load_profile(_write(tmp_path / "alone.yaml", {"stop_after": "01_cam", "common": {}, "notebooks": {}}))


def test_a_profile_that_extends_itself_is_refused(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    _write(a, {"extends": str(b)})
    _write(b, {"extends": str(a)})
    with pytest.raises(ParameterError, match="extends itself"):
        load_profile(str(a))


def test_extended_and_quick_extend_and_plan_the_runs_they_planned_as_full_copies():
    """extended.yaml extends default.yaml and quick.yaml extends extended.yaml, stating only their
    changes; their plans are those of the full copies they replaced (the fingerprint of every run's
    name, parameters, stage written and read, page). A change of a profile's runs made on purpose
    changes the fingerprint: update it then, with the reason in the commit."""
    assert load_profile("extended")["extends"] == "default"
    assert load_profile("quick")["extends"] == "extended"
    assert _fingerprint(plan("extended")) == "ab1b171bab9268d4"
    assert _fingerprint(plan("quick")) == "2a7d377f532150b2"


# --------------------------------------------------------------------------- --seed
def test_seed_gives_every_run_but_the_datas_the_seed_under_its_own_profile_name():
    book, seeded = plan("default"), plan("default", seed=1)
    assert [r.name for r in seeded] == [r.name for r in book]
    assert [r.writes for r in seeded] == [r.writes for r in book]
    for a, b in zip(book, seeded):
        assert b.params["profile"] == "default_seed1"
        assert b.params["seed"] == (a.params["seed"] if a.notebook == DATA_NOTEBOOK else 1), b.name
        # the same chain: nothing but the profile name and the training seed differs
        same = {k: v for k, v in a.params.items() if k not in ("profile", "seed")}
        assert {k: v for k, v in b.params.items() if k not in ("profile", "seed")} == same, b.name
    data = load_profile("default", seed=1)
    assert data["seed_of"] == "default" and data["common"]["seed"] == 1
    assert load_profile("default")["common"]["profile"] == "default"          # the book's profile untouched


def test_the_profiles_own_seed_is_the_profile_itself():
    assert _fingerprint(plan("default", seed=0)) == _fingerprint(plan("default"))
    assert "seed_of" not in load_profile("default", seed=0)
    with pytest.raises(ParameterError, match="seed"):
        load_profile("default", seed=-1)


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("module", ["aepsl", "aepsl.stages"])
def test_both_runners_take_seed(module):
    result = _cli(module, "--profile", "quick", "--seed", "2", "--check")
    assert result.returncode == 0, result.stderr
    assert "'quick_seed2'" in result.stdout and "artifacts/quick_seed2/" in result.stdout
    assert "training seed 2 of profile 'quick'" in result.stdout


def test_book_pages_are_never_a_seed_runs():
    result = _cli("aepsl", "--profile", "quick", "--seed", "1", "--book")
    assert result.returncode == 2 and "--book" in result.stderr


def test_a_seed_run_writes_under_its_own_folder_and_says_whose_seed_it_is(tmp_path):
    from aepsl.engine.run_notebooks import run_profile

    path = _write(tmp_path / "mine.yaml", {"common": {"profile": "mine", "seed": 0,
                                                     "artifacts_root": str(tmp_path / "art")}, "notebooks": {}})
    record = run_profile(path, seed=3)
    assert record["profile"] == "mine_seed3"
    assert json.loads((tmp_path / "art" / "mine_seed3" / PROFILE_RECORD).read_text()) == {
        "profile": "mine_seed3", "seed": 3, "seed_of": "mine"}
    assert not (tmp_path / "art" / "mine").exists()                         # the profile's own folder untouched
    assert list(seed_runs(tmp_path / "art", "mine")) == [3]


def test_seed_runs_are_found_from_records_not_folder_names(tmp_path):
    def folder(name, record=None):
        (tmp_path / name).mkdir()
        if record is not None:
            (tmp_path / name / PROFILE_RECORD).write_text(json.dumps(record))

    folder("default", {"profile": "default", "seed": 0, "seed_of": None})
    folder("default_seed1")                                                        # a name, no record
    folder("renamed", {"profile": "default_seed4", "seed": 4, "seed_of": "default"})
    folder("extended", {"profile": "extended", "seed": 0, "seed_of": None})
    folder("extended_seed2", {"profile": "extended_seed2", "seed": 2, "seed_of": "extended"})
    assert seed_runs(tmp_path, "default") == {4: tmp_path / "renamed"}
    assert seed_runs(tmp_path, "extended") == {2: tmp_path / "extended_seed2"}


def test_seed_runs_note_names_the_seeds_run_to_the_end(tmp_path):
    from aepsl.book import notes

    assert "No other seed" in notes.seed_runs_note(tmp_path, "default")
    for k in (1, 2):
        (tmp_path / f"s{k}").mkdir()
        (tmp_path / f"s{k}" / PROFILE_RECORD).write_text(json.dumps({"profile": f"default_seed{k}", "seed": k,
                                                                    "seed_of": "default"}))
    (tmp_path / "s1" / "psl").mkdir()
    (tmp_path / "s1" / "psl" / "metrics.json").write_text("{}")                 # seed 1 not run to the end
    assert "No other seed" in notes.seed_runs_note(tmp_path, "default")
    (tmp_path / "s2" / "psl_plus_plus").mkdir()
    (tmp_path / "s2" / "psl_plus_plus" / "metrics.json").write_text("{}")
    note = notes.seed_runs_note(tmp_path, "default")
    assert "training seed 2," in note and "--seed 2" in note and "--seed 1" not in note


# --------------------------------------------------------------------------- the design studies
def test_the_design_studies_are_one_file():
    assert not (REPO_DIR / "benchmarks" / "designs").exists()
    designs = load_designs(DESIGNS)
    studies = {n: d for n, d in designs.items() if d.get("study")}
    assert len(studies) >= 20
    for name, d in designs.items():
        assert re.fullmatch(r"[a-z][a-z0-9.\-]{1,19}", name), f"design name {name!r}: short, lower case, hyphens"
        assert "\n" not in d["note"] and len(d["note"]) < 160, name
        assert d.get("study") in (None, "erasing", "segmenters"), name
        assert bool(d.get("seeds")) == bool(d.get("study")), f"{name}: a study has seeds, a base none"


def test_every_design_and_seed_plans():
    """Every design's changes are valid parameters of their notebooks: plan() builds and checks
    every run's config, for every seed the design lists, and the stages each run reads are
    written earlier in its profile."""
    for name, d in load_designs(DESIGNS).items():
        for seed in d.get("seeds") or [None]:
            runs = plan(f"benchmarks/designs.yaml#{name}", seed=seed)
            assert runs, name
            data = load_profile(f"benchmarks/designs.yaml#{name}", seed)
            if seed:
                assert data["common"]["profile"].endswith(f"_seed{seed}") and data["seed_of"]
                assert all(r.params["seed"] == seed for r in runs if r.notebook != DATA_NOTEBOOK)


def test_an_unknown_design_is_named():
    with pytest.raises(ParameterError, match="no-such"):
        load_profile("benchmarks/designs.yaml#no-such")


def test_every_design_record_belongs_to_a_design_and_one_of_its_seeds():
    designs = load_designs(DESIGNS)
    book = json.loads(DESIGN_RECORD.read_text())
    assert book
    for key, e in book.items():
        assert e["design"] in designs and designs[e["design"]]["study"] == "erasing", key
        assert e["seed"] in designs[e["design"]]["seeds"], key
        assert key == f"{e['design']} / seed {e['seed']} / {e['merge_stage']}"
        assert e["command"] == f"python benchmarks/erasing_design.py --design {e['design']} --seed {e['seed']}"
        for field in ("cpu", "rounds", "recipe", "cam", "scenes", "ae_miou_per_rounds", "ae_best_minus_cam", "note"):
            assert field in e, (key, field)


# --------------------------------------------------------------------------- the scripts run
def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_DIR / "benchmarks" / name), *args], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["erasing_design.py", "record_results.py", "crf_label_guard.py"])
def test_script_help(name):
    result = _script(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "--dry-run" in result.stdout


def test_erasing_design_dry_run_checks_every_design_and_runs_nothing(tmp_path):
    result = _script("erasing_design.py", "--all", "--dry-run", "--out", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr
    studies = [n for n, d in load_designs(DESIGNS).items() if d.get("study")]
    pairs = sum(len(load_designs(DESIGNS)[n]["seeds"]) for n in studies)
    assert f"dry run: {pairs} design runs checked" in result.stdout
    assert "prior-0.2, seed 1 (erasing; stages under artifacts/default_seed1/)" in result.stdout
    assert not (tmp_path / "out.json").exists()
    bad = _script("erasing_design.py", "--design", "no-such", "--dry-run")
    assert bad.returncode == 2 and "no-such" in bad.stderr


def test_record_results_and_crf_guard_dry_runs_write_nothing(tmp_path):
    out = tmp_path / "results.md"
    result = _script("record_results.py", "--dry-run", "--artifacts", str(tmp_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "would write" in result.stdout and not out.exists()
    result = _script("crf_label_guard.py", "default", "--seeds", "--dry-run", "--artifacts", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing scored" in result.stdout
