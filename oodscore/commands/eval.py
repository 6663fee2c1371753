"""``oodscore eval``: OOD metrics of several scorers on saved logits and features.

Logit scorers read ``--id``/``--ood`` logits; feature scorers read ``--id-features``/
``--ood-features``. Fitted scorers are fitted on ID data of the kind they read
(``--fit-logits`` or ``--fit-features``, with ``--fit-targets``) or read from ``--state``.

This module defines the options; the work (reading each set in row blocks, scoring, the
report) lives in `oodscore.commands.eval_run`, imported when the command runs.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodscore.commands.options import (
    STDOUT,
    InputFile,
    add_device_option,
    add_head_option,
    add_key_option,
    add_reading_options,
    input_file,
)

if TYPE_CHECKING:
    from oodscore.scorers.base import Scorer

FORMATS = ("markdown", "csv", "json")

FEATURE_OPTIONS = ("id_features", "ood_features", "fit_features")
"""The options (``args`` attributes) that only feature scorers read."""

MEAN = "mean"
"""The OOD-set name of the report's mean rows (`oodscore.report.MEAN`), reserved."""


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="OOD metrics of scorers on saved ID and OOD logits or features",
        description=(
            "Score the ID set and each OOD set with every scorer (logit scorers on --id/--ood "
            "logits, feature scorers on --id-features/--ood-features) and report AUROC, "
            "AUPR-In, AUPR-Out and FPR at 95% TPR (ID positive) per OOD set and scorer, with "
            "the mean over OOD sets. Files are read without unpickling, .npy files in row "
            "blocks, one set at a time; outputs are written atomically and never over an "
            "input or an existing file without --force."
        ),
    )
    parser.add_argument(
        "--id",
        dest="id_path",
        type=input_file,
        metavar="ID_LOGITS",
        help="(N, C) logits of the ID test set (.npy, .npz, .pt, .csv; PATH::KEY picks an "
        "array of an .npz or .pt file, here and in every input option)",
    )
    parser.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an OOD set's (M, C) logits, repeatable (PATH may be PATH::KEY)",
    )
    parser.add_argument(
        "--scorer",
        action="append",
        dest="scorers",
        default=[],
        type=lambda text: ("scorer", text),
        metavar="NAME[:KEY=VALUE,...]",
        help="a scorer from `oodscore list`, repeatable; parameters as Python literals after "
        "a colon (e.g. --scorer energy:temperature=2 --scorer 'mos:groups=[6,6]'); the text "
        "labels the rows",
    )
    parser.add_argument(
        "--id-targets",
        type=input_file,
        metavar="PATH",
        help="ID targets: (N,) class indices (adds accuracy) or (N, C) multi-hot labels (mAP)",
    )
    add_key_option(parser)
    parser.add_argument(
        "--format", choices=FORMATS, default="markdown", help="report format (default markdown)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help=f"write the report to this file ({STDOUT}, the default: stdout)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="IMAGE",
        help="also save score histograms and ROC curves (.png, .pdf, .svg; needs matplotlib)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_device_option(parser)
    add_head_option(parser)
    add_reading_options(parser)
    group = parser.add_argument_group(
        "feature and fitted scorers",
        "features for scorers that read them (`oodscore list` marks them [features]); ID "
        "data to fit the fitted scorers of --scorer on; fitted scorers from state files",
    )
    group.add_argument(
        "--id-features", type=input_file, metavar="PATH", help="(N, D) features of the ID test set"
    )
    group.add_argument(
        "--ood-features",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an OOD set's (M, D) features, repeatable; the same names as --ood",
    )
    group.add_argument(
        "--fit-features",
        type=input_file,
        metavar="PATH",
        help="(N, D) ID features to fit the fitted feature scorers of --scorer on",
    )
    group.add_argument(
        "--fit-logits",
        type=input_file,
        metavar="PATH",
        help="(N, C) ID logits to fit the fitted logit scorers of --scorer on (lof, ...)",
    )
    group.add_argument(
        "--fit-targets",
        type=input_file,
        metavar="PATH",
        help="targets of the fit rows (--fit-features, --fit-logits, or both: the same rows): "
        "(N,) class ids or (N, C) multi-hot labels",
    )
    group.add_argument(
        "--state",
        action="append",
        dest="scorers",
        type=lambda text: ("state", text),
        metavar="[LABEL=]STATE",
        help="a fitted scorer from a state file (`oodscore score --save-state`), "
        "repeatable; labelled LABEL, or by its name and parameters",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Read and score each set in row blocks, print or write the report (and the plot)."""
    from oodscore.commands.eval_run import run_eval

    return run_eval(args)


def parse_ood(items: list[str], option: str = "--ood") -> dict[str, InputFile]:
    """``["name=path", ...]`` as ``{name: InputFile}``; names are unique and not ``mean``.

    A path may end in ``::KEY`` (see `oodscore.commands.options.input_file`).
    """
    sets: dict[str, InputFile] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ValueError(f"Expected {option} NAME=PATH, got {item!r}.")
        if name in sets:
            raise ValueError(f"The OOD set {name!r} is given twice.")
        if name == MEAN:
            raise ValueError(f"The OOD-set name {MEAN!r} is reserved for the mean rows.")
        try:
            sets[name] = input_file(path)
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"{option} {item!r}: {error}.") from None
    return sets


def scorer_label(scorer: Scorer) -> str:
    """``name[:key=value,...]`` with the parameters that differ from their defaults.

    It is the `--scorer` text that builds the same scorer, but for a classifier head (read
    from the scorer's state file, or given with ``--head``), which it leaves out.
    """
    from oodscore.scorers.head import params_and_head

    signature = inspect.signature(type(scorer))
    changed = [
        f"{key}={value!r}"
        for key, value in params_and_head(scorer)[0].items()
        if value != signature.parameters[key].default
    ]
    name = type(scorer).name
    return f"{name}:{','.join(changed)}" if changed else name
