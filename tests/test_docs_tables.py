"""The docs' method tables list every registered scorer and regularizer, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oodscore import list_regularizers, list_scorers

DOCS = Path(__file__).resolve().parents[1] / "docs"
CELL = re.compile(r"`([a-z][a-z0-9_]*)`")


def table_names(page: Path, column: int) -> set[str]:
    """The snake_case names in backticks in ``column`` of the page's Markdown table rows."""
    names = set()
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) <= column or set(cells[0]) <= {"-", ":"}:
            continue
        match = CELL.fullmatch(cells[column])
        if match:
            names.add(match.group(1))
    return names


@pytest.mark.parametrize(
    ("page", "column", "registered"),
    [
        ("scorers/index.md", 0, list_scorers),
        ("regularizers/index.md", 1, list_regularizers),
    ],
)
def test_table_lists_every_registered_method(page: str, column: int, registered) -> None:  # type: ignore[no-untyped-def]
    assert table_names(DOCS / page, column) == set(registered())


def test_table_reader_sees_a_missing_row(tmp_path: Path) -> None:
    page = tmp_path / "index.md"
    page.write_text("| name | class |\n|---|---|\n| `msp` | MSP |\n| `energy` | Energy |\n")
    assert table_names(page, 0) == {"msp", "energy"}
    assert table_names(page, 0) != set(list_scorers())
