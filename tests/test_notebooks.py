"""The whole quick profile end to end through papermill, into a temporary folder.

Every notebook of ``notebooks/params/quick.yaml`` runs (each erasing round is its own papermill
run, once per test run: the ``quick_run`` fixture of conftest.py, which the book test
reuses); the per-notebook checks follow pipeline.json. ``ONLY`` there narrows it while debugging.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aepsl.engine.artifacts import read_json
from aepsl.methods.cam import CAMConfig
from aepsl.engine.config import load_profile
from conftest import QUICK_ONLY as ONLY

pytestmark = pytest.mark.notebooks

TABLE_ONLY = {"09_provenance", "11_decisions"}
NOTEBOOKS = ONLY or list(load_profile("quick")["notebooks"])   # quick.yaml with its `extends` chain merged


def _notebook(quick_run, name: str) -> dict:
    path = quick_run["artifacts"] / "notebooks" / f"{name}.ipynb"
    assert path.is_file(), f"executed notebook missing: {path}"
    return json.loads(path.read_text())


def _pages(quick_run) -> list[str]:
    """The runs of the quick profile that have a page (``_page: false`` runs only compute)."""
    from aepsl.engine.registry import plan

    pages = {r.name for r in plan(str(quick_run["path"])) if r.page}
    return [r for r in quick_run["record"]["notebooks"] if r in pages]


def test_every_run_wrote_a_notebook(quick_run):
    runs = list(quick_run["record"]["notebooks"])
    assert [n for n in NOTEBOOKS if any(r.startswith(n) for r in runs)] == NOTEBOOKS
    written = sorted(p.stem for p in (quick_run["artifacts"] / "notebooks").glob("*.ipynb"))
    assert written == sorted(_pages(quick_run))
    from aepsl.engine.registry import plan

    assert set(runs) - set(written) == {r.name for r in plan(str(quick_run["path"])) if not r.page}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executed_without_errors(quick_run, name):
    runs = [r for r in _pages(quick_run) if r.startswith(name)]
    assert runs, f"{name} did not run"
    for run in runs:
        _check_notebook(quick_run, run)


def _check_notebook(quick_run, name: str) -> None:
    nb = _notebook(quick_run, name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert len(code) >= 3
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    assert nb["metadata"]["papermill"]["duration"] > 0
    # the profile's values were injected (papermill adds a cell tagged injected-parameters)
    injected = nb["metadata"]["papermill"]["parameters"]
    assert injected["data_root"] == quick_run["profile"]["common"]["data_root"]
    assert injected["profile"] == "quick"
    assert any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])
    outputs = [o for c in code for o in c.get("outputs", [])]
    if name in TABLE_ONLY:   # pages that show only tables: an HTML table was rendered
        assert any("text/html" in o.get("data", {}) for o in outputs)
    else:                    # every chapter draws figures
        assert any("image/png" in o.get("data", {}) for o in outputs)


def test_data_metrics(quick_run):
    record = read_json(quick_run["artifacts"] / "data" / "metrics.json")
    want = quick_run["profile"]["notebooks"]["00_data"]
    splits = record["metrics"]["splits"]
    assert {s: splits[s]["images"] for s in ("train", "val", "test")} == \
        {"train": want["n_train"], "val": want["n_val"], "test": want["n_test"]}
    assert record["metrics"]["classes"] == ["background"] + want["classes"]
    assert (quick_run["data"] / "JPEGImages").is_dir()
    assert (quick_run["data"] / "dataset.json").is_file()


def test_cam_metrics(quick_run):
    record = read_json(quick_run["artifacts"] / "cam" / "metrics.json")
    m = record["metrics"]
    assert 0 <= m["seed_miou"] <= 1
    sweep = record["params"]["sweep"]
    assert sweep[0] <= m["best_threshold"] <= sweep[1]
    assert m["best_threshold"] in CAMConfig(sweep=sweep).thresholds()
    assert 0 <= m["val_map"] <= 1
    want = quick_run["profile"]["notebooks"]["01_cam"]
    assert len(m["history"]) == want["epochs"]
    assert record["params"]["backbone"] == want["backbone"]
    assert m["cam_count"] == quick_run["profile"]["notebooks"]["00_data"]["n_train"]
    assert (quick_run["artifacts"] / "cam" / "model.pt").is_file()


def test_pipeline_record(quick_run):
    path = quick_run["artifacts"] / "pipeline.json"
    record = read_json(path)
    assert record == json.loads(json.dumps(quick_run["record"]))
    assert record["profile"] == "quick"
    assert list(record["notebooks"])[:2] == ["00_data", "01_cam"]
    if ONLY:
        assert list(record["notebooks"]) == ONLY
    assert all(t > 0 for t in record["notebooks"].values())
    assert Path(record["output_dir"]) == quick_run["artifacts"] / "notebooks"


def test_results_table_sets_the_best_later_cam_beside_erasing(quick_run):
    """The quick profile makes every run of the extended one: the best later CAM's seeds (every
    training image scored) and the plain segmenter trained on them are rows of the results table."""
    from aepsl.book.tables import ablation_table

    table = ablation_table(quick_run["artifacts"].parent, "quick")
    seeds = [r for r in table.index if r.startswith("best later CAM: ")]
    assert len(seeds) == 1, list(table.index)
    method = seeds[0].split(": ", 1)[1]
    variants = read_json(quick_run["artifacts"] / "cam_variants" / "metrics.json")["metrics"]
    assert method == variants["methods"][variants["masks"]["method"]]["label"]   # the method whose masks it wrote
    segmenter = f"segmenter on {method}'s seeds, no PSL"
    assert segmenter in table.index
    assert 0 <= table.loc[seeds[0], "pseudo-label mIoU (train)"] <= 1
    assert 0 <= table.loc[segmenter, "final mIoU (held-out)"] <= 1
