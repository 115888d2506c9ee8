"""Atomic writes, the clean-up of failed and killed runs, stage folders of finished runs."""
from __future__ import annotations

import os

import pytest

from aepsl.artifacts import (StageRun, atomic_path, is_done, missing_ancestor, remove_stale_temps, stage_entry,
                             write_text)


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
