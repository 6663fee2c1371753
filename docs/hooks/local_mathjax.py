"""MkDocs hook: serve MathJax from the built site, never from a CDN.

The MathJax 3 build (``es5/tex-mml-chtml.js`` and its CHTML fonts) is taken at build time
from the pinned registry package ``django-static-mathjax`` (requirements/dev.txt), which
ships the official MathJax release unmodified under ``mathjax/static/mathjax``. It is
copied into ``<site>/assets/mathjax/`` with its licence, so the docs render their math
offline. Nothing is vendored in this repository.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

TARGET = Path("assets") / "mathjax"
"""Where the renderer lands inside the site (``extra_javascript`` points here)."""

_FILES = ("es5/tex-mml-chtml.js", "LICENSE")
_FONTS = "es5/output/chtml/fonts/woff-v2"


def _mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the docs need the MathJax package: pip install django-static-mathjax "
            "(pinned in requirements/dev.txt)"
        )
    root = Path(spec.origin).parent / "static" / "mathjax"
    if not (root / _FILES[0]).is_file():
        raise RuntimeError(f"no MathJax build under {root}")
    return root


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Copy MathJax's single-file build, its fonts and its licence into the site."""
    root = _mathjax_root()
    target = Path(config["site_dir"]) / TARGET
    target.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        shutil.copy2(root / name, target / Path(name).name)
    fonts = target / "output" / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(root / _FONTS, fonts, dirs_exist_ok=True)
