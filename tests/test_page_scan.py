"""Pages only call, draw and explain: a scan of every notebook's code cells for model loading or
inference, file-existence checks and comparisons with a profile name, and of its markdown cells
for words about how the project was made rather than what it is."""
from __future__ import annotations

import re

import jupytext
import pytest

from aepsl.engine.artifacts import REPO_DIR

NOTEBOOK_DIR = REPO_DIR / "notebooks"
NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
PROFILES = sorted(p.stem for p in (NOTEBOOK_DIR / "params").glob("*.yaml"))
# "voc" also names a data source (``source == "voc"``): a comparison with it counts only when
# it compares the profile itself (the rule on ``profile ==`` below)
_NAMES = "|".join(map(re.escape, [p for p in PROFILES if p != "voc"] or ["default", "quick"]))

# what a page's code may not do, each with the reason a failure names
CODE_RULES = [
    (re.compile(r"\btorch\.load\s*\("), "loads a model (torch.load)"),
    (re.compile(r"\.load_state_dict\s*\("), "loads a model (load_state_dict)"),
    (re.compile(r"\bload_(segmenter|affinity_net|model)\s*\("), "loads a model"),
    (re.compile(r"\bbuild_(segmenter|affinity_net|model|backbone|classifier)\s*\("), "builds a model"),
    (re.compile(r"\b(LargeFOVSegmenter|AffinityNet|CAMClassifier)\s*\("), "builds a model"),
    (re.compile(r"\.predict\s*\("), "runs model inference (.predict)"),
    (re.compile(r"\baffinity_to_pixel\s*\("), "runs model inference (affinity_to_pixel)"),
    (re.compile(r"\bcrf_(batch|refine|labels)\s*\("), "runs the dense CRF"),
    (re.compile(r"\bpick_device\s*\("), "picks a device for inference (pick_device)"),
    (re.compile(r"\.exists\s*\("), "checks whether a file exists (.exists())"),
    (re.compile(r"\.is_(dir|file)\s*\("), "checks whether a file exists (.is_dir() / .is_file())"),
    (re.compile(r"\bprofile\s*(==|!=)|(==|!=)\s*profile\b"), "compares the profile name"),
    (re.compile(r"\bprofile\s+(not\s+)?in\b"), "compares the profile name"),
    (re.compile(rf"(==|!=)\s*[\"']({_NAMES})[\"']|[\"']({_NAMES})[\"']\s*(==|!=)"),
     "compares with a profile name"),
]

def _cells(name: str, kind: str):
    nb = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    return [c for c in nb.cells if c.cell_type == kind]


def code_hits(source: str) -> list[tuple[int, str, str]]:
    """(line number within the cell, the reason, the line) of every rule a code cell breaks;
    comments are not code."""
    hits = []
    for i, line in enumerate(source.splitlines(), start=1):
        code = line.split("#", 1)[0] if "#" in line and not re.search(r"[\"'][^\"']*#", line) else line
        for rule, why in CODE_RULES:
            if rule.search(code):
                hits.append((i, why, line.strip()))
    return hits


def _where(name: str, cell_index: int, line: int) -> str:
    return f"notebooks/{name}.py, code cell {cell_index}, line {line}"


def test_every_numbered_notebook_is_scanned():
    assert len(NOTEBOOKS) >= 10 and "04_psl" in NOTEBOOKS and "06_affinity" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_code_cells_only_call_draw_and_explain(name):
    found = [f"{_where(name, k, i)}: {why}: {line}"
             for k, cell in enumerate(_cells(name, "code"), start=1)
             if "parameters" not in cell.metadata.get("tags", [])
             for i, why, line in code_hits(cell.source)]
    assert not found, "a page computes what a stage or a tested package function should:\n" + "\n".join(found)


@pytest.mark.parametrize("line, why", [
    ("model, _ = psl.load_segmenter(folder)", "loads a model"),
    ("state = torch.load(path)", "torch.load"),
    ("net.load_state_dict(state)", "load_state_dict"),
    ("probs = psl.predict(model, x, 0.5)", ".predict"),
    ("refined = crf_batch(images, probs)", "dense CRF"),
    ("dev = pick_device(device)", "pick_device"),
    ("model = randomwalk.build_affinity_net(cfg)", "builds a model"),
    ("if (folder / 'x.png').exists():", ".exists()"),
    ("others = [s for s in runs if (root / s).is_dir()]", ".is_dir()"),
    ('if profile == "default" and ok:', "profile"),
    ("if profile != other:", "profile"),
    ('show = "quick" != name', "profile name"),
    ('if name == "extended":', "profile name"),
    ('if profile == "voc":', "profile"),
])
def test_the_scan_finds_each_kind_of_computation(line, why):
    hits = code_hits(line)
    assert hits and any(why in h[1] for h in hits), (line, hits)


@pytest.mark.parametrize("line", [
    "records.saved_mask_rows(root, profile, tree, names, columns)",
    "display(tables.parameters_table(params))",
    "# the stage saved these; no model is loaded here (torch.load is the stage's)",
    'f"`notebooks/params/{profile}.yaml`"',
    "record = psl.run(params)",
    'kind = "images" if source == "voc" else "scenes"',
])
def test_the_scan_leaves_calls_and_comments_alone(line):
    assert code_hits(line) == []
