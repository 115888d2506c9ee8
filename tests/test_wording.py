"""The project speaks of itself alone, its README stays short and generated where it quotes a
record, and the decisions appendix's readers give a sentence or a table for every record."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from aepsl.book import lessons, notes, readme
from aepsl.engine.artifacts import REPO_DIR

# words of how the project was made, not of what it is (every tracked file, notebooks included,
# is scanned). The words are joined from parts so that this file does not name them itself;
# pytest's scope="..." and subprocess's start_new_session are Python's own words and are allowed.
_SESS, _ISS, _DES = "sess" + "ion", "iss" + "ue", "DES" + "IGN"
PROCESS_WORDS = re.compile(rf"\b{_SESS}s?\b|\b{_ISS}s? ?#?\d+|\b(previous|earlier) (machine|{_SESS})s?\b"
                           rf"|{_DES}\.md|\bhelpers?\b|\bagents?\b", re.IGNORECASE)
ALLOWED = re.compile(rf"""scope=["']{_SESS}["']""")
THIS_FILE = Path(__file__).resolve().relative_to(REPO_DIR).as_posix()


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_DIR, capture_output=True, check=True).stdout
    files = []
    for name in out.decode().split("\0"):
        path = REPO_DIR / name
        if not name or name == THIS_FILE or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" in head:   # binary (images, weights)
            continue
        files.append(path)
    return files


def process_word_hits(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line of ``text`` that names how the project was made."""
    hits = []
    for i, line in enumerate(text.splitlines(), 1):
        if PROCESS_WORDS.search(ALLOWED.sub("", line)):
            hits.append((i, line.strip()))
    return hits


def test_process_words_are_found():
    line = f"see {_ISS} 16 and the previous " + "machine"
    assert process_word_hits(line + "\nclean line") == [(1, line)]
    assert process_word_hits(f"as {_DES}.md says") and process_word_hits("a figure " + "helper")
    assert process_word_hits(f"in {_SESS} 12") and process_word_hits("measured on an earlier " + "machine")
    assert not process_word_hits(f'@pytest.fixture(scope="{_SESS}")')
    assert not process_word_hits("Popen(cmd, start_new_session=True)")
    assert not process_word_hits("the issue is the CAM's spread; an agentless design")


def test_no_process_words_in_the_repository():
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    hits = []
    for path in files:
        text = path.read_text(errors="replace")
        hits += [f"{path.relative_to(REPO_DIR)}:{n}: {line[:120]}" for n, line in process_word_hits(text)]
    assert not hits, f"{len(hits)} lines name how the project was made:\n" + "\n".join(hits)


def test_readme_is_short_and_names_no_missing_file():
    text = (REPO_DIR / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (REPO_DIR / link).exists(), f"README links to {link}, which is not in the repository"
    assert "make book" in text and "make test" in text
    assert text.index("make book") < text.index("## Profiles")


def test_readme_times_are_generated_from_the_record():
    text = (REPO_DIR / "README.md").read_text()
    assert readme.with_times(text) == text, "the README's times are stale: run python -m aepsl.book.readme"
    block = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0]
    run = notes.latest_book_time(REPO_DIR / readme.BOOK_TIME, "default")
    if run is not None:
        assert f"{round(run['wall_s']):,} s" in block


def test_times_block_follows_the_record(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    record = {"runs": [
        {"profile": "default", "wall_s": 700.4, "cpu_s": 1300.6, "cores": 2, "finished_at": "2026-01-01T10:00:00"},
        {"profile": "default", "wall_s": 812.6, "cpu_s": 1500.2, "cores": 2, "finished_at": "2026-01-02T10:00:00"}]}
    (tmp_path / readme.BOOK_TIME).write_text(json.dumps(record))
    block = readme.times_block(tmp_path)
    assert "813 s" in block and "1,500 s CPU" in block and "700 s" not in block
    assert "no timed run recorded yet (`make book-time PROFILE=extended`)" in block   # no extended run
    assert "no timed run recorded yet (`python benchmarks/suite_time.py`)" in block    # no test record
    (tmp_path / readme.TEST_TIME).write_text(json.dumps({"runs": [
        {"command": "make test", "wall_s": 540.2, "cpu_s": 900.0, "setup_s": 150, "tests_s": 361.2, "passed": 410,
         "cores": 2, "cpu": "Some CPU", "reference_s": {"before": 4.0, "after": 5.0},
         "finished_at": "2026-01-03T10:00:00"}]}))
    block = readme.times_block(tmp_path)
    assert "540 s in all, set-up 150 s, suite 361 s, 410 passed (120 reference units, 2 cores, Some CPU" in block
    text = f"# x\n{readme.BEGIN}\nSTALE\n{readme.END}\ntail\n"
    new = readme.with_times(text, tmp_path)
    assert "STALE" not in new and new.endswith(f"{readme.END}\ntail\n") and "813 s" in new
    with pytest.raises(ValueError):
        readme.with_times("no markers", tmp_path)


def test_times_block_without_a_record(tmp_path):
    block = readme.times_block(tmp_path)
    assert not re.search(r"\d+ s\b", block)
    assert block.count("no timed run recorded yet") == 3   # the default book, the extended book, the test suite


# ------------------------------------------------------------------ the decisions appendix

BENCH = REPO_DIR / "benchmarks"


def test_missing_records_give_the_command(tmp_path):
    gone = tmp_path / "none.json"
    for note in (notes.body_recognition_note(gone), notes.cam_scales_note(gone), notes.round1_reuse_note(gone),
                 notes.oracle_drop_note(gone), notes.test_windows_note(gone, gone), notes.walk_memory_note(gone),
                 notes.time_budget_note(gone)):
        assert note.startswith("No record yet: `") and "none.json" in note
    for table in (notes.classes_table(gone), notes.erasing_recipe_table(gone), notes.segmenter_recipe_table(gone),
                  notes.psl_design_table(gone), notes.segmenter_budget_table(gone)):
        assert table is None
    (tmp_path / "bad.json").write_text("[1, 2")
    assert notes.read_record(tmp_path / "bad.json") is None
    assert notes.book_numbers_note(tmp_path, "default") == ""


def test_notes_quote_their_record(tmp_path):
    path = tmp_path / "book_time.json"
    path.write_text(json.dumps({"runs": [
        {"profile": "default", "wall_s": 600.2, "cpu_s": 1100.0, "cores": 2, "peak_rss_mib": 1536,
         "finished_at": "2026-02-03T00:00:00", "stages": {"cam": {"wall_s": 71.6}, "erasing/round1": {"wall_s": 1.2}}},
        {"profile": "extended", "wall_s": 9999, "finished_at": "2026-03-01"}]}))
    assert "600 s" in notes.time_budget_note(path) and "1.5 GiB" in notes.time_budget_note(path)
    assert "9,999 s" in notes.time_budget_note(path, "extended")
    assert "72 s" in notes.round1_reuse_note(path) and "1 s" in notes.round1_reuse_note(path)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"default": {"profile": "default", "rounds": [
        {"round": 1, "val_map": 0.9, "val_map_discs_erased": 0.3}, {"round": 2, "val_map": 0.5, "val_map_discs_erased": 0.8}]}}))
    note = notes.body_recognition_note(body)
    assert "0.900" in note and "0.300" in note and "0.800" in note


def test_erasing_recipe_table_groups_seeds(tmp_path):
    def rec(prior, thr, seed, prec, gain, hue=0.34):
        return {"recipe": {"mine_prior": prior, "mine_threshold": thr, "init": "fresh"}, "scenes": {"class_hue": hue},
                "seed": seed, "ae_best_minus_cam": gain, "rounds": [{"round": 2, "region_precision": prec}]}
    path = tmp_path / "erasing.json"
    path.write_text(json.dumps({"a": rec(0.0, 0.5, 1, 0.5, -0.01), "b": rec(0.0, 0.5, 0, 0.6, 0.02),
                                "c": rec(0.2, 0.55, 0, 0.7, 0.05), "d": rec(0.0, 0.5, 0, 0.1, 0.1, hue=1.0)}))
    table = notes.erasing_recipe_table(path)
    assert list(table["recipe"]) == ["the paper's: at 0.5, no prior", "at 0.55, prior 0.2 (book)"]
    assert list(table.columns) == ["recipe", "round-2 precision", "AE − CAM"]
    assert table.loc[0, "round-2 precision"] == "0.600 / 0.500" and table.loc[0, "AE − CAM"] == "+0.020 / -0.010"


def test_psl_design_table_rows_and_seeds(tmp_path):
    path = tmp_path / "psl.json"
    path.write_text(json.dumps({
        "x": {"profile": "default", "seed": 0, "stage": "ae_segmenter", "miou": 0.5},
        "y": {"profile": "default", "seed": 0, "stage": "psl", "design": "the paper's PSL on the book's masks",
              "online_pixels": "labelled", "miou": 0.49},
        "v": {"profile": "default", "seed": 0, "stage": "psl_plus_plus_all", "online_pixels": "all", "miou": 0.7},
        "u": {"profile": "default", "seed": 0, "stage": "psl_warm3", "online_pixels": "labelled",
              "online_warmup": 3, "miou": 0.48},
        "z": {"profile": "default_seed1", "seed": 1, "stage": "psl_crf", "miou": 0.61},
        "w": {"profile": "other", "seed": 0, "stage": "psl_crf", "miou": 0.9}}))
    table = notes.psl_design_table(path).set_index("online map")
    assert list(table.columns) == ["PSL, seed 0", "PSL, seed 1", "PSL++, seed 0"]
    assert table.loc["the paper's Ŝ", "PSL, seed 0"] == "0.490"
    assert table.loc["Ŝ refined by the CRF", "PSL, seed 1"] == "0.610"
    assert table.loc["Ŝ on every pixel", "PSL++, seed 0"] == "0.700"
    assert table.loc["3-epoch warm-up on S", "PSL, seed 0"] == "0.480"
    assert table.loc["AE segmenter (no Ŝ)", "PSL++, seed 0"] == "–"
    assert "0.900" not in table.to_string()


def _or_none(table):
    return table if len(table) else None


@pytest.mark.parametrize("make", [
    lambda: notes.classes_table(BENCH / "calibration.json"),
    lambda: notes.erasing_recipe_table(BENCH / "erasing_design.json"),
    lambda: notes.segmenter_recipe_table(BENCH / "segmenter_recipe.json"),
    lambda: notes.psl_design_table(BENCH / "psl_design.json"),
    lambda: notes.segmenter_budget_table(BENCH / "book_recipe.json"),
    lambda: _or_none(lessons.walk_table(notes.read_record(BENCH / "seeds.json")))])
def test_decision_tables_fit_the_page(make):
    table = make()
    if table is None:   # a record being reshaped: the page then names its command
        return
    assert isinstance(table, pd.DataFrame) and 0 < len(table) <= 10 and len(table.columns) <= 5
    for col in table.columns:
        assert len(str(col)) <= 20
