"""Messages that name a setting in the words of the reader: Python or the command line.

An error such as "the file exists" tells how to overwrite it: ``force=True`` to a Python
caller, ``--force`` to someone at the command line. Library code writes both wordings with
`option`; the command line runs its commands inside `command_line`, which picks the second.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_COMMAND_LINE: ContextVar[bool] = ContextVar("oodscore_command_line", default=False)


@contextmanager
def command_line() -> Iterator[None]:
    """Within this block, `option` gives the command-line wording."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def option(python: str, command_line: str) -> str:
    """``python`` (e.g. ``"force=True"``), or ``command_line`` (``"--force"``) under `command_line`.

    Examples:
        >>> from oodscore._wording import command_line, option
        >>> option("force=True", "--force")
        'force=True'
        >>> with command_line():
        ...     option("force=True", "--force")
        '--force'
    """
    return command_line if _COMMAND_LINE.get() else python
