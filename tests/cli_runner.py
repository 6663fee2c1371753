"""Run the command line in-process and read what it printed, for the CLI tests."""

from __future__ import annotations

import pytest

from oodscore.cli import main


def run(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of ``oodscore ARGV`` (arguments turned into text)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_of(argv: list[object], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a run that must fail: exit 2, nothing on stdout, one line."""
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, ""), err
    assert err.startswith("oodscore: error: ")
    assert err.count("\n") == 1, f"one line, no traceback: {err}"
    return err
