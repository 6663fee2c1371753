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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from oodscore.commands.options import STDOUT, add_head_option, add_key_option, input_file
from oodscore.commands.score import add_reading_options, check_kind, give_head

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]

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
    add_head_option(parser)
    add_reading_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the detector, decide on INPUT, write the table atomically."""
    # NumPy, torch and the detector load here, when the command runs, not when it registers.
    from oodscore._validation import UNIT_OPEN
    from oodscore._writing import write_csv_columns
    from oodscore.commands.streaming import read_head, read_scorer_input
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
    if args.head is not None:
        inputs.append(args.head.path)
    check_outputs([] if output is None else [output], inputs, force=args.force)
    detector = load_detector(args.detector, decompress_limit=args.decompress_limit)
    label = type(detector.scorer).name  # a detector saved without its scorer's head takes one
    give_head({label: detector.scorer}, read_head(args))
    check_kind(label, detector.scorer)
    data = read_scorer_input(args.input, args, detector.scorer, scores=args.scores)
    try:
        result = detector(**data)
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
        write_csv_columns(sys.stdout.buffer, columns)
        sys.stdout.buffer.flush()
    else:
        writer = _writer(columns, output.suffix.lower())
        write_atomic(output, writer, force=args.force, inputs=inputs)
    return 0


def _writer(columns: dict[str, Array], suffix: str) -> Callable[[IO[bytes]], None]:
    import numpy as np
    import torch

    from oodscore._writing import write_csv_columns

    if suffix == ".npz":
        arrays: dict[str, Any] = columns
        return lambda stream: np.savez(stream, **arrays)
    if suffix in (".pt", ".pth"):
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in columns.items()}
        return lambda stream: torch.save(tensors, stream)
    return lambda stream: write_csv_columns(stream, columns)
