"""The book a reader sees: the quick profile's executed notebooks built into the HTML book with
warnings as errors, then every page opened in headless Chromium (aepsl.book.check).

The book is built in a temporary folder from the test run's quick profile (conftest.quick_run), so
the notebooks run once for this file and test_notebooks.py together. The browser part is
skipped, saying why, where Chromium or chromedriver is not installed (`make chromium`).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aepsl.book import check as bookcheck
from aepsl.book import viz
from aepsl.engine.artifacts import REPO_DIR

pytestmark = pytest.mark.notebooks   # builds the quick book from the executed quick profile

try:
    bookcheck.find_chromium()
    NO_BROWSER = ""
except bookcheck.ChromiumMissing as exc:
    NO_BROWSER = str(exc)
needs_browser = pytest.mark.skipif(bool(NO_BROWSER), reason=f"browser check skipped: {NO_BROWSER}")

BOOK = REPO_DIR / "book"


def _jupyter_book() -> str:
    local = Path(sys.executable).parent / "jupyter-book"
    return str(local) if local.exists() else (shutil.which("jupyter-book") or "jupyter-book")


@pytest.fixture(scope="module")
def quick_book(quick_run, tmp_path_factory) -> Path:
    """The book's sources with the quick run's executed notebooks, built to HTML with -W -n."""
    src = tmp_path_factory.mktemp("book") / "book"
    # the book's own sources (config, prose pages, any figures), not its outputs
    shutil.copytree(BOOK, src, ignore=shutil.ignore_patterns("_build", "notebooks", ".ipynb_checkpoints"))
    shutil.copytree(quick_run["artifacts"] / "notebooks", src / "notebooks")
    # the intro's pipeline map, from the quick run's metrics (as `make book` draws it)
    viz.pipeline_figure(quick_run["artifacts"].parent, "quick", src / "figures" / "pipeline.png")
    result = subprocess.run([_jupyter_book(), "build", str(src), "--builder", "html", "-W", "-n", "--keep-going"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"jupyter-book build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return src


def test_quick_book_builds_every_page(quick_book):
    html = quick_book / "_build" / "html"
    pages = bookcheck.toc_pages(quick_book / "_toc.yml")
    assert pages[0] == "intro" and "notebooks/08_results" in pages
    missing = [p for p in pages if not (html / f"{p}.html").is_file()]
    assert not missing, f"pages in _toc.yml but not built: {missing}"


@needs_browser
def test_browser_check_of_the_quick_book(quick_book, tmp_path):
    shots = tmp_path / "screenshots"
    report = bookcheck.check_book(quick_book / "_build" / "html", quick_book / "_toc.yml", shots)
    pages = {p["page"]: p for p in report["pages"]}
    assert list(pages) == bookcheck.toc_pages(quick_book / "_toc.yml")
    assert report["problems"] == []
    assert all(p["loaded"] for p in pages.values())
    # every chapter that draws figures had images, and every one of them loaded
    table_pages = {"notebooks/09_provenance", "notebooks/11_decisions"}   # text and tables, no figure
    figure_pages = [p for p in pages if p.startswith("notebooks/") and p not in table_pages]
    assert figure_pages
    for page in figure_pages:
        assert pages[page]["images"] >= 1, f"{page}: no figure found"
        assert pages[page]["broken_images"] == []
    assert pages["notebooks/08_results"]["tables"] >= 1
    # the intro shows the pipeline map
    assert pages["intro"]["images"] >= 1 and pages["intro"]["broken_images"] == []
    # screenshots of every page, among them the intro, the erasing page and the results chapter
    for page in ("intro", "notebooks/02_erasing", "notebooks/08_results"):
        path = Path(pages[page]["screenshot"])
        assert path.parent == shots and path.is_file()
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.width >= 800 and img.height >= 600
            assert np.asarray(img.convert("L")).std() > 5, f"{path} is a blank picture"
    assert (shots / "report.json").is_file()


# --------------------------------------------------------------------------- the checker itself
def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(path)


def _page(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>")


@pytest.fixture
def small_site(tmp_path) -> tuple[Path, Path]:
    """A three-page site: an intro with a good image, a chapter, a results page with its table."""
    html = tmp_path / "html"
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nparts:\n  - caption: c\n    chapters:\n"
                   "      - file: notebooks/01_cam\n        sections:\n          - file: notebooks/01_more\n"
                   "      - file: notebooks/08_results\n")
    _png(html / "_images" / "good.png")
    _png(html / "_images" / "fig.png")
    _page(html / "intro.html", '<h1>Intro</h1><img src="_images/good.png">')
    _page(html / "notebooks" / "01_cam.html", '<h1>CAM</h1><img src="../_images/fig.png">')
    _page(html / "notebooks" / "01_more.html", '<h1>More</h1><img src="../_images/fig.png" loading="lazy">')
    _page(html / "notebooks" / "08_results.html",
          "<h1>Results</h1><table><thead><tr><th>method</th><th>mIoU</th></tr></thead>"
          "<tbody><tr><td>CAM</td><td>0.5</td></tr></tbody></table>")
    return html, toc


def test_toc_pages_reads_sections_in_order(small_site):
    _, toc = small_site
    assert bookcheck.toc_pages(toc) == ["intro", "notebooks/01_cam", "notebooks/01_more", "notebooks/08_results"]


@needs_browser
def test_check_passes_a_good_site(small_site):
    html, toc = small_site
    report = bookcheck.check_book(html, toc, screenshot_dir=None)
    assert [p["images"] for p in report["pages"]] == [1, 1, 1, 0]
    assert report["problems"] == []


@needs_browser
def test_check_lists_every_broken_image_missing_page_and_missing_table(small_site, tmp_path):
    html, toc = small_site
    (html / "_images" / "fig.png").unlink()                         # a figure two pages show
    _png(html / "_images" / "empty.png")
    (html / "_images" / "empty.png").write_bytes(b"")                # a file that is no image
    _page(html / "intro.html", '<link rel="stylesheet" href="_static/gone.css">'   # a missing stylesheet
          '<h1>Intro</h1><img src="_images/good.png"><img src="_images/empty.png">')
    (html / "notebooks" / "01_more.html").unlink()                  # a page that was not built
    _page(html / "notebooks" / "08_results.html", "<h1>Results</h1><p>no table</p>")
    with pytest.raises(bookcheck.BookCheckError) as err:
        bookcheck.check_book(html, toc, screenshot_dir=tmp_path / "shots")
    message = str(err.value)
    assert "intro: image did not load: _images/empty.png" in message
    assert "notebooks/01_cam: image did not load: ../_images/fig.png" in message
    assert "notebooks/01_more: page not built" in message
    assert "notebooks/08_results: the results chapter has no results table" in message
    assert f"intro: missing file: {(html / '_static' / 'gone.css').as_uri()}" in message
    assert "good.png" not in message
    assert "5 problem(s)" in message   # each broken thing once (fig.png is not also a missing file)
    # the pages that loaded still got their screenshots, and the report lists the problems
    assert (tmp_path / "shots" / "intro.png").is_file()
    assert (tmp_path / "shots" / "report.json").is_file()


@needs_browser
def test_check_lists_what_a_reader_must_not_see(small_site):
    html, toc = small_site
    _page(html / "notebooks" / "01_cam.html",
          '<main><h1>CAM</h1><img src="../_images/fig.png">'
          '<div class="output stderr"><pre>some log line</pre></div>'
          '<pre>train: 100%|██████████| 3/3 [00:01&lt;00:00,  2.91it/s]</pre>'
          '<p>FutureWarning: this will change</p>'
          '<p>saved to /tmp/pytest-7/book/x.png</p>'
          '<pre style="width: 200px; overflow-x: auto">' + "x = 1  # " + "y" * 120 + '</pre></main>')
    with pytest.raises(bookcheck.BookCheckError) as err:
        bookcheck.check_book(html, toc, screenshot_dir=None)
    message = str(err.value)
    for what in ("progress-bar text", "a Python warning", "an absolute path of one machine",
                 "a stderr output box", "a code line wider than its box"):
        assert f"notebooks/01_cam: {what}" in message, what
    assert "5 problem(s)" in message
    # a folded (hidden) long line is measured too; plain prose paths and 'warnings' are fine
    _page(html / "notebooks" / "01_cam.html",
          '<main><h1>CAM</h1><img src="../_images/fig.png"><p>no warnings; see artifacts/tmp/x and '
          'https://example.org/home/x</p><details><summary>code</summary><pre style="width: 200px">'
          + "z" * 200 + '</pre></details></main>')
    with pytest.raises(bookcheck.BookCheckError, match="1 problem"):
        bookcheck.check_book(html, toc, screenshot_dir=None)


@needs_browser
def test_check_lists_every_table_image_and_output_wider_than_the_column(small_site):
    html, toc = small_site
    column = '<main style="width: 600px; padding: 0 20px">'
    fits = ('<h1>CAM</h1><table><tr><th>stage</th><th>mIoU</th></tr><tr><td>cam</td><td>0.5</td></tr></table>'
            '<figure><img src="../_images/fig.png" style="width: 100%"><figcaption>a map</figcaption></figure>'
            '<div class="cell_output"><div class="output text_html" style="overflow-x: auto">'
            '<table style="width: 100%"><tr><td>a long cell that wraps inside the column as it should</td></tr>'
            '</table></div></div>')
    _page(html / "notebooks" / "01_cam.html", column + fits + '</main>')
    report = bookcheck.check_book(html, toc, screenshot_dir=None)
    assert report["problems"] == []
    assert report["pages"][1]["column_px"] == 600
    _page(html / "notebooks" / "01_cam.html", column + fits
          # a table in a scrolling wrapper: the wrapper fits, the table does not
          + '<div class="cell_output"><div class="output text_html" style="overflow-x: auto">'
            '<table style="width: 900px"><tr><th>round</th><th>mIoU</th></tr></table></div></div>'
          + '<img src="../_images/fig.png" style="width: 800px">'                      # a wide image
          + '<figure style="width: 700px"><img src="../_images/fig.png"></figure>'   # a wide figure, once
          # an output with no table or code line that scrolls sideways
          + '<div class="cell_output"><div class="output text_plain" style="overflow-x: auto; white-space: nowrap">'
          + "word " * 200 + '</div></div></main>')
    with pytest.raises(bookcheck.BookCheckError) as err:
        bookcheck.check_book(html, toc, screenshot_dir=None)
    message = str(err.value)
    assert "notebooks/01_cam: table 3 is 900 px wide, the column 600 px: 'round" in message
    assert "notebooks/01_cam: image 2 is 800 px wide, the column 600 px" in message
    assert "notebooks/01_cam: figure 2 is 700 px wide, the column 600 px" in message
    assert "notebooks/01_cam: output 3 is " in message and "output 3 is 600 px" not in message
    assert "4 problem(s)" in message   # the figure's image and the table's output are not counted again
    assert "table 1 " not in message and "table 2 " not in message and "image 1 " not in message


def test_width_problems_reads_like_the_report():
    widths = {"column": 700, "wide": [{"kind": "table", "n": 2, "width": 912, "column": 700, "text": "round\tmIoU\nx"},
                                      {"kind": "image", "n": 1, "width": 800, "column": 700, "text": ""}]}
    assert bookcheck.width_problems(widths) == ["table 2 is 912 px wide, the column 700 px: 'round | mIoU'",
                                                "image 1 is 800 px wide, the column 700 px"]
    assert bookcheck.width_problems({"column": 700, "wide": []}) == []


def test_text_problems():
    assert bookcheck.text_problems("mIoU 0.5 (50% | 60%), warnings: none, artifacts/default/x") == []
    found = bookcheck.text_problems("UserWarning: x\n 10%|█ | 1/10 [00:01<00:09, 1.0it/s]\nat /home/a/b")
    assert [p.split(" in the page")[0] for p in found] == ["progress-bar text", "a Python warning",
                                                          "an absolute path of one machine"]
    # a float pandas printed with its six default decimals; three decimals, hashes and versions pass
    assert bookcheck.text_problems("CAM\t0.519\t+0.092\tcode 9fe84b76 torch 2.9.1 lr 0.000100x") == []
    found = bookcheck.text_problems("seed\tCAM\n0\t0.519000\t-0.019000")
    assert len(found) == 1 and found[0].startswith("a number with six decimals") and "0.519000" in found[0]


def test_check_without_a_built_book(tmp_path):
    with pytest.raises(FileNotFoundError, match="make book"):
        bookcheck.check_book(tmp_path / "nothing", BOOK / "_toc.yml", None)


def test_cli_without_a_built_book_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "aepsl.book.check", "--html", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no built book at")
    assert len(result.stderr.strip().splitlines()) == 1
