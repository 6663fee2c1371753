"""The built docs site: examples render as code, math renders offline, wide equations scroll.

Builds the site once (``mkdocs build --strict``, a few seconds) and reads the HTML.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(p for p in site.rglob("index.html") if "search" not in p.parts)
    assert len(found) > 30, "the site should hold every docs page"
    return found


class _Sections(HTMLParser):
    """Records every ``>>>`` prompt outside ``<pre>``, and what follows each section title."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth_pre = 0
        self.loose_prompts: list[str] = []
        self.titles: list[str] = []
        self.after_title: list[str] = []
        self._in_title = False
        self._awaiting: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self._awaiting is not None and tag not in ("p", "span"):
            self.after_title.append(f"{self._awaiting}:{tag}.{'.'.join(classes)}")
            self._awaiting = None
        if tag == "pre":
            self.depth_pre += 1
        if tag == "span" and "doc-section-title" in classes:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self.depth_pre -= 1
        if tag == "span":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and data.strip():
            self.titles.append(data.strip())
            if data.strip().rstrip(":").lower().startswith("example"):
                self._awaiting = data.strip()
            return
        if self._awaiting is not None and data.strip():
            self.after_title.append(f"{self._awaiting}:text")
            self._awaiting = None
        if ">>>" in data and self.depth_pre == 0:
            self.loose_prompts.append(data.strip()[:80])


def test_every_example_section_renders_as_a_code_block(site: Path) -> None:
    examples = 0
    for page in pages(site):
        parsed = _Sections()
        parsed.feed(page.read_text(encoding="utf-8"))
        rel = page.relative_to(site)
        html = page.read_text(encoding="utf-8")
        # An `Example:` docstring section becomes an admonition whose `>>>` lines turn into
        # nested blockquotes (prompts gone, lines run together).
        assert '<details class="example"' not in html, f"{rel}: an 'Example:' admonition"
        assert not re.search(r"<blockquote>\s*<blockquote>", html), f"{rel}: nested blockquotes"
        assert not parsed.loose_prompts, f"{rel}: doctest prompts outside a code block"
        assert "Example:" not in parsed.titles, f"{rel}: an 'Example:' section (use 'Examples:')"
        for after in parsed.after_title:
            assert after == "Examples::div.highlight", f"{rel}: {after}"
            examples += 1
    assert examples > 50


def test_no_page_loads_a_script_font_or_stylesheet_from_the_network(site: Path) -> None:
    remote = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"")
    for page in pages(site):
        html = page.read_text(encoding="utf-8")
        found = [m for m in remote.findall(html) if 'rel="canonical"' not in m]
        assert not found, f"{page.relative_to(site)}: {found[:2]}"


def test_math_renderer_and_its_fonts_are_served_from_the_site(site: Path) -> None:
    page = (site / "regularizers" / "edge" / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script src="([^"]+)"', page)
    local = [s for s in scripts if s.endswith("assets/mathjax/tex-mml-chtml.js")]
    assert local, scripts
    renderer = (site / "regularizers" / "edge" / local[0]).resolve()
    assert renderer.is_file()
    assert renderer.stat().st_size > 1_000_000  # the whole single-file build, not a stub
    fonts = renderer.parent / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("MathJax_*.woff"))) >= 20
    assert (renderer.parent / "LICENSE").is_file()
    assert r"\mathcal{L}_{\text{gap}}" in page  # the equation is there for MathJax to typeset


def test_wide_display_equations_scroll(site: Path) -> None:
    page = (site / "regularizers" / "edge" / "index.html").read_text(encoding="utf-8")
    sheets = re.findall(r'<link[^>]+href="([^"]+\.css)"', page)
    extra = [s for s in sheets if s.endswith("stylesheets/extra.css")]
    assert extra, sheets
    css = (site / "regularizers" / "edge" / extra[0]).resolve().read_text()
    assert re.search(r"div\.arithmatex\s*\{[^}]*overflow-x:\s*auto", css)
    assert 'class="arithmatex"' in page
