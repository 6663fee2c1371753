"""The ``oodscore`` command line (also ``python -m oodscore``).

Each subcommand lives in a module of `oodscore.commands` that defines
``register(subparsers)``. Bad input never ends in a traceback: any error, a bad option
included, becomes one line ``oodscore: error: ...`` on stderr and exit code 2; a warning is
one line ``oodscore: warning: ...``. An interrupt (Ctrl-C) prints ``oodscore: interrupted``
and exits with 130; SIGTERM and SIGHUP end the command the same way (exit 128 + the signal's
number), so that a write under way removes its temporary file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn, TextIO

from oodscore import __version__
from oodscore.commands import COMMANDS

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a closed pipe
EXIT_INTERRUPTED = 130  # 128 + SIGINT

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals that end a command as an exception, so that ``finally`` blocks and cleanups run."""


class CLIError(Exception):
    """A user error the command line reports as one line (exit code 2)."""


class Stopped(BaseException):
    """Raised in the main thread when the process gets one of `STOP_SIGNALS`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"oodscore: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of `oodscore.commands.COMMANDS`."""
    parser = _Parser(
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
    with _stop_signals_raise():
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print("oodscore: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Stopped as stop:
            print(f"oodscore: stopped by {stop}", file=sys.stderr)
            return 128 + stop.signum


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad option (one line printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code: int = args.run(args)
    except BrokenPipeError:  # stdout closed early (`oodscore demo | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (CLIError, ValueError, TypeError, OSError) as error:
        _print_error(str(error) or type(error).__name__)
        return EXIT_USAGE
    except MemoryError as error:
        _print_error(f"out of memory{': ' + str(error) if str(error) else ''}")
        return EXIT_USAGE
    except Exception as error:  # what no check above foresaw: still one line
        _print_error(f"{type(error).__name__}: {error}")
        return EXIT_USAGE
    return code


def _print_error(message: str) -> None:
    text = " ".join(message.split())
    print(f"oodscore: error: {text}", file=sys.stderr)


@contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Turn `STOP_SIGNALS` into `Stopped` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as one line, without the source location meant for programmers."""
    text = " ".join(str(message).split())
    print(f"oodscore: warning: {text}", file=sys.stderr if file is None else file)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
