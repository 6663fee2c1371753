"""``oodscore detect``: a detector file and logits -> scores, p-values and decisions.

The output holds one row per input: the score, the conformal p-value, whether the input is
rejected as OOD (p <= alpha), its calibration group, and with ``--fdr`` whether
Benjamini–Hochberg selects it at that false discovery rate. Formats, by extension: ``.npz``
(one array per column), ``.pt``/``.pth`` (a dict of tensors) or ``.csv`` (a header line,
then one line per input, written in pieces); ``-o -`` writes the CSV to standard output.
Writes are atomic and never replace an input.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from oodscore.commands.options import STDOUT, add_key_option, input_file
from oodscore.commands.score import add_reading_options, reads

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]

WRITE_ROWS = 1 << 14
"""Rows formatted per write when the table is a CSV file."""

OUTPUTS = (".npz", ".pt", ".pth", ".csv")
"""Extensions ``detect`` writes (several columns: not ``.npy``)."""


def register(subparsers: Any) -> None:
    """Add the ``detect`` subcommand."""
    parser = subparsers.add_parser(
        "detect",
        help="decide ID or OOD for a logits file with a calibrated detector",
        description=(
            "Score INPUT with the detector in DETECTOR (written by `oodscore calibrate`) and "
            "write, per input, the score, the conformal p-value, whether it is rejected as "
            "OOD (p <= alpha), its calibration group, and with --fdr the Benjamini-Hochberg "
            "selection, to OUTPUT (.npz, .pt or .csv)."
        ),
    )
    parser.add_argument("detector", metavar="DETECTOR", type=Path, help="detector file (.pt)")
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=input_file,
        help="logits (N, C) (features for a feature scorer; scores with --scores)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="table to write (.npz, .pt or .csv; '-': CSV on standard output)",
    )
    parser.add_argument(
        "--scores", action="store_true", help="INPUT holds (N,) scores of the detector's scorer"
    )
    parser.add_argument(
        "--fdr",
        type=float,
        metavar="Q",
        help="also select OOD inputs by Benjamini-Hochberg at false discovery rate Q in (0, 1)",
    )
    add_key_option(parser)
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    add_reading_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the detector, decide on INPUT, write the table atomically."""
    # NumPy, torch and the detector load here, when the command runs, not when it registers.
    from oodscore._validation import UNIT_OPEN
    from oodscore.commands.streaming import read_array
    from oodscore.detection.detector_file import load_detector
    from oodscore.detection.fdr import select_ood
    from oodscore.io import check_outputs, write_atomic

    fdr = None if args.fdr is None else UNIT_OPEN.check(args.fdr, "--fdr")
    output = None if args.output == STDOUT else Path(args.output)
    if output is not None and output.suffix.lower() not in OUTPUTS:
        raise ValueError(
            f"Cannot write {str(output)!r}: detect writes several columns, to one of "
            f"{', '.join(OUTPUTS)} (or '-' for CSV on standard output); got "
            f"{output.suffix.lower()!r}."
        )
    inputs = [args.detector, args.input.path]
    check_outputs([] if output is None else [output], inputs, force=args.force)
    detector = load_detector(args.detector, decompress_limit=args.decompress_limit)
    array = read_array(args.input, args)
    if args.scores and array.ndim == 2 and array.shape[1] == 1:  # a one-column CSV of scores
        array = array[:, 0]
    kind = "scores" if args.scores else reads(detector.scorer)
    try:
        result = detector(**{kind: array})
    except (TypeError, ValueError) as error:
        raise ValueError(f"Cannot decide on {str(args.input)!r}: {error}") from None
    columns: dict[str, Array] = {
        "score": result.scores.detach().cpu().numpy(),
        "p_value": result.p_values.cpu().numpy(),
        "reject": result.reject.cpu().numpy(),
        "group": result.groups.cpu().numpy(),
    }
    if fdr is not None:
        columns["selected"] = select_ood(result.p_values, fdr=fdr).cpu().numpy()
    if output is None:
        sys.stdout.flush()
        _write_csv(sys.stdout.buffer, columns)
        sys.stdout.buffer.flush()
    else:
        writer = _writer(columns, output.suffix.lower())
        write_atomic(output, writer, force=args.force, inputs=inputs)
    return 0


def _writer(columns: dict[str, Array], suffix: str) -> Callable[[IO[bytes]], None]:
    import numpy as np
    import torch

    if suffix == ".npz":
        arrays: dict[str, Any] = columns
        return lambda stream: np.savez(stream, **arrays)
    if suffix in (".pt", ".pth"):
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in columns.items()}
        return lambda stream: torch.save(tensors, stream)
    return lambda stream: _write_csv(stream, columns)


def _write_csv(stream: IO[bytes], columns: dict[str, Array]) -> None:
    """A header line, then one line per input; booleans as 0/1, floats round-trip exactly."""
    stream.write((",".join(columns) + "\n").encode())
    formats = [_format(value) for value in columns.values()]
    count = len(next(iter(columns.values())))
    for start in range(0, count, WRITE_ROWS):
        parts = [value[start : start + WRITE_ROWS].tolist() for value in columns.values()]
        text = io.StringIO()
        for row in zip(*parts, strict=False):
            text.write(",".join(f(v) for f, v in zip(formats, row, strict=False)) + "\n")
        stream.write(text.getvalue().encode())


def _format(column: Array) -> Callable[[Any], str]:
    if column.dtype.kind == "b":
        return lambda v: "1" if v else "0"
    if column.dtype.kind in "iu":
        return str
    digits = 9 if column.dtype.itemsize == 4 else 17
    return lambda v: f"{v:.{digits}g}"
