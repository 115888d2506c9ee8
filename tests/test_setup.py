"""The set-up files: pins agree, CI calls the README's test command, the Makefile's targets, the
test processes share the expensive fixtures."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from aepsl.engine.artifacts import REPO_DIR


def _requirements() -> list[str]:
    lines = (REPO_DIR / "requirements.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def _conda_pip() -> list[str]:
    env = yaml.safe_load((REPO_DIR / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs one pip: section"
    return [str(p).strip() for p in pip[0]]


def _name(req: str) -> str:
    return re.split(r"[=<>!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_and_environment_agree():
    req, conda = _requirements(), _conda_pip()
    assert len(req) == len(set(req)) and len(conda) == len(set(conda)), "a pin is listed twice"
    assert set(req) == set(conda), (f"only in requirements.txt: {sorted(set(req) - set(conda))}; "
                                    f"only in environment.yml: {sorted(set(conda) - set(req))}")


def test_requirements_are_pinned():
    req = _requirements()
    assert req
    for r in req:
        assert "==" in r, f"{r} is not pinned to one version"
    names = [_name(r) for r in req]
    assert len(names) == len(set(names)), "a package is pinned twice"
    for needed in ("torch", "numpy", "papermill", "jupytext", "jupyter-book", "pytest", "pyyaml"):
        assert needed in names


def test_environment_python_and_pip():
    env = yaml.safe_load((REPO_DIR / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in deps
    assert any(d.startswith("python") for d in deps)


def test_ci_script_runs_make_test():
    ci = REPO_DIR / ".ci" / "run"
    assert ci.is_file()
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    text = ci.read_text()
    assert text.startswith("#!")
    commands = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert "make test" in commands


def _makefile() -> str:
    return (REPO_DIR / "Makefile").read_text()


@pytest.mark.parametrize("target", ["book", "test", "setup", "check-book", "chromium"])
def test_makefile_targets(target):
    text = _makefile()
    assert re.search(rf"^{target}:", text, re.M), f"no {target} target"
    phony = " ".join(re.findall(r"^\.PHONY:(.*)$", text, re.M)).split()
    assert target in phony


def test_makefile_recipes():
    text = _makefile()
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", text, re.M)
    assert test_recipe and "pytest" in test_recipe.group(1)
    book_recipe = re.search(r"^book:.*\n((?:\t.*\n)+)", text, re.M)
    assert book_recipe and "jupyter-book build" in book_recipe.group(1)
    assert re.search(r"^book:.*\bnotebooks\b", text, re.M), "book must depend on notebooks"
    assert re.search(r"^notebooks:.*\bsetup\b", text, re.M)
    assert re.search(r"^test:.*\bsetup\b", text, re.M)
    check = re.search(r"^check-book:(.*)\n((?:\t.*\n)+)", text, re.M)
    assert check and "chromium" in check.group(1).split() and "aepsl.book.check" in check.group(2)


def test_ci_installs_chromium_before_the_tests():
    lines = [ln.strip() for ln in (REPO_DIR / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    assert "make chromium" in lines and lines.index("make chromium") < lines.index("make test")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dry_run_test():
    result = subprocess.run(["make", "-n", "test"], cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pytest" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_make_test_runs_the_suite_in_processes_grouped_by_shared_fixture(target):
    result = subprocess.run(["make", "-n", target], cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "-m pytest" in ln)
    assert " -n 2 " in line and "--dist loadgroup" in line


GROUPED = '''
import os
import pytest


@pytest.fixture(scope="session")
def quick_run():            # stands in for conftest's: each process that uses it computes it
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.fixture(scope="module")
def trained():
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.fixture
def book(quick_run):
    return quick_run


@pytest.mark.parametrize("i", range(4))
def test_quick(quick_run, i):
    assert quick_run == os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("i", range(4))
def test_book(book, i):
    assert book == os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("i", range(4))
def test_trained(trained, i):
    assert trained == os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("i", range(8))
def test_free(i):
    pass
'''


def test_tests_sharing_an_expensive_fixture_run_in_one_process(tmp_path):
    """With `make test`'s --dist loadgroup, the tests that use quick_run (directly or not) run in
    one process, and those that use a module-scoped fixture of their file in one process: each
    such fixture is computed once (tests/conftest.py names the groups)."""
    shutil.copy(REPO_DIR / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-n", "2",
                             "--dist", "loadgroup", "test_grouped.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"^\[(gw\d)\] .*PASSED test_grouped\.py::(test_\w+)\[\d\](@\S+)?", result.stdout, re.M)
    assert len(ran) == 20, result.stdout[-3000:]
    workers = {}
    for worker, test, group in ran:
        workers.setdefault(test, set()).add(worker)
        assert group == {"test_quick": "@quick_run", "test_book": "@quick_run",
                         "test_trained": "@test_grouped.py", "test_free": ""}[test], (test, group)
    assert workers["test_quick"] == workers["test_book"] and len(workers["test_quick"]) == 1
    assert len(workers["test_trained"]) == 1
