"""Reading CSV files of numbers without guessing: the header line and the row-index column.

`read_csv` decides whether the first line names the columns and whether the first column is
a row index from the ``header`` and ``index`` policies (`oodscore._formats.CsvPolicy`); with
``"auto"`` it decides from the file and refuses one that could be read two ways, naming the
keyword argument that settles it (``header="yes"``), or under the command line its option
(``--csv-header yes``). `oodscore.io.load_array` reads ``.csv`` files with it.
"""

from __future__ import annotations

import csv
import itertools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from oodscore._formats import POLICIES, CsvPolicy
from oodscore._wording import option


def check_policy(value: object, name: str) -> None:
    """Refuse a ``header``/``index`` value that is not one of `POLICIES`."""
    if not isinstance(value, str) or value not in POLICIES:
        raise ValueError(f"Expected `{name}` to be 'auto', 'yes' or 'no', got {value!r}.")


def _name(path: Path) -> str:
    return repr(str(path))


def _content_lines(stream: Iterable[str], start: int = 1) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the lines that hold more than blanks and ``#`` comments."""
    for number, line in enumerate(stream, start):
        if line.partition("#")[0].strip():
            yield number, line


def _is_number(cell: str) -> bool:
    text = cell.strip()
    if not text or "_" in text:  # Python's float() reads 1_000, NumPy does not
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path, *, header: CsvPolicy, index: CsvPolicy) -> np.ndarray[Any, Any]:
    """The (N, C) float64 numbers of a CSV file, read as ``header`` and ``index`` say.

    The file is UTF-8 (a byte-order mark is skipped); blank lines and ``#`` comments are
    skipped. See `oodscore.io.load_array` for what ``"auto"`` refuses.

    Raises:
        ValueError: On an empty file, a header without rows, a header of another width than
            the rows, a value that is not a number (naming its line), or a file that
            ``"auto"`` could read two ways.
    """
    where = _name(path)
    with path.open(encoding="utf-8-sig", newline="") as stream:  # -sig: drop a byte-order mark
        try:
            lines = _content_lines(stream)
            first = next(lines, None)
            if first is None:
                raise ValueError(f"{where} is empty.")
            number, line = first
            cells = next(csv.reader([line.partition("#")[0]]))
            has_header = _decide_header(where, number, cells, header)
            unnamed_index = has_header and len(cells) > 1 and not cells[0].strip()
            rows = lines if has_header else itertools.chain([first], lines)
            try:
                with warnings.catch_warnings():  # "input contained no data": said below
                    warnings.simplefilter("ignore", UserWarning)
                    array = np.loadtxt(
                        (text for _, text in rows), delimiter=",", ndmin=2, dtype=np.float64
                    )
            except ValueError:
                raise ValueError(_csv_problem(path, skip=number if has_header else 0)) from None
        except UnicodeDecodeError as error:
            raise ValueError(f"Cannot read {where} as UTF-8 text: {error.reason}.") from None
    if array.shape[0] == 0:
        raise ValueError(f"{where} has a header line but no rows of numbers.")
    if has_header and len(cells) != array.shape[1]:
        raise ValueError(
            f"The header line of {where} names {len(cells)} columns, but its rows have "
            f"{array.shape[1]}."
        )
    return _drop_index(where, array, index, unnamed_index)


def _decide_header(where: str, number: int, cells: list[str], header: CsvPolicy) -> bool:
    """Whether the first content line is a header, by ``header`` or, for "auto", its cells."""
    if len(cells) == 1:
        for separator, name in ((";", "semicolons"), ("\t", "tabs")):
            if separator in cells[0]:
                raise ValueError(
                    f"Line {number} of {where}, {cells[0].strip()!r}, is separated by {name}: "
                    "expected comma-separated values (re-export the file with commas)."
                )
    if header != "auto":
        return header == "yes"
    if len(cells) > 1 and not cells[0].strip():
        return True  # an unnamed first column: pandas' index; `index` decides about it
    numbers = [_is_number(c) for c in cells]
    if not any(numbers):
        return True
    if all(numbers):
        if [c.strip() for c in cells] == [str(i) for i in range(len(cells))]:
            which = option('header="yes" or header="no"', "--csv-header yes or --csv-header no")
            raise ValueError(
                f"Line {number} of {where}, {','.join(c.strip() for c in cells)!r}, may be "
                "column names (pandas names columns 0, 1, ...) or a row of numbers: say "
                f"which with {which}."
            )
        return False
    text = next(c for c, n in zip(cells, numbers, strict=True) if not n)
    header_yes = option('header="yes"', "--csv-header yes")
    raise ValueError(
        f"Line {number} of {where} mixes numbers and text ({text.strip()!r}): if it names "
        f"the columns, pass {header_yes}; if it is data, {text.strip()!r} is not a number."
    )


def _drop_index(
    where: str, array: np.ndarray[Any, Any], index: CsvPolicy, unnamed: bool
) -> np.ndarray[Any, Any]:
    if index == "no":
        return array
    if index == "yes":
        if array.shape[1] < 2:
            given = option('index="yes"', "--csv-index yes")
            raise ValueError(f"{where} has one column: {given} would leave none.")
        return array[:, 1:]
    counts = array.shape[1] > 1 and np.array_equal(array[:, 0], np.arange(array.shape[0]))
    if unnamed or counts:
        what = "has no name in the header line" if unnamed else "holds 0, 1, ..., N-1"
        drop, keep = (
            option('index="yes"', "--csv-index yes"),
            option('index="no"', "--csv-index no"),
        )
        raise ValueError(
            f"The first column of {where} {what}, as pandas writes its row index: pass "
            f"{drop} to drop it, or {keep} to read it as data."
        )
    return array


def _csv_problem(path: Path, *, skip: int) -> str:
    """Where a CSV file stops being numbers: the first bad line and value, in file lines."""
    where = _name(path)
    width = None
    with path.open(encoding="utf-8-sig", newline="") as stream:
        for number, line in _content_lines(stream):
            if number <= skip:
                continue
            cells = line.partition("#")[0].rstrip("\r\n").split(",")
            bad = [c.strip() for c in cells if not _is_number(c)]
            if bad:
                return (
                    f"Cannot read {where} as comma-separated numbers: line {number} holds "
                    f"{bad[0]!r}, which is not a number."
                )
            if width is not None and len(cells) != width:
                return (
                    f"Cannot read {where} as comma-separated numbers: line {number} has "
                    f"{len(cells)} values, the lines before it {width}."
                )
            width = len(cells)
    return f"Cannot read {where} as comma-separated numbers."
