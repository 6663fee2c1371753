"""``oodscore eval``: OOD metrics of several scorers on saved ID and OOD logits."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from oodscore.commands.score import parse_params
from oodscore.evaluation import evaluate_logits
from oodscore.io import load_array, write_atomic
from oodscore.report import MEAN, Report
from oodscore.scorers.base import SCORERS, Scorer

FORMATS = ("markdown", "csv", "json")


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="OOD metrics of scorers on saved ID and OOD logits",
        description=(
            "Score the ID logits and each OOD set's logits with every --scorer and report "
            "AUROC, AUPR-In, AUPR-Out and FPR at 95% TPR (ID positive) per OOD set and scorer, "
            "with the mean over OOD sets. Files are read without unpickling; outputs are "
            "written atomically and never over an input or an existing file without --force."
        ),
    )
    parser.add_argument(
        "--id",
        dest="id_path",
        type=Path,
        required=True,
        metavar="ID_LOGITS",
        help="(N, C) logits of the ID test set (.npy, .npz, .pt, .csv)",
    )
    parser.add_argument(
        "--ood",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="an OOD set's (M, C) logits, repeatable",
    )
    parser.add_argument(
        "--scorer",
        action="append",
        required=True,
        metavar="NAME[:KEY=VALUE,...]",
        help="a scorer from `oodscore list`, repeatable; parameters after a colon "
        "(e.g. --scorer energy:temperature=2)",
    )
    parser.add_argument(
        "--id-targets",
        type=Path,
        metavar="PATH",
        help="ID targets: (N,) class indices (adds accuracy) or (N, C) multi-hot labels (mAP)",
    )
    parser.add_argument(
        "--key", help="array to read from .npz files or dicts in .pt files (all inputs)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="markdown", help="report format (default markdown)"
    )
    parser.add_argument("-o", "--output", type=Path, help="write the report here, not to stdout")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="IMAGE",
        help="also save score histograms and ROC curves (.png, .pdf, .svg; needs matplotlib)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.set_defaults(run=run)


def parse_ood(items: list[str]) -> dict[str, Path]:
    """``["name=path", ...]`` as ``{name: path}``; names are unique and not ``mean``."""
    sets: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ValueError(f"Expected --ood NAME=PATH, got {item!r}.")
        if name in sets:
            raise ValueError(f"The OOD set {name!r} is given twice.")
        if name == MEAN:
            raise ValueError(f"The OOD-set name {MEAN!r} is reserved for the mean rows.")
        sets[name] = Path(path)
    return sets


def parse_scorers(items: list[str]) -> dict[str, Scorer]:
    """``["name", "name:key=value,key=value", ...]`` as ``{label: scorer}``, labels as given."""
    scorers: dict[str, Scorer] = {}
    for item in items:
        name, _, params = item.partition(":")
        cls = SCORERS.get_class(name.strip())
        pairs = [p for p in params.split(",") if p.strip()] if params else []
        if item in scorers:
            raise ValueError(f"The scorer {item!r} is given twice.")
        scorers[item] = cls(**parse_params([p.strip() for p in pairs], cls))
    return scorers


def run(args: argparse.Namespace) -> int:
    """Load the logits, evaluate, print or write the report (and the plot)."""
    ood_paths = parse_ood(args.ood)
    scorers = parse_scorers(args.scorer)
    inputs = [args.id_path, *ood_paths.values()]
    if args.id_targets is not None:
        inputs.append(args.id_targets)
    outputs = [p for p in (args.output, args.plot) if p is not None]
    _check_outputs(outputs, inputs, force=args.force)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib; install it with `pip install oodscore[plot]`.")
    id_logits = load_array(args.id_path, key=args.key)
    ood_logits = {name: load_array(path, key=args.key) for name, path in ood_paths.items()}
    targets = None
    if args.id_targets is not None:
        targets = load_array(args.id_targets, key=args.key)
        if targets.ndim == 2 and targets.shape[1] == 1:  # a one-column CSV of classes
            targets = targets[:, 0]
        if targets.ndim == 1 and targets.dtype.kind == "f":
            if not (targets == targets.round()).all():
                raise ValueError(f"{str(args.id_targets)!r} holds non-integer class indices.")
            targets = targets.astype("int64")
    report = evaluate_logits(id_logits, ood_logits, scorers, id_targets=targets)
    text = _render(report, args.format)
    if args.plot is not None:
        try:
            report.plot(args.plot, force=args.force, inputs=inputs)
        except ImportError as error:
            raise ValueError(str(error)) from None
    if args.output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        write_atomic(args.output, text, force=args.force, inputs=inputs)
    return 0


def _render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return report.to_csv()
    if fmt == "json":
        return report.to_json()
    return report.to_markdown() + "\n"


def _check_outputs(outputs: list[Path], inputs: list[Path], *, force: bool) -> None:
    """Fail before any work if an output is an input, repeats, or exists without --force."""
    resolved_inputs = {p.resolve() for p in inputs}
    seen = set()
    for path in outputs:
        resolved = path.resolve()
        if resolved in resolved_inputs:
            raise ValueError(f"Refusing to overwrite the input file {str(path)!r}.")
        if resolved in seen:
            raise ValueError(f"--output and --plot are the same file {str(path)!r}.")
        seen.add(resolved)
        if path.exists() and not force:
            raise FileExistsError(f"{str(path)!r} exists; pass --force to overwrite it.")
