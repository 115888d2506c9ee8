"""Atomic writes, the clean-up of failed and killed runs, stage folders of finished runs."""
from __future__ import annotations

import os

import pytest

from aepsl.engine.artifacts import (StageRun, archived_name, atomic_path, current_metrics_files, is_done, load_metrics,
                             missing_ancestor, params_hash, remove_stale_temps, stage_entry, write_text)


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert list((tmp_path / "out").iterdir()) == []
    write_text(target, "whole")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("again")
    assert target.read_text() == "whole"            # the old file is untouched
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["metrics.json"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_remove_stale_temps(tmp_path):
    (tmp_path / "cams").mkdir()
    for name in (".checkpoint.pt.ab12.tmp.pt", "cams/.x.npy.cd34.tmp.npy", ".01_cam.ipynb.ef.tmp.ipynb"):
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / "checkpoint.pt").write_bytes(b"whole")
    assert remove_stale_temps(tmp_path, "01_cam.ipynb") == 1
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["checkpoint.pt"]


def test_missing_ancestor(tmp_path):
    assert missing_ancestor(tmp_path) is None
    assert missing_ancestor(tmp_path / "a" / "b" / "c") == tmp_path / "a"


@stage_entry
def _stage(folder, fail: bool) -> dict:
    run = StageRun(folder, "toy", {"profile": "p", "x": 1})
    (folder / "checkpoint.pt").write_bytes(b"epoch 1")
    if fail:
        raise ValueError("bad input")
    return run.finish()


def test_failed_stage_removes_the_folders_it_created(tmp_path):
    folder = tmp_path / "art" / "p" / "toy"
    with pytest.raises(ValueError, match="bad input"):
        _stage(folder, fail=True)
    assert not (tmp_path / "art").exists()
    record = _stage(folder, fail=False)
    assert is_done(folder, {"profile": "p", "x": 1}) and record["profile"] == "p"


def test_failed_stage_keeps_a_folder_that_existed(tmp_path):
    """E.g. the folder of a killed run, holding the checkpoint a rerun resumes from."""
    folder = tmp_path / "p" / "toy"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"epoch 1")
    with pytest.raises(ValueError):
        _stage(folder, fail=True)
    assert (folder / "checkpoint.pt").read_bytes() == b"epoch 1"


def test_a_killed_runs_leftovers_are_removed_when_the_stage_starts_again(tmp_path):
    folder = tmp_path / "p" / "toy"
    _stage(folder, fail=False)
    (folder / ".model.pt.zz.tmp.pt").write_bytes(b"half")        # what a kill -9 mid-write leaves
    run = StageRun(folder, "toy", {"profile": "p", "x": 1})
    assert not (folder / ".model.pt.zz.tmp.pt").exists()
    assert not (folder / "metrics.json").exists()                # no longer counts as finished
    assert not is_done(folder, {"profile": "p", "x": 1})
    run.finish()


@stage_entry
def _stage_x(folder, x: int, fail: bool = False, payload: str = "") -> dict:
    run = StageRun(folder, "toy", {"profile": "p", "x": x})
    (folder / "result.txt").write_text(payload or f"x={x}")
    if fail:
        raise ValueError("bad input")
    return run.finish()


def test_changed_parameters_move_the_old_results_aside(tmp_path):
    folder = tmp_path / "p" / "toy"
    _stage_x(folder, 1)
    old = archived_name(folder, params_hash({"profile": "p", "x": 1}))
    _stage_x(folder, 2)
    assert (folder / "result.txt").read_text() == "x=2" and is_done(folder, {"profile": "p", "x": 2})
    assert old.name.startswith("toy@") and (old / "result.txt").read_text() == "x=1"
    assert is_done(old, {"profile": "p", "x": 1})                      # kept whole, metrics and all
    # the live folder alone counts for later stages, the results and provenance
    assert current_metrics_files(tmp_path / "p") == [folder / "metrics.json"]
    # back to the first parameters: x=2 goes aside, x=1 is recomputed in the live folder
    _stage_x(folder, 1)
    assert (folder / "result.txt").read_text() == "x=1"
    assert (archived_name(folder, params_hash({"profile": "p", "x": 2})) / "result.txt").read_text() == "x=2"


def test_same_parameters_forced_rerun_stays_in_place(tmp_path):
    folder = tmp_path / "p" / "toy"
    _stage_x(folder, 1, payload="first")
    _stage_x(folder, 1, payload="second")
    assert (folder / "result.txt").read_text() == "second"
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["toy"]


def test_a_failed_run_with_new_parameters_gives_the_old_results_back(tmp_path):
    folder = tmp_path / "p" / "toy"
    _stage_x(folder, 1)
    with pytest.raises(ValueError, match="bad input"):
        _stage_x(folder, 2, fail=True)
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["toy"]
    assert (folder / "result.txt").read_text() == "x=1"
    assert load_metrics(folder)["params"]["x"] == 1


def test_a_stage_set_back_to_earlier_parameters_is_restored_not_recomputed(scene_tree, tmp_path, monkeypatch):
    """Parameters A, then B, then A again: the third run renames A's kept folder back into place
    (B's goes aside in its turn) and trains nothing."""
    from aepsl.methods import cam
    from test_interrupt import _cam_params

    root = tmp_path / "artifacts"
    a = {**_cam_params(scene_tree, root), "epochs": 1}
    b = {**a, "lr": 0.02}
    first = cam.run(a, progress=False)
    second = cam.run(b, progress=False)
    folder = root / a["profile"] / "cam"
    assert second["params_hash"] != first["params_hash"]
    calls = []
    monkeypatch.setattr(cam, "train_classifier", lambda *x, **k: calls.append(1) or (_ for _ in ()).throw(
        AssertionError("trained again")))
    again = cam.run(a, progress=False)
    assert calls == [] and again["finished_at"] == first["finished_at"]   # the kept record itself
    assert load_metrics(folder)["params_hash"] == first["params_hash"]
    assert is_done(archived_name(folder, second["params_hash"]), {**second["params"]})
    assert not archived_name(folder, first["params_hash"]).exists()
    # forced: computed again even though the kept run is in place
    monkeypatch.undo()
    forced = cam.run({**a, "force": True}, progress=False)
    assert forced["finished_at"] >= first["finished_at"] and forced["params_hash"] == first["params_hash"]


def test_an_incomplete_kept_run_is_not_restored(tmp_path):
    from aepsl.engine.artifacts import restore_archived

    folder = tmp_path / "p" / "toy"
    _stage_x(folder, 1)
    _stage_x(folder, 2)
    kept = archived_name(folder, params_hash({"profile": "p", "x": 1}))
    (kept / "result.txt").unlink()                            # a file its metrics.json counts is gone
    assert restore_archived(folder, {"profile": "p", "x": 1}) is None
    assert load_metrics(folder)["params"]["x"] == 2
    (kept / "result.txt").write_text("x=1")
    assert restore_archived(folder, {"profile": "p", "x": 1}) == kept
    assert load_metrics(folder)["params"]["x"] == 1 and (folder / "result.txt").read_text() == "x=1"
