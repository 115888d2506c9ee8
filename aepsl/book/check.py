"""Open the built book in headless Chromium and check what a reader would see.

    python -m aepsl.book.check            # after `make book`; `make check-book` runs this

For every page in ``book/_toc.yml`` (the root page, each chapter and section) it loads the
built HTML page in headless Chromium (Debian packages ``chromium`` and ``chromium-driver``,
driven through selenium), waits until every ``<img>`` has loaded or failed, and checks:

* the page exists and loads, with a heading;
* every image loaded (``naturalWidth > 0``), and no local file the page asks for is missing;
* the results chapter holds its table (a ``<table>`` mentioning mIoU, with data rows);
* the page is clean, as a reader sees it: no progress-bar text (``it/s]``, ``%|``), no Python
  warning (``Warning:``), no stderr output box, no absolute path of one machine (``/tmp/``,
  ``/work/``, ``/home/``, ``/root/`` ...), and no code or output line wider than its box (a
  ``<pre>`` whose scrollWidth exceeds its clientWidth, folded code included: it is measured
  as it would show unfolded);
* everything fits the content column: no table, image or figure wider than the column, and no
  code cell's output that scrolls sideways ("page X: table N is W px wide, the column C px").

It saves a full-page screenshot of every page, and ``report.json``, to
``book/_build/screenshots/``. A failed check lists every broken page and image.
"""
from __future__ import annotations

import argparse
import base64
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..engine.artifacts import REPO_DIR, write_bytes, write_json

BOOK_DIR = REPO_DIR / "book"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run")
RESULTS_PAGE = "notebooks/08_results"
WINDOW = (1280, 900)
MAX_SCREENSHOT_HEIGHT = 12000   # px; longer pages are cut there
PAGE_TIMEOUT_S = 60             # a generous limit for one page to load (not a measurement)

# After the page loaded: make lazy images eager, wait until every image has loaded or failed,
# then report each one. Runs as an asynchronous script (the last argument is the callback).
_IMAGES_JS = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
Promise.all(images.map(img => img.complete ? null : new Promise(resolve => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
}))).then(() => done(images.map(img => ({
    src: img.getAttribute('src') || '', url: img.currentSrc || img.src,
    width: img.naturalWidth, height: img.naturalHeight}))));
"""

# Formulas: wait until MathJax (served from _static/mathjax, book/_ext/local_mathjax.py) has
# typeset the page, then count the formulas still showing raw TeX. "none": no formula on the page.
_MATH_JS = """
const done = arguments[arguments.length - 1];
const math = () => Array.from(document.querySelectorAll('.math'));
if (!math().length) { done({state: 'none', raw: []}); return; }
const start = Date.now();
const bs = String.fromCharCode(92);   // a backslash: TeX delimiters still in the text mean raw TeX
const report = state => done({state: state, raw: math().map(e => e.innerText).filter(
    t => t.includes(bs + '(') || t.includes(bs + '[')).map(t => t.slice(0, 60))});
(function poll() {
    if (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Queue) {
        window.MathJax.Hub.Queue(() => report('typeset'));
    } else if (Date.now() - start > 20000) {
        report('MathJax did not load');
    } else {
        setTimeout(poll, 50);
    }
})();
"""

_TABLES_JS = """
return Array.from(document.querySelectorAll('table')).map(t => ({
    text: t.innerText.slice(0, 2000), rows: t.querySelectorAll('tbody tr').length}));
"""

# Widths: every table, image and figure of the page's content column, and every code cell's
# output that scrolls sideways, against the column's width (its content box). A table in a
# scrolling wrapper is measured at its full width: a reader sees only part of it at a time.
# Folded cells (<details>) are opened first, so they are measured as they show unfolded.
_WIDTHS_JS = """
const column = document.querySelector('article.bd-article') || document.querySelector('[role="main"]')
    || document.querySelector('main') || document.body;
document.querySelectorAll('details').forEach(d => { d.open = true; });
const style = getComputedStyle(column);
const box = column.getBoundingClientRect();
const left = box.left + parseFloat(style.paddingLeft) + parseFloat(style.borderLeftWidth);
const width = column.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
const right = left + width;
const shown = el => el.getClientRects().length > 0;
const wide = [];
const counts = {table: 0, image: 0, figure: 0, output: 0};
const measured = new Set();
for (const el of column.querySelectorAll('table, img, figure')) {
    const kind = el.tagName === 'IMG' ? 'image' : el.tagName.toLowerCase();
    if (kind === 'table' && el.parentElement.closest('table')) continue;   // a table inside a table: its outer one
    counts[kind] += 1;
    if (!shown(el) || Array.from(measured).some(m => m.contains(el))) continue;   // an image of a wide figure: the figure
    const r = el.getBoundingClientRect();
    const w = Math.max(r.width, el.scrollWidth);
    if (w > width + 1 || r.right > right + 1 || r.left < left - 1) {
        wide.push({kind: kind, n: counts[kind], width: Math.round(w), column: Math.round(width),
                   text: (el.innerText || el.getAttribute('src') || '').trim().slice(0, 60)});
        measured.add(el);
    }
}
for (const out of column.querySelectorAll('.cell_output .output')) {
    counts.output += 1;
    if (!shown(out) || out.tagName === 'PRE' || out.querySelector('pre')) continue;   // code lines: the <pre> check
    if (Array.from(measured).some(el => out.contains(el))) continue;                 // reported as its table or image
    if (out.scrollWidth > out.clientWidth + 1 || out.getBoundingClientRect().right > right + 1) {
        wide.push({kind: 'output', n: counts.output, width: Math.round(Math.max(out.scrollWidth, out.getBoundingClientRect().width)),
                   column: Math.round(width), text: out.innerText.trim().slice(0, 60)});
    }
}
return {column: Math.round(width), wide: wide};
"""


def width_problems(widths: dict) -> list[str]:
    """One line per table, image, figure or output wider than the content column, with the start
    of its text (a table's header row, cells joined by ' | ') or an image's address."""
    return [f"{w['kind']} {w['n']} is {w['width']} px wide, the column {w['column']} px"
            + (f": {' | '.join(w['text'].splitlines()[0].split(chr(9)))!r}" if w.get("text", "").strip() else "")
            for w in widths["wide"]]


# what a reader must not see in a page's text (the rendered text, as innerText gives it)
DIRTY_TEXT = (
    ("progress-bar text", re.compile(r"it/s\]|s/it\]|\d%\|")),
    ("a Python warning", re.compile(r"\w*Warning: ")),
    ("an absolute path of one machine", re.compile(r"(?<![\w.~/:-])/(?:tmp|work|home|root|Users|private|mnt)/\S*")),
    # pandas' Styler shows a float with six decimals unless the page formats it
    ("a number with six decimals (an unformatted table)", re.compile(r"(?<![\w.])-?\d+\.\d{6}(?![\w.])")),
)

_CLEAN_JS = """
const root = document.querySelector('main') || document.body;
const visible = el => el.offsetParent !== null || el.getClientRects().length > 0;
const wide = Array.from(root.querySelectorAll('pre')).filter(visible)
    .filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => ({first: p.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '')
                .slice(0, 120),
                scroll: p.scrollWidth, client: p.clientWidth}));
const stderr = Array.from(root.querySelectorAll('.stderr, .output.stderr, [data-mime-type="application/vnd.jupyter.stderr"]'))
    .filter(visible).map(e => e.innerText.slice(0, 120));
return {text: root.innerText, wide: wide, stderr: stderr};
"""


def text_problems(text: str) -> list[str]:
    """What a reader must not see in a page's text: each kind of dirt once, with its first match."""
    problems = []
    for what, pattern in DIRTY_TEXT:
        hit = pattern.search(text)
        if hit:
            line = next((l for l in text.splitlines() if hit.group(0) in l), hit.group(0)).strip()
            problems.append(f"{what} in the page text: {line[:120]!r}")
    return problems


class BookCheckError(RuntimeError):
    """The built book failed the check (the message lists every problem)."""


class ChromiumMissing(RuntimeError):
    """Chromium or chromedriver is not installed."""


@dataclass
class PageResult:
    page: str
    html: str
    loaded: bool = False
    title: str = ""
    images: int = 0
    broken_images: list = field(default_factory=list)
    missing_files: list = field(default_factory=list)
    tables: int = 0
    column_px: int = 0
    screenshot: str = ""
    problems: list = field(default_factory=list)


# --------------------------------------------------------------------------- the pages
def toc_pages(toc_path: str | Path) -> list[str]:
    """Every page of a Jupyter Book 1 ``_toc.yml`` (root, parts, chapters, sections), in order."""
    toc = yaml.safe_load(Path(toc_path).read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return [re.sub(r"\.(md|ipynb|py)$", "", p) for p in pages]


def find_chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and of chromedriver."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or next(
        (str(p) for p in (Path("/usr/lib/chromium/chromedriver"), Path("/usr/bin/chromedriver")) if p.exists()), None)
    if not browser or not driver:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
        raise ChromiumMissing(f"{missing} not found: install the Debian packages chromium and chromium-driver "
                              "(`make check-book` installs them when run as root)")
    return browser, driver


def start_browser():
    """A headless Chromium driven by selenium through the system's chromedriver (offline)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_chromium()
    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(PAGE_TIMEOUT_S)
    chrome.set_script_timeout(PAGE_TIMEOUT_S)
    return chrome


def _screenshot(chrome, path: Path) -> None:
    """A PNG of the whole page (up to MAX_SCREENSHOT_HEIGHT px), written atomically."""
    size = chrome.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": max(1, size["width"]),
            "height": max(1, min(size["height"], MAX_SCREENSHOT_HEIGHT)), "scale": 1}
    shot = chrome.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    write_bytes(path, base64.b64decode(shot["data"]))


def _wait_until_loaded(chrome, path: Path) -> None:
    """Until the browser shows ``path`` fully parsed: on a busy machine ``get`` has been seen to
    return while the page was still being replaced, and the page then counted no images."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(chrome, PAGE_TIMEOUT_S, poll_frequency=0.05).until(lambda c: c.execute_script(
        "return document.readyState === 'complete' && "
        "[location.href, decodeURI(location.href)].includes(arguments[0])",
        path.as_uri()) or None)


def check_page(chrome, html_dir: Path, page: str, screenshot_dir: Path | None,
               results_page: str) -> PageResult:
    path = html_dir / f"{page}.html"
    result = PageResult(page=page, html=str(path))
    if not path.is_file():
        result.problems.append(f"page not built: {path}")
        return result
    chrome.get_log("browser")          # drop messages of earlier pages
    try:
        chrome.get(path.as_uri())
        _wait_until_loaded(chrome, path)
        images = chrome.execute_async_script(_IMAGES_JS)
        math = chrome.execute_async_script(_MATH_JS)
    except Exception as exc:            # selenium's timeouts and driver errors
        result.problems.append(f"page did not load: {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return result
    result.loaded = True
    result.title = chrome.title
    if not chrome.execute_script("return document.querySelectorAll('h1').length"):
        result.problems.append(f"page has no heading: {path}")
    result.images = len(images)
    broken = [img for img in images if not img["width"]]
    result.broken_images = [img["src"] or img["url"] for img in broken]
    result.problems += [f"image did not load: {src}" for src in result.broken_images]
    # other local files the page asked for that were not there (stylesheets, scripts)
    for entry in chrome.get_log("browser"):
        message = entry.get("message", "")
        url = message.split()[0] if message else ""
        if (entry.get("level") == "SEVERE" and url.startswith("file://") and "ERR_FILE_NOT_FOUND" in message
                and url not in {img["url"] for img in broken} and url not in result.missing_files):
            result.missing_files.append(url)
            result.problems.append(f"missing file: {url}")
    if math["state"] not in ("none", "typeset"):
        result.problems.append(f"formulas not typeset ({math['state']}): {path}")
    result.problems += [f"a formula shown as raw TeX: {t!r}" for t in math["raw"]]
    clean = chrome.execute_script(_CLEAN_JS)
    result.problems += text_problems(clean["text"])
    result.problems += [f"a stderr output box: {t!r}" for t in clean["stderr"]]
    result.problems += [f"a code line wider than its box ({w['scroll']} > {w['client']} px): {w['first']!r}"
                        for w in clean["wide"]]
    tables = chrome.execute_script(_TABLES_JS)
    result.tables = len(tables)
    if page == results_page and not any("mIoU" in t["text"] and t["rows"] > 0 for t in tables):
        result.problems.append(f"the results chapter has no results table (a <table> with mIoU and data rows): {path}")
    if screenshot_dir is not None:
        shot = screenshot_dir / (page.replace("/", "-") + ".png")
        _screenshot(chrome, shot)
        result.screenshot = str(shot)
    widths = chrome.execute_script(_WIDTHS_JS)   # after the screenshot: it unfolds folded cells
    result.column_px = widths["column"]
    result.problems += width_problems(widths)
    return result


def check_book(html_dir: str | Path = BOOK_DIR / "_build" / "html", toc: str | Path = BOOK_DIR / "_toc.yml",
               screenshot_dir: str | Path | None = BOOK_DIR / "_build" / "screenshots",
               results_page: str = RESULTS_PAGE) -> dict:
    """Check every page of the built book; returns the report, raises BookCheckError listing
    every problem (ChromiumMissing when the browser is not installed)."""
    html_dir = Path(html_dir)
    if not html_dir.is_dir():
        raise FileNotFoundError(f"no built book at {html_dir}: build it first (`make book`, or "
                                "`make book PROFILE=quick` for the quick profile)")
    pages = toc_pages(toc)
    if results_page not in pages:
        raise BookCheckError(f"the table of contents {toc} has no results chapter {results_page!r}")
    shots = Path(screenshot_dir) if screenshot_dir is not None else None
    chrome = start_browser()
    try:
        results = [check_page(chrome, html_dir, page, shots, results_page) for page in pages]
    finally:
        chrome.quit()
    report = {"html_dir": str(html_dir), "screenshot_dir": str(shots) if shots else None,
              "pages": [vars(r) for r in results],
              "images": sum(r.images for r in results),
              "problems": [f"{r.page}: {p}" for r in results for p in r.problems]}
    if shots is not None:
        write_json(shots / "report.json", report)
    if report["problems"]:
        raise BookCheckError(f"the book check found {len(report['problems'])} problem(s) in {html_dir}:\n"
                             + "\n".join(f"  - {p}" for p in report["problems"]))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl.book.check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=str(BOOK_DIR / "_build" / "html"), help="the built HTML book")
    ap.add_argument("--toc", default=str(BOOK_DIR / "_toc.yml"), help="the book's table of contents")
    ap.add_argument("--screenshots", default=str(BOOK_DIR / "_build" / "screenshots"),
                    help="where the screenshots and report.json go")
    ap.add_argument("--results-page", default=RESULTS_PAGE, help="the page that must hold the results table")
    args = ap.parse_args(argv)
    try:
        report = check_book(args.html, args.toc, args.screenshots, args.results_page)
    except (ChromiumMissing, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BookCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"book check passed: {len(report['pages'])} pages, {report['images']} images loaded; "
          f"screenshots in {report['screenshot_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
