"""The lessons as checks on a chain's numbers, the seeds study's tables, and its script."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from aepsl.book import lessons
from aepsl.engine.artifacts import REPO_DIR, write_json


def _numbers(**over) -> dict:
    base = {"val mAP": 0.97, "CAM": 0.50, "best AE": 0.56, "CAM + random walk": 0.55, "CAM + HFPL": 0.54,
            "AE segmenter": 0.60, "PSL": 0.65, "PSL++": 0.72, "oracle": 0.82}
    return {**base, **over}


def _held(numbers: dict) -> dict:
    return {name: check(numbers) for name, check in lessons.LESSONS}


def test_every_lesson_holds_on_a_chain_that_meets_it_and_fails_one_step_past_its_margin():
    assert all(_held(_numbers()).values())
    cases = {   # one number moved just past the lesson's margin -> that lesson alone fails
        "classifier val mAP ≥ 0.95": {"val mAP": 0.949},
        "best AE round ≥ CAM + 0.03": {"best AE": 0.529},
        "AE + PSL ≥ AE segmenter + 0.01": {"PSL": 0.609},
        "PSL++ ≥ AE + PSL + 0.01": {"PSL": 0.711},
        "PSL++ ≥ 0.85 × oracle": {"oracle": 0.72 / 0.85 + 0.001},
        "oracle ≥ 0.80": {"oracle": 0.799},
        "CAM + random walk ≥ CAM + 0.03": {"CAM + random walk": 0.529},
        "CAM + HFPL ≥ CAM + 0.03": {"CAM + HFPL": 0.529},
    }
    assert set(cases) == {name for name, _ in lessons.LESSONS}
    for name, over in cases.items():
        held = _held(_numbers(**over))
        assert held[name] is False, name
        others = {k: v for k, v in held.items() if k != name}
        assert all(others.values()), (name, others)


def test_a_missing_number_is_not_a_failed_lesson():
    held = _held(_numbers(**{"CAM + random walk": None, "oracle": float("nan")}))
    assert held["CAM + random walk ≥ CAM + 0.03"] is None
    assert held["oracle ≥ 0.80"] is None and held["PSL++ ≥ 0.85 × oracle"] is None
    table = lessons.lesson_table({"seed 0": _numbers(), "seed 1": _numbers(PSL=0.5)})
    assert table.loc["AE + PSL ≥ AE segmenter + 0.01"].tolist() == ["✓", "✗"]


def test_spread_is_mean_sd_worst_and_best_over_the_chains():
    chains = {"seed 0": _numbers(CAM=0.50), "seed 1": _numbers(CAM=0.54), "seed 2": _numbers(CAM=0.49, oracle=None)}
    spread = lessons.spread_table(chains)
    values = [0.50, 0.54, 0.49]
    assert spread.loc["CAM", "mean"] == pytest.approx(np.mean(values))
    assert spread.loc["CAM", "sd"] == pytest.approx(np.std(values, ddof=1))
    assert (spread.loc["CAM", "worst"], spread.loc["CAM", "best"]) == (0.49, 0.54)
    assert spread.loc["oracle", "seeds"] == 2 and spread.loc["CAM", "seeds"] == 3
    shown = lessons.spread_display(chains)
    assert shown.loc["CAM", "mean ± sd"] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _record(label, seed, numbers, profile="default", rev="abc1234def", cpu="CPU A", data_seed=0, day="2026-12-01"):
    return {"label": label, "profile": profile, "seed": seed, "data_seed": data_seed, "numbers": numbers,
            "lessons": {k: v for k, v in _held(numbers).items()}, "stage_revisions": [rev], "git_revision": rev,
            "cpu": cpu, "finished_at": f"{day}T10:00:00+0000"}


def test_study_reads_the_newest_record_of_each_seed_and_says_where_it_was_made():
    record = {"runs": [_record("book", 0, _numbers(CAM=0.1)), _record("book", 0, _numbers(CAM=0.5), day="2026-12-02"),
                       _record("book", 1, _numbers(), day="2026-12-01"), _record("other", 2, _numbers()),
                       _record("book", 0, _numbers(), profile="benchmarks/designs.yaml#scenes-1", data_seed=1)]}
    study = lessons.study_chains(record, "book")
    assert list(study) == [0, 1] and study[0]["numbers"]["CAM"] == 0.5
    assert list(lessons.scene_chains(record, "book")) == ["scenes 1"]
    note = lessons.provenance_note(list(study.values()), {"git_revision": "abc1234def", "host": {"cpu": "CPU A"}})
    assert "abc1234" in note and "CPU A" in note and "2026-12-01 to 2026-12-02" in note and "not among" not in note
    other = lessons.provenance_note(list(study.values()), {"git_revision": "fff0000", "host": {"cpu": "CPU B"}})
    assert "not among" in other and "fff0000" in other
    pair = lessons.before_after_table({"runs": [_record("old", 0, _numbers()), _record("new", 0, _numbers(PSL=0.5))]},
                                      "old", "new")
    assert list(pair.columns) == [("old", "seed 0"), ("new", "seed 0")]
    assert pair.loc["lessons held"].tolist() == ["6/6", "5/6"] and pair.loc["PSL"].tolist() == ["0.650", "0.500"]
    three = {"runs": [_record(label, k, _numbers()) for label in ("old", "new") for k in range(5)]}
    assert list(lessons.before_after_table(three, "old", "new", seeds=(0, 1, 2)).columns) == [
        (label, f"seed {k}") for label in ("old", "new") for k in range(3)]
    assert len(lessons.before_after_table(three, "old", "new").columns) == 10
    assert "seeds 0, 1, 2, computed" in lessons.study_provenance(three, ["old"], seeds=(0, 1, 2))
    assert "seeds 0, 1, 2, 3, 4, computed" in lessons.study_provenance(three, ["old"])


def test_chain_numbers_read_the_stage_records(tmp_path):
    def stage(name, metrics):
        write_json(tmp_path / "p" / name / "metrics.json", {"stage": name, "metrics": metrics, "params": {}})

    stage("cam", {"seed_miou": 0.5, "val_map": 0.96})
    stage("pseudo_masks", {"per_rounds": [{"miou": 0.5}, {"miou": 0.58}, {"miou": 0.57}]})
    stage("psl", {"eval": {"miou": 0.66}})
    stage("affinity_cam", {"miou_after": 0.6, "power_walk": {"miou": 0.52}})
    n = lessons.chain_numbers(tmp_path, "p")
    assert (n["val mAP"], n["CAM"], n["best AE"], n["PSL"]) == (0.96, 0.5, 0.58, 0.66)
    assert n["oracle"] is None and n["AE rounds"] == [0.5, 0.58, 0.57]
    assert n["CAM + random walk"] == 0.6 and n[lessons.WALK_POWER] == 0.52


def test_walk_table_sets_both_readings_of_the_walk_beside_the_cam():
    """One row per seed whose record has both readings; the gains are each walk less the CAM."""
    record = {"runs": [_record("book", 0, _numbers(CAM=0.50, **{"CAM + random walk": 0.61, lessons.WALK_POWER: 0.53})),
                       _record("book", 1, _numbers(CAM=0.54)),   # recorded before the walk was read both ways
                       _record("book", 2, _numbers(CAM=0.52, **{"CAM + random walk": 0.50, lessons.WALK_POWER: 0.49}))]}
    table = lessons.walk_table(record)
    assert table.index.tolist() == [0, 2]
    assert table.loc[0, "gain, cut after"] == pytest.approx(0.11) and table.loc[0, "gain, PSA background"] == pytest.approx(0.03)
    assert table.loc[2, "gain, cut after"] == pytest.approx(-0.02)
    assert lessons.walk_table({"runs": []}).empty


def test_seeds_script_records_a_finished_chain(tmp_path):
    """--record-only on a chain whose records exist: one record with its numbers and lessons."""
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps({"common": {"profile": "p", "seed": 0, "artifacts_root": str(tmp_path / "art"),
                                              "data_root": str(tmp_path / "data")},
                                   "notebooks": {"00_data": {}, "01_cam": {}}}))
    write_json(tmp_path / "art" / "p" / "cam" / "metrics.json",
               {"stage": "cam", "metrics": {"seed_miou": 0.5, "val_map": 0.97}, "params": {"profile": "p"},
                "wall_time_s": 12.0, "cpu_time_s": 20.0, "git_revision": "1234567"})
    out = tmp_path / "seeds.json"
    res = subprocess.run([sys.executable, "benchmarks/seeds.py", "--profile", str(profile), "--seeds", "0",
                          "--record-only", "--record", str(out)], cwd=REPO_DIR, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads(out.read_text())["runs"]
    assert len(rec) == 1 and rec[0]["numbers"]["CAM"] == 0.5 and rec[0]["stages_wall_s"] == 12.0
    assert rec[0]["lessons"]["classifier val mAP ≥ 0.95"] is True
    assert rec[0]["lessons"]["best AE round ≥ CAM + 0.03"] is None      # no erasing ran
    assert rec[0]["stage_revisions"] == ["1234567"] and not math.isnan(rec[0]["stages_cpu_s"])


def test_a_chapter_sentence_gives_each_range_and_names_the_seeds_where_a_lesson_failed():
    record = {"runs": [_record("book", 0, _numbers(CAM=0.50)), _record("book", 1, _numbers(CAM=0.52)),
                       _record("book", 2, _numbers(CAM=0.52, **{"best AE": 0.54}))]}
    text = lessons.seeds_note(record, ["CAM", "best AE"], ["best AE round ≥ CAM + 0.03"])
    assert "3 training seeds" in text and "CAM 0.500–0.520" in text and "best AE 0.540–0.560" in text
    assert "held on 2 of 3 seeds (not on seed 2)" in text
    assert lessons.seeds_note(record, ["CAM"], page_profile="quick") == ""
    assert "make seeds" in lessons.seeds_note({"runs": record["runs"][:1]}, ["CAM"])
    with pytest.raises(KeyError):
        lessons.seeds_note(record, ["CAM"], ["no such lesson"])


def test_study_bars_hold_by_share_and_mean_and_name_the_failing_seeds():
    ok = {f"seed {k}": _numbers() for k in range(5)}   # erasing +0.06 everywhere, every bar met
    bars = lessons.study_bars(ok)
    assert (bars["claim holds"] == "✓").all()
    assert lessons.study_bars_note(bars).startswith("Every claim holds")
    erasing = "erasing: best AE − CAM"
    assert bars.loc[erasing, "mean"] == pytest.approx(0.06)
    # one seed under the erasing margin: 4 of 5 is enough, as long as the mean stays >= 0.04
    one_low = {**ok, "seed 2": _numbers(**{"best AE": 0.52})}
    row = lessons.study_bars(one_low).loc[erasing]
    assert row["held"] == "4/5" and row["claim holds"] == "✓" and row["failed on"] == "seed 2"
    # the same seed, and the mean under 0.04: the claim fails, the note names the seed and the mean
    low_mean = {k: _numbers(**{"best AE": 0.535}) for k in ok} | {"seed 2": _numbers(**{"best AE": 0.52})}
    bars = lessons.study_bars(low_mean)
    assert bars.loc[erasing, "claim holds"] == "✗"
    note = lessons.study_bars_note(bars)
    assert "seed 2" in note and f"{bars.loc[erasing, 'mean']:+.3f}" in note
    # two seeds under the margin: fewer than 4 of 5
    two_low = {**one_low, "seed 3": _numbers(**{"best AE": 0.52})}
    assert lessons.study_bars(two_low).loc[erasing, "claim holds"] == "✗"
    # the every-seed bars fail on one seed; the ratio bar uses the oracle
    walk = lessons.study_bars({**ok, "seed 4": _numbers(**{"CAM + random walk": 0.52})})
    assert walk.loc["random walk − CAM", "claim holds"] == "✗"
    assert walk.loc["random walk − CAM", "failed on"] == "seed 4"
    ratio = lessons.study_bars({**ok, "seed 1": _numbers(oracle=0.72 / 0.85 + 0.001)})
    assert ratio.loc["PSL++ / oracle", "claim holds"] == "✗"
    # a chain without the number neither holds nor fails
    missing = lessons.study_bars({**ok, "seed 4": _numbers(**{"CAM + HFPL": None})})
    assert missing.loc["HFPL − CAM", "held"] == "4/4"
    shown = lessons.study_bars_display(bars, low_mean)
    assert list(shown.columns) == ["0", "1", "2", "3", "4", "mean", "holds"]
    row = shown.loc["erasing: best AE − CAM ≥ 0.03 on 4 of 5, mean ≥ 0.04"]
    assert row["2"] == "+0.020" and row["holds"] == "✗"
    assert shown.loc["PSL++ / oracle ≥ 0.85 on every seed", "0"] == "0.878"


def test_study_time_note_counts_only_chains_timed_alone_from_empty():
    def run(seed, wall, stages, units, load, label="book"):
        return {"label": label, "profile": "default", "seed": seed, "chain_wall_s": wall, "stages_wall_s": stages,
                "reference_units": units, "load_max": load, "cpu": "CPU A", "cores": 2}

    record = {"runs": [run(3, 2000.0, 2000.0, 500.0, 2.0),     # an older record of seed 3: not counted
                       run(3, 900.0, 880.0, 180.0, 2.0), run(4, 840.0, 830.0, 200.0, 3.5),
                       run(1, 400.0, 2000.0, 80.0, 2.0),      # reused finished stages
                       run(5, 1200.0, 1180.0, 260.0, 6.3),    # beside other work
                       run(6, 900.0, 900.0, 180.0, 2.0, label="other")]}
    note = lessons.study_time_note(record, chains=7)
    assert "14-15 minutes" in note and "180-200 reference units" in note and "2 chains timed alone" in note
    assert f"{7 * 870 / 3600:.1f} hours" in note and f"{7 * 190:,.0f} reference units" in note
    assert lessons.study_time_note({"runs": [run(1, 400.0, 2000.0, 80.0, 2.0)]}) == ""


def test_fourth_round_note_gives_the_fourth_rounds_change_against_the_chains_spread():
    def chain(seed, rounds, data_seed=0, profile="default"):
        return _record("book", seed, {**_numbers(), "AE rounds": rounds}, profile=profile, data_seed=data_seed)

    record = {"runs": [chain(0, [0.40, 0.50, 0.55, 0.56]), chain(1, [0.40, 0.50, 0.60, 0.59]),
                       chain(2, [0.40, 0.50, 0.58]),   # three rounds: not counted
                       chain(0, [0.40, 0.50, 0.57, 0.575], data_seed=1, profile="designs.yaml#scenes-1")]}
    note = lessons.fourth_round_note(record)
    assert "3 chains" in note and "-0.010 to +0.010 mIoU" in note
    sd = float(np.std([0.55, 0.60, 0.57], ddof=1))
    assert f"less than the three-round masks differ between chains (sd {sd:.3f})" in note
    record["runs"][0] = chain(0, [0.40, 0.50, 0.55, 0.65])   # a fourth round that moves more than the spread
    assert "less than" not in lessons.fourth_round_note(record)
    assert lessons.fourth_round_note({"runs": [chain(2, [0.40, 0.50, 0.58])]}) == ""
