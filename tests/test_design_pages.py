"""The design appendix's tables: read from the benchmark records by their fields, short row names,
few columns, an empty table (not an error) where a record is missing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from aepsl.book import notes, records, tables

# Internal names a reader cannot decode: design ids of the merge stages, profile-file names.
INTERNAL = ("pm_", " / ", "_seed", "(earlier")


def test_a_missing_record_is_an_empty_dict_and_one_sentence_naming_its_command(tmp_path):
    assert records.design_record("calibration", tmp_path) == {}
    assert "python benchmarks/calibrate.py" in notes.missing_record("calibration")
    assert tables.calibration_table({}).empty
    assert all(t.empty for t in tables.book_recipe_tables({}))
    assert tables.segmenter_study_table({}).empty
    assert tables.erasing_designs({}).empty
    assert tables.erasing_scene_table(tables.erasing_designs({})).empty
    assert tables.erasing_recipe_table(tables.erasing_designs({}), 0.34).empty
    assert tables.psl_design_table({}).empty
    assert tables.body_recognition_table({}).empty
    assert tables.latest_book_times(tables.book_time_runs({})).empty


def test_design_record_reads_a_file_and_wraps_a_list(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"x": {"order": 1}, "_machine": {}}))
    (tmp_path / "b.json").write_text(json.dumps([{"wall_s": 1}]))
    assert records.design_record("a", tmp_path)["x"] == {"order": 1}
    assert records.design_record("b", tmp_path) == {"runs": [{"wall_s": 1}]}
    entries = records.design_entries({"b": {"order": 2}, "_m": {}, "a": {"order": 1}, "c": {}})
    assert [k for k, _ in entries] == ["a", "b", "c"]          # by order; record-wide fields left out


def test_calibration_table_names_settings_by_what_they_are():
    record = {"_machine": {"cpus": 2},
              "x/clf": {"dataset": {"classes": list("abcdef"), "n_train": 3000}, "params": {
                  "backbone": "efficientnet_lite0", "optimizer": "adamw", "epochs": 4},
                  "val_map": 0.9, "seed_miou": 0.5, "train_seconds": 600.4},
              "x/oracle": {"dataset": {"classes": list("abcdefg"), "n_train": 2000}, "params": {
                  "head": "largefov", "epochs": 6}, "val_miou": 0.5, "train_seconds": 300}}
    table = tables.calibration_table(record)
    assert list(table.index) == ["classifier, Lite0, AdamW", "oracle, LargeFOV head"]
    assert table.loc["classifier, Lite0, AdamW", "scenes"] == "6 classes, 3,000"
    assert pd.isna(table.loc["oracle, LargeFOV head", "val mAP"])
    assert table.loc["oracle, LargeFOV head", "oracle mIoU"] == 0.5
    assert len(table.columns) <= 6


def test_segmenter_study_names_each_recipe_by_its_changes():
    base = {"decoder": "stride4", "epochs": 12, "lr": 0.001, "scale_range": [0.9, 1.1], "weight_decay": 0.0001,
            "threads": 2, "val_miou_drop05": 0.7, "val_miou_nodrop": 0.75, "val_miou_crf": None,
            "train_seconds": 600.0, "git_revision": "e11be92cc69f+dirty"}
    record = {"_machine": {}, "a": {**base, "order": 1},
              "b": {**base, "order": 0, "decoder": "none", "epochs": 5},
              "c": {**base, "order": 2, "scale_range": [0.7, 1.3], "weight_decay": 0.01, "threads": 1}}
    table = tables.segmenter_study_table(record)
    assert list(table.index) == ["LargeFOV, 5 ep", "stride-4 decoder, 12 ep",
                                 "stride-4 decoder, 12 ep, scale 0.7-1.3, wd 0.01, 1 thread"]
    assert set(table["revision"]) == {"e11be92"}
    assert len(table.columns) <= 6


def test_scene_and_recipe_labels_come_from_the_fields():
    assert tables.scene_label({"part_size": [0, 0], "item_size": [40, 64], "class_hue": 1.0}) \
        == "no discs, items 40-64 px, any hue"
    assert tables.scene_label({"class_hue": 0.34, "max_items": 2}) == "discs 20-26 px, ≤ 2 items, hue band 0.34"
    assert tables.recipe_label({}) == "paper's recipe"
    assert tables.recipe_label({"mine_prior": 0.2, "mine_threshold": 0.55}) == "prior 0.2, mining at 0.55"
    assert tables.recipe_label({"init": "previous", "clean_fraction": 0.5}) == "warm start, 50% clean"


def test_erasing_scene_table_groups_the_paper_recipe_runs_by_scenes():
    def design(order, seed, hue, gain, **recipe):
        return {"order": order, "seed": seed, "scenes": {"class_hue": hue}, "cam": {"seed_miou": 0.5},
                "recipe": {**tables.paper_erasing(), **recipe}, "ae_best_minus_cam": gain,
                "rounds": [{"region_precision": 0.8, "part_coverage": {"this_round": {"disc": 0.9, "body": 0.2}}},
                           {"region_precision": 0.6}]}
    designs = tables.erasing_designs({"a": design(0, 0, 1.0, 0.02), "b": design(1, 1, 1.0, 0.04),
                                      "c": design(2, 0, 0.34, 0.06), "d": design(3, 0, 0.34, 0.0, mine_prior=0.2)})
    table = tables.erasing_scene_table(designs)
    assert list(table.index) == ["discs 20-26 px, any hue", "discs 20-26 px, hue band 0.34"]
    assert table.loc["discs 20-26 px, any hue", "seeds"] == "0, 1"
    assert table.loc["discs 20-26 px, any hue", "best AE − CAM"] == pytest.approx(0.03)
    assert table.loc["discs 20-26 px, hue band 0.34", "runs"] == 1     # the prior's run is not the paper's


def test_psl_design_table_averages_seeds_and_names_variants_by_their_fields():
    def run(design, stage, seed, miou, **kw):
        return {"design": design, "stage": stage, "seed": seed, "miou": miou, "online_pixels": "labelled",
                "online_warmup": 0, "profile": "default", **kw}
    record = {"1": run("the book", "ae_segmenter", 0, 0.5), "2": run("the book", "psl", 0, 0.6),
              "3": run("the book", "psl", 1, 0.7), "4": run("the book", "psl_plus_plus", 0, 0.8),
              "5": run("the book", "oracle", 0, 0.9),
              "6": run("variants", "psl_all", 0, 0.55, online_pixels="all"),
              "7": run("variants", "psl_warm2", 0, 0.56, online_warmup=2, profile="paper")}
    table = tables.psl_design_table(record)
    assert table.loc["the book", "PSL"] == pytest.approx(0.65)
    assert table.loc["the book", "seeds"] == "0, 1"
    assert "oracle" not in table.columns
    assert set(table.index) == {"the book", "PSL, Ŝ on every pixel (book's masks)",
                                "PSL, Ŝ after a 2-epoch warm-up (paper's masks)"}


def test_body_recognition_and_book_time_tables():
    body = {"a": {"seed": 0, "rounds": [{"round": 1, "val_map": 0.9, "val_map_discs_erased": 0.3},
                                        {"round": 2, "val_map": 0.5, "val_map_discs_erased": 0.8}]}}
    table = tables.body_recognition_table(body)
    assert list(table.index) == [1, 2] and table.loc[2, "discs erased, seed 0"] == 0.8
    runs = tables.book_time_runs({"runs": [
        {"profile": "default", "finished_at": "2026-12-01T10:00:00+0000", "git_revision": "abcdef123456",
         "wall_s": 900.0, "cpu_s": 1500.0, "cores": 2},
        {"profile": "extended", "wall_s": 1700.0}, {"profile": "default", "wall_s": 800.0}]})
    latest = tables.latest_book_times(runs)
    assert latest.loc["default", "wall (s)"] == 800.0 and latest.loc["extended", "wall (s)"] == 1700.0
    assert runs.loc[0, "revision"] == "abcdef1" and runs.loc[0, "date"] == "2026-12-01"


def test_show_formats_scores_seconds_and_differences():
    frame = pd.DataFrame({"mIoU": [0.51234], "train (s)": [612.6], "AE − CAM": [0.0412], "note": ["x"]})
    html = tables.show(frame, "a caption").to_html()
    assert "0.512" in html and "613" in html and "+0.041" in html and "a caption" in html


def test_the_real_records_give_readable_tables():
    """The records in benchmarks/: every appendix table at most ~10 rows and 6 columns, row names
    without internal ids (this runs on whatever records the repository holds)."""
    shown = [tables.calibration_table(records.design_record("calibration")),
             *tables.book_recipe_tables(records.design_record("book_recipe")),
             tables.segmenter_study_table(records.design_record("segmenter_recipe")),
             tables.psl_design_table(records.design_record("psl_design")),
             tables.body_recognition_table(records.design_record("body_recognition")),
             tables.latest_book_times(tables.book_time_runs(records.design_record("book_time")))]
    designs = tables.erasing_designs(records.design_record("erasing_design"))
    shown += [tables.erasing_scene_table(designs), tables.erasing_recipe_table(designs, 0.34)]
    for table in shown:
        assert len(table) <= 10 and len(table.columns) <= 6, table
        assert not any(mark in str(name) for name in table.index for mark in INTERNAL), table.index


def test_the_books_erasing_changes_are_read_from_the_default_profile():
    from aepsl.engine.config import notebook_runs

    changes = tables.book_erasing_changes()
    last = notebook_runs(records.BOOK_PROFILE, "02_erasing")[-1]
    paper = tables.paper_erasing()
    assert changes == {k: last[k] for k in tables.ERASING_RECIPE if k in last and last[k] != paper[k]}
    assert 0 < records.book_parameters("00_data")["class_hue"] <= 1      # the generator's field, filled in
    assert "mine_threshold" in records.book_parameters("02_erasing")


def test_saved_names_keeps_the_order_and_only_what_a_stage_saved(tmp_path):
    for n in ("b", "a"):
        (tmp_path / f"{n}.png").write_bytes(b"")
    assert records.saved_names(tmp_path, ["a", "c", "b"]) == ["a", "b"]
    assert records.saved_names(tmp_path / "missing", ["a"]) == []
