"""Serve MathJax from the local install instead of a CDN, so formulas render offline.

The book is built and read without a network (nothing is downloaded at run time). MathJax
2.7 comes with the pinned PyPI package ``jupyter-server-mathjax`` (installed by ``make setup``);
after an HTML build this copies its files to ``_static/mathjax/``, where ``mathjax_path`` in
``book/_config.yml`` points.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def _copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    try:
        import jupyter_server_mathjax
    except ImportError as err:   # one clear message instead of pages with raw TeX
        raise RuntimeError("the book needs the package jupyter-server-mathjax (MathJax for offline "
                           "formulas): run `make setup`") from err
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(source, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
