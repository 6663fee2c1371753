"""The ``oodscore`` command line (also ``python -m oodscore``).

Each subcommand lives in a module of `oodscore.commands` that defines
``register(subparsers)``. Bad input never ends in a traceback: `CLIError`,
``ValueError``, ``TypeError`` and ``OSError`` become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

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
        code: int = args.run(args)
    except BrokenPipeError:  # stdout closed early (`oodscore demo | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CLIError, ValueError, TypeError, OSError) as error:
        message = str(error).strip().replace("\n", " ") or type(error).__name__
        print(f"oodscore: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
