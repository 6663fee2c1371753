"""The architecture page names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "oodscore"


def modules() -> set[str]:
    """Every module file, relative to the package, without package markers."""
    skip = {"__init__.py", "__main__.py"}
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name not in skip}


def named_on_page() -> set[str]:
    """The module paths in the "modules" column of the page's table of layers."""
    text = PAGE.read_text()
    table = text[text.index("## The layers") : text.index("## Rules the layout keeps")]
    rows = [line.split("|")[2] for line in table.splitlines() if line.count("|") > 3]
    return {m for row in rows for m in re.findall(r"`([a-z_/]+\.py)`", row)}


def test_every_module_is_on_the_page() -> None:
    assert modules() - named_on_page() == set()


def test_the_page_names_no_missing_module() -> None:
    assert named_on_page() - modules() == set()


def test_importing_the_package_registers_every_scorer_module() -> None:
    """A scorer module the package does not import would be invisible to users."""
    code = (
        "import pkgutil, sys, oodscore, oodscore.scorers as s; "
        "missing = [m.name for m in pkgutil.iter_modules(s.__path__) "
        "if f'oodscore.scorers.{m.name}' not in sys.modules]; "
        "print(missing); sys.exit(bool(missing))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
