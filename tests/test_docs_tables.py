"""The docs' method tables list every registered scorer and regularizer, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oodscore import list_regularizers, list_scorers
from oodscore.scorers.base import SCORERS

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


def scorer_rows(page: Path) -> dict[str, tuple[str, str]]:
    """``{name: (section heading, multi-label cell)}`` of the scorer index's tables."""
    rows = {}
    heading = ""
    for line in page.read_text().splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2:
            match = CELL.fullmatch(cells[0])
            if match:
                rows[match.group(1)] = (heading, cells[2])
    return rows


def expected_section(name: str) -> str:
    """The section of the scorer index that a scorer belongs in, from its class flags."""
    cls = SCORERS.get_class(name)
    if cls.input_kind == "model":
        return "The model"
    if cls.input_kind == "logits":
        return "Logits, fitted on in-distribution logits" if cls.requires_fit else "Logits"
    if cls.needs_head:
        return "Features and the classifier head"
    return "Features, fitted on in-distribution features"


@pytest.mark.parametrize("name", list_scorers())
def test_scorer_index_groups_by_need_and_states_multilabel(name: str) -> None:
    """Each scorer sits in the section of what it needs; its multi-label cell is its flag."""
    rows = scorer_rows(DOCS / "scorers" / "index.md")
    section, multilabel = rows[name]
    assert section == expected_section(name)
    assert multilabel == ("yes" if SCORERS.get_class(name).multilabel else "no")
