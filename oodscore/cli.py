"""The ``oodscore`` command line (also ``python -m oodscore``).

Each subcommand lives in a module of `oodscore.commands` that defines
``register(subparsers)``. Bad input never ends in a traceback: `CLIError`,
``ValueError``, ``TypeError`` and ``OSError`` become one line on stderr and exit code 2;
a warning is one line ``oodscore: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from oodscore import __version__
from oodscore.commands import COMMANDS

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a closed pipe


class CLIError(Exception):
    """A user error the command line reports as one line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of `oodscore.commands.COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="oodscore",
        description="Out-of-distribution scores, metrics and reports (higher score = more ID).",
    )
    parser.add_argument("--version", action="version", version=f"oodscore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"oodscore.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code: int = args.run(args)
    except BrokenPipeError:  # stdout closed early (`oodscore demo | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CLIError, ValueError, TypeError, OSError) as error:
        message = str(error).strip().replace("\n", " ") or type(error).__name__
        print(f"oodscore: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as one line, without the source location meant for programmers."""
    text = str(message).strip().replace("\n", " ")
    print(f"oodscore: warning: {text}", file=sys.stderr if file is None else file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
