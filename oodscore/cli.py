"""The ``oodscore`` command line (also ``python -m oodscore``).

Each subcommand lives in a module of `oodscore.commands` that defines
``register(subparsers)``; registering imports only argparse-level code (each command imports
NumPy, torch and the scorers when it runs), so that ``--help`` and usage errors are quick.
Bad input never ends in a traceback: any error, a bad option included, becomes one line
``oodscore: error: ...`` on stderr and exit code 2; a warning is one line
``oodscore: warning: ...``, without the source line Python shows programmers. Messages name
command-line options (``--force``), not Python keywords (`oodscore._wording`). An interrupt
(Ctrl-C) prints ``oodscore: interrupted`` and exits with 130; SIGTERM and SIGHUP end the
command the same way (exit 128 + the signal's number), so that a write under way removes its
temporary file.
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
from oodscore._wording import command_line
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
    with _stop_signals_raise(), _one_line_warnings(), command_line():
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
        with _signals_held():  # every command computes with torch: import it whole
            importlib.import_module("torch")
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


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and `STOP_SIGNALS` until the block ends, then act on the first that came.

    An import cut short by Ctrl-C leaves its package half-initialised, and the interrupt
    comes out as another error (NumPy reports a missing attribute); held, it waits the
    second or so that importing torch takes, then ends the command as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    held = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, hold) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if caught:
        raise KeyboardInterrupt if caught[0] == signal.SIGINT else Stopped(caught[0])


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show every warning of the run, from parsing to the end, with `_show_warning`."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


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
