"""File formats and reading settings, with no heavy import.

The command line builds its options from these before anything large is imported (``oodscore
score --help`` loads neither NumPy nor torch); `oodscore.io` re-exports them.
"""

from __future__ import annotations

from typing import Literal

READABLE = (".npy", ".npz", ".pt", ".pth", ".csv")
"""File extensions `oodscore.io.load_array` reads."""

KEYED = (".npz", ".pt", ".pth")
"""Extensions of files that may hold several arrays, one of which a key chooses."""

CsvPolicy = Literal["auto", "yes", "no"]
"""Whether a CSV file has a header line (``header=``) or a leading row-index column
(``index=``): ``"yes"``, ``"no"``, or ``"auto"`` (decide from the file; refuse if it could
be either)."""

POLICIES = ("auto", "yes", "no")
"""The values of a `CsvPolicy`."""

DECOMPRESS_LIMIT = 1 << 30
"""Bytes (1 GiB) that the compressed members of an ``.npz`` or ``.pt`` file may expand to.

Stored (uncompressed) members are as large in the file as in memory and have no limit.
Raise it with ``decompress_limit=`` (``--decompress-limit`` on the command line) for a
larger file you trust."""


def parse_size(text: str) -> int:
    """Bytes of a size such as ``"512M"``, ``"2G"``, ``"1.5GiB"`` or ``"1000000"`` (binary units).

    Raises:
        ValueError: On anything else, or a size below 1 byte.

    Examples:
        >>> from oodscore.io import parse_size
        >>> parse_size("512M"), parse_size("1.5GiB")
        (536870912, 1610612736)
    """
    units = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = body[-1:] if body[-1:] in units else ""
    number = body[: len(body) - len(unit)].strip()
    try:
        value = float(number) * (1 << units[unit])
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):
        raise ValueError(f"Expected a size such as 512M, 2G or a number of bytes, got {text!r}.")
    return int(value)
