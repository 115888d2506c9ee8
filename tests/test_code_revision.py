"""The cache key holds the code revision: a stage's hashed parameters include a hash of the
source of its module and every aepsl module it imports (aepsl.engine.artifacts.code_hash)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aepsl.engine.artifacts import PACKAGE_DIR, code_hash, code_modules, read_json


def _package(root: Path) -> Path:
    """A small package named aepsl: a imports b (relatively) and sub.c; d stands alone."""
    pkg = root / "aepsl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""The package."""\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text('"""Module a."""\nfrom . import b\nfrom .sub.c import C\n\n\n'
                              'def f(x):\n    """Double."""\n    return 2 * x  # twice\n')
    (pkg / "b.py").write_text("Y = 1\n")
    (pkg / "sub" / "c.py").write_text("def C():\n    from ..b import Y\n    return Y\n")
    (pkg / "d.py").write_text("Z = 3\n")
    return pkg


def test_code_modules_follow_imports(tmp_path):
    pkg = _package(tmp_path)
    assert list(code_modules("aepsl.a", pkg)) == ["aepsl", "aepsl.a", "aepsl.b", "aepsl.sub", "aepsl.sub.c"]
    assert list(code_modules("aepsl.d", pkg)) == ["aepsl", "aepsl.d"]
    with pytest.raises(ValueError, match="aepsl.nothing"):
        code_modules("aepsl.nothing", pkg)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_code_hash_changes_with_code_not_with_comments(tmp_path):
    pkg = _package(tmp_path)
    h = code_hash("aepsl.a", pkg)
    assert len(h) == 16 and h == code_hash("aepsl.a", pkg)
    # comments, docstrings, blank lines and line breaks do not count
    _edit(pkg / "a.py", "# twice", "# two times, see the docs")
    _edit(pkg / "a.py", '"""Double."""', '"""Double x.\n\n    More words."""')
    _edit(pkg / "a.py", "\n\n\ndef f", "\n\n\n\n# a comment\ndef f")
    assert code_hash("aepsl.a", pkg) == h
    # a module a does not import does not count
    _edit(pkg / "d.py", "Z = 3", "Z = 4")
    assert code_hash("aepsl.a", pkg) == h
    # code does: in a, in what a imports, and in what that imports lazily (inside a function)
    hashes = {h}
    for path, old, new in [(pkg / "sub" / "c.py", "return Y", "return Y + 0"),
                           (pkg / "b.py", "Y = 1", "Y = 2"),
                           (pkg / "a.py", "2 * x", "x * 2"),
                           (pkg / "__init__.py", '"""The package."""', '"""The package."""\nVERSION = 2')]:
        _edit(path, old, new)
        hashes.add(code_hash("aepsl.a", pkg))
    assert len(hashes) == 5


def test_stages_depend_on_their_own_code_only():
    cam = set(code_modules("aepsl.methods.cam"))
    assert {"aepsl.methods.cam", "aepsl.engine.train", "aepsl.methods.metrics", "aepsl.data.voc", "aepsl.models.backbones"} <= cam
    assert not cam & {"aepsl.methods.psl", "aepsl.methods.erasing", "aepsl.methods.crf", "aepsl.engine.run_notebooks", "aepsl.book.tables", "aepsl.book.records", "aepsl.book.notes", "aepsl.book.viz",
                      "aepsl.book.check"}
    psl = set(code_modules("aepsl.methods.psl"))
    assert {"aepsl.methods.psl", "aepsl.methods.crf", "aepsl.models.segmenter", "aepsl.engine.train"} <= psl
    assert not psl & {"aepsl.methods.erasing", "aepsl.methods.cam", "aepsl.methods.hfpl", "aepsl.methods.hfpl_compare"}
    assert "aepsl.data.scenes" in code_modules("aepsl.data.stage")


def test_stage_records_its_code_hash(scene_tree, tmp_path):
    from aepsl.data import stage

    record = stage.run({"profile": "code", "data_root": str(scene_tree), "artifacts_root": str(tmp_path),
                        "source": "voc", "device": "cpu"}, progress=False)
    assert record["params"]["code"] == record["code_hash"] == code_hash("aepsl.data.stage")


def _run_data_stage(pkg_root: Path, tree: Path, art: Path) -> None:
    code = ("import json, sys\nfrom aepsl.data import stage\n"
            "assert stage.__file__.startswith(sys.argv[2]), stage.__file__\n"
            "stage.run(json.loads(sys.argv[1]), progress=False)")
    params = {"profile": "code", "data_root": str(tree), "artifacts_root": str(art), "source": "voc", "device": "cpu"}
    env = {**os.environ, "PYTHONPATH": str(pkg_root), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(params), str(pkg_root)], env=env,
                            cwd=pkg_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_changed_code_invalidates_the_cache(scene_tree, tmp_path):
    """A copy of the package runs the data stage three times: unchanged code reuses the
    artifacts, a comment edit too, a code edit in a module the stage imports recomputes them."""
    pkg_root = tmp_path / "clone"
    shutil.copytree(PACKAGE_DIR, pkg_root / "aepsl", ignore=shutil.ignore_patterns("__pycache__"))
    art = tmp_path / "art"
    metrics = art / "code" / "data" / "metrics.json"

    _run_data_stage(pkg_root, scene_tree, art)
    first, first_stat = metrics.read_bytes(), metrics.stat().st_mtime_ns
    _run_data_stage(pkg_root, scene_tree, art)                   # nothing changed: reused
    assert metrics.read_bytes() == first and metrics.stat().st_mtime_ns == first_stat

    voc = pkg_root / "aepsl" / "data" / "voc.py"
    voc.write_text(voc.read_text() + "\n# a comment changes nothing\n")
    _run_data_stage(pkg_root, scene_tree, art)                   # a comment: still reused
    assert metrics.read_bytes() == first and metrics.stat().st_mtime_ns == first_stat

    voc.write_text(voc.read_text() + "\nCODE_REVISION_TEST = 1\n")
    _run_data_stage(pkg_root, scene_tree, art)                   # code: recomputed
    second = read_json(metrics)
    old = json.loads(first)
    assert second["finished_at"] >= old["finished_at"] and metrics.stat().st_mtime_ns != first_stat
    assert second["params"]["code"] != old["params"]["code"]
    assert second["params_hash"] != old["params_hash"]
    assert {k: v for k, v in second["params"].items() if k != "code"} == \
        {k: v for k, v in old["params"].items() if k != "code"}
    assert second["metrics"] == old["metrics"]


def test_pinned_code_hash_ignores_later_edits(tmp_path):
    """A run pins its stages' code when it plans them: a file edited while it goes on does not
    change the hash (nor the revision) its later stages record; unpinned, the edit counts again."""
    from aepsl.engine.artifacts import git_revision, pin_code, unpin_code

    pkg = _package(tmp_path)
    before = code_hash("aepsl.a", pkg)
    pin_code(["aepsl.a"], pkg, load=False)
    try:
        revision = git_revision()
        _edit(pkg / "b.py", "Y = 1", "Y = 2")
        assert code_hash("aepsl.a", pkg) == before
        assert git_revision() == revision
        # a module the run did not pin is read from its files as before
        unpinned = code_hash("aepsl.d", pkg)
        _edit(pkg / "d.py", "Z = 3", "Z = 4")
        assert code_hash("aepsl.d", pkg) != unpinned
    finally:
        unpin_code()
    assert code_hash("aepsl.a", pkg) != before


def test_stage_runner_pins_the_code_of_its_planned_stages(monkeypatch):
    """``run_stages`` pins the modules of every stage it planned before the first one runs, and
    unpins them when it ends."""
    import contextlib

    from aepsl.engine import artifacts
    from aepsl.engine import run_stages as rs
    from aepsl.engine.registry import plan, stage_modules

    pinned = []

    @contextlib.contextmanager
    def spy(modules):
        pinned.append(sorted(modules))
        with artifacts.code_pinned(modules):
            assert artifacts._PINNED_REVISION   # the revision is pinned even for a plan of pages only
            yield

    monkeypatch.setattr(rs, "code_pinned", spy)
    runs = plan("quick", ["01_cam"])
    monkeypatch.setattr(rs, "plan", lambda *a, **k: [r for r in runs if r.entry.stage_function() is None])
    rs.run_stages("quick", progress=False)
    assert len(pinned) == 1 and not artifacts._PINNED_HASHES and not artifacts._PINNED_REVISION
    modules = stage_modules(plan("quick"))
    assert {"aepsl.methods.cam", "aepsl.methods.erasing", "aepsl.methods.psl"} <= set(modules)


def test_the_precision_is_part_of_the_cache_key(scene_tree, tmp_path, monkeypatch):
    """A stage computed in float32 is not reused under bfloat16 autocast (AEPSL_CPU_AMP=1); the
    same precision again reuses its run, and back in float32 the float32 run kept aside returns."""
    from aepsl.data import stage

    params = {"profile": "amp", "data_root": str(scene_tree), "artifacts_root": str(tmp_path), "source": "voc",
              "device": "cpu"}
    metrics = tmp_path / "amp" / "data" / "metrics.json"
    records = {}
    for value in ("0", "1", "1", "0"):
        monkeypatch.setenv("AEPSL_CPU_AMP", value)
        record = stage.run(params, progress=False)
        records.setdefault(value, []).append((record["params_hash"], record["finished_at"], metrics.stat().st_mtime_ns))
        assert record["params"]["precision"] == {"0": "float32", "1": "bfloat16"}[value]
    (f32, f32_at, _), (b16, b16_at, b16_time) = records["0"][0], records["1"][0]
    assert f32 != b16 and b16_at >= f32_at
    assert records["1"][1] == (b16, b16_at, b16_time)   # the same precision: reused, not written again
    assert records["0"][1][:2] == (f32, f32_at)          # back to float32: the float32 run itself
