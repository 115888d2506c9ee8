"""The pages as a reader sees them, checked on their sources and on the package functions they call:
visible code fits its box, set-up is hidden, the run's parameters appear once, every chapter
ends with a 'Try it', and a variant the profile did not run is read from the variants profile
or named by the command that makes it (never an error)."""
from __future__ import annotations

import json

import jupytext
import pytest
from PIL import Image

from aepsl.book import notes, records, tables, viz
from aepsl.engine.artifacts import REPO_DIR
from aepsl.engine.registry import REGISTRY

MAX_COLUMNS = 88
NOTEBOOKS = [e.notebook for e in REGISTRY]


def _cells(name):
    nb = jupytext.read(REPO_DIR / "notebooks" / f"{name}.py")
    return [c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_visible_code_fits_its_box(name):
    wide = [line for c in _cells(name) if not {"remove-input", "remove-cell"} & set(c.metadata.get("tags", []))
            for line in c.source.splitlines() if len(line) > MAX_COLUMNS]
    assert not wide, f"{name}: code lines wider than {MAX_COLUMNS} columns: {wide}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_set_up_hidden_parameters_once_try_it_last(name):
    cells = _cells(name)
    first = cells[0]
    assert "remove-input" in first.metadata.get("tags", []), f"{name}: the set-up cell shows its code"
    assert "viz.page_setup()" in first.source
    shown = [c for c in cells if "tables.parameters_table(" in c.source]
    assert shown == [first], f"{name}: the run's parameters are shown once, by the set-up cell"
    assert "notes.try_it(" in cells[-1].source, f"{name}: the chapter does not end with a 'Try it'"
    untagged = [c.source.splitlines()[0] for c in cells
                if not {"remove-input", "hide-input", "remove-cell"} & set(c.metadata.get("tags", []))]
    assert not untagged, f"{name}: code cells neither hidden nor folded: {untagged}"


def test_shown_path_is_relative_to_the_repository(tmp_path):
    assert records.shown_path("data/scenes-quick") == "data/scenes-quick"
    assert records.shown_path(str(REPO_DIR / "artifacts")) == "artifacts"
    outside = records.shown_path(str(tmp_path / "x" / "data"))
    assert str(tmp_path) not in outside and outside.startswith("…/x/data")


def test_parameters_table_leaves_out_runtime_settings():
    html = tables.parameters_table({"profile": "default", "seed": 0, "device": "cpu", "data_root": "/tmp/a/b",
                                    "num_workers": 2, "cam_scales": [1.0, 0.5], "backbone_weights": ""}).to_html()
    assert "device" not in html and "num_workers" not in html and "/tmp/" not in html
    assert "1, 0.5" in html and "notebooks/params/default.yaml" in html


def _metrics(folder, profile, metrics, data_root="data/scenes-default"):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"params": {"profile": profile, "data_root": data_root},
                                                     "metrics": metrics}))


def test_stage_metrics_falls_back_to_the_variants_profile_on_the_same_data(tmp_path):
    _metrics(tmp_path / "extended" / "erasing_t07" / "round1", "extended", {"mined_total_fraction": 0.1})
    rec, source = records.stage_metrics(tmp_path, "default", "erasing_t07/round1", "data/scenes-default")
    assert source == "extended" and rec["metrics"]["mined_total_fraction"] == 0.1
    assert "extended" in notes.source_note(source, "default")
    assert notes.source_note("default", "default") == ""
    # other data (a VOC profile): not borrowed
    assert records.stage_metrics(tmp_path, "voc", "erasing_t07/round1", "data/VOCdevkit/VOC2012") == (None, None)
    assert records.stage_metrics(tmp_path, "default", "nothing", "data/scenes-default") == (None, None)
    note = notes.not_run_note("This variant")
    assert "make book PROFILE=extended" in note and note.count(".") == 1


def test_try_it_is_one_admonition_with_the_command():
    box = notes.try_it("round", "Change it:", ".venv/bin/python -m aepsl --profile default", "Expect more.")
    assert box.startswith("````{admonition} Try it: round") and box.endswith("````")
    assert "```bash\n.venv/bin/python -m aepsl --profile default\n```" in box


def test_pipeline_figure_from_metrics_with_stages_missing(tmp_path):
    _metrics(tmp_path / "p" / "cam", "p", {"seed_miou": 0.5})
    _metrics(tmp_path / "p" / "pseudo_masks", "p", {"per_rounds": [{"miou": 0.4}, {"miou": 0.45}]})
    numbers = records.pipeline_numbers(tmp_path, "p")
    assert numbers["CAM"] == 0.5 and numbers["AE"] == [0.4, 0.45] and numbers["PSL"] is None
    out = tmp_path / "figures" / "pipeline.png"
    viz.pipeline_figure(tmp_path, "p", out)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 800
    assert viz._num(None) == "–" and viz._num(0.1234) == "0.123"


def test_pipeline_figure_cli(tmp_path):
    import subprocess
    import sys

    import yaml

    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"common": {"profile": "p", "artifacts_root": str(tmp_path / "art")},
                                       "notebooks": {}}))
    out = tmp_path / "pipeline.png"
    result = subprocess.run([sys.executable, "-m", "aepsl.book.viz", "--pipeline-figure", str(out),
                             "--profile", str(profile)], capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert result.returncode == 0, result.stderr
    assert out.is_file()


def test_recipe_note_names_the_published_values_and_what_the_run_changes():
    recipe = {"beta": 8.0, "logt": 8}
    same = notes.recipe_note("PSA", recipe, {"beta": 8.0, "logt": 8, "radius": 5}, {"beta": "$\\beta$"})
    assert same == "PSA's recipe: $\\beta$ = 8, `logt` = 8. This run keeps it."
    changed = notes.recipe_note("PSA", recipe, {"beta": 8.0, "logt": 2})
    assert changed.endswith("This run changes `logt` to 2.")


def test_crf_and_hfpl_settings_are_read_not_typed():
    from aepsl.methods.crf import CRFParams

    assert "$w_1 = 7$" in notes.crf_settings_note(CRFParams(bi_compat=7.0))
    assert "4 mean-field" in notes.crf_settings_note(CRFParams(iterations=4))
    params = {"hfpl": True, "hfpl_weight": 0.3, "hfpl_samples": 7, "hfpl_sigma": 4.0, "hfpl_mu": 2.5,
              "hfpl_fs_weight": 1.0}
    text = notes.hfpl_recipe_note(params)
    assert "$w = 0.3$" in text and "$K = 7$" in text and "$\\sigma = 4$" in text
    assert notes.hfpl_recipe_note({"hfpl": False}) == "" and notes.hfpl_recipe_note(None) == ""


def test_affinity_runs_note_names_borrowed_rows_and_runs_not_made():
    import pandas as pd

    runs = pd.DataFrame({"measured in": ["default", "extended"]}, index=["affinity_cam", "affinity_ae"])
    text = notes.affinity_runs_note(runs, "default")
    assert "`affinity_ae`" in text and "`affinity_cam`," not in text and "'extended'" in text
    assert tables.AFFINITY_STAGES["affinity_cam_cut"] in text          # the run nobody made
    own = pd.DataFrame({"measured in": ["default"] * 3}, index=list(tables.AFFINITY_STAGES))
    assert notes.affinity_runs_note(own, "default") == ""
    assert tables.AFFINITY_STAGES["affinity_cam"] in notes.affinity_runs_note(pd.DataFrame(), "default")


def test_ablation_parts_split_the_table_into_two_narrow_ones():
    import pandas as pd

    table = pd.DataFrame({"pseudo-label mIoU (train)": [0.41, 0.52, None],
                          "final mIoU (held-out)": [None, 0.61, 0.70],
                          "ratio to oracle": [float("nan"), 0.61 / 0.70, 1.0],
                          "wall time (s)": [12.4, 99.6, None],
                          "published (VOC 2012)": ["48.0", "", ""]},
                         index=["CAM", "AE + PSL", "oracle"])
    pseudo, final = tables.ablation_parts(table)
    assert list(pseudo.index) == ["CAM", "AE + PSL"] and list(final.index) == ["AE + PSL", "oracle"]
    assert len(pseudo.columns) <= 3 and len(final.columns) <= 4
    assert list(pseudo["time (s)"]) == [12, 100]
    assert final.loc["AE + PSL", "of oracle"] == pytest.approx(0.61 / 0.70)
    assert all(p.empty for p in tables.ablation_parts(pd.DataFrame()))


def test_item_centre_is_the_median_item_pixel_or_the_image_centre():
    import numpy as np

    from aepsl.methods.randomwalk import item_centre

    mask = np.zeros((8, 10), np.uint8)
    mask[2:5, 6:9] = 3
    mask[0, 0] = 255                                   # unlabelled: not an item
    assert item_centre(mask) == (3, 7)
    assert item_centre(np.zeros((8, 10), np.uint8)) == (4, 5)


def test_walk_steps_note_and_figure_read_both_readings_of_the_walk():
    m = {"logt_sweep": {"0": 0.55, "2": 0.61, "8": 0.54}, "miou_before": 0.52, "miou_after": 0.60,
         "walk": {"background": "cut"}, "power_walk": {"alpha_infer": 16.0, "logt_sweep": {"0": 0.50, "2": 0.53, "8": 0.48}}}
    text = notes.walk_steps_note(m)
    assert "Cut after the walk: at best 0.610 mIoU (after 4 steps), 0.540 after 256" in text
    assert "PSA's background on the same walk: at best 0.530 (after 4 steps), 0.480 after 256" in text
    fig = viz.walk_steps_figure(m, 3)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "cut after the walk" in labels and any(label.startswith("PSA's background") for label in labels)
    del m["power_walk"]
    assert "PSA" not in notes.walk_steps_note(m)
    assert not any(line.get_label().startswith("PSA") for line in viz.walk_steps_figure(m, 3).axes[0].get_lines())
