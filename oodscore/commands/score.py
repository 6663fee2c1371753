"""``oodscore score``: score a saved logits or features file with one registered scorer.

Fitted scorers (feature scorers such as Mahalanobis, and fitted logit scorers such as LOF)
get their state from ID data of the kind they read (``--fit``, ``--fit-targets``) or from a
state file (``--state``), and can save it (``--save-state``). The options that say how files
are read (``--csv-header``, ``--csv-index``, ``--decompress-limit``) are shared with ``eval``.

This module defines the options and the checks of their combinations; the work (reading in
row blocks, scoring, writing) lives in `oodscore.commands.score_run`, imported when the
command runs, so that registering the command imports no NumPy or torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodscore.commands.options import (
    STDOUT,
    add_device_option,
    add_head_option,
    add_key_option,
    add_reading_options,
    input_file,
    parse_params,
    reading,
)

if TYPE_CHECKING:
    from oodscore.scorers.base import Scorer

__all__ = [
    "FIT_OPTIONS",
    "STDOUT",
    "add_reading_options",
    "check_fit_options",
    "check_kind",
    "give_head",
    "parse_params",
    "reading",
    "reads",
    "refuse_fit_options",
    "register",
    "run",
]

FIT_OPTIONS = ("fit", "fit_targets", "state", "save_state")
"""The options (``args`` attributes) that only fitted scorers take."""


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand."""
    parser = subparsers.add_parser(
        "score",
        help="score a logits or features file (.npy, .npz, .pt, .csv)",
        description=(
            "Score the (N, C) logits, or the (N, D) features for a feature scorer, in INPUT "
            "with the scorer NAME and write the N scores to OUTPUT (format from its "
            "extension; - for CSV text on stdout). Higher score = more in-distribution. A "
            "fitted scorer is fitted on ID data of the kind it reads (--fit) or read from a "
            "state file (--state). Large .npy inputs are read in row blocks, never whole."
        ),
    )
    parser.add_argument(
        "name",
        metavar="NAME[:KEY=VALUE,...]",
        help="a scorer name from `oodscore list`, with parameters as Python literals after a "
        "colon (e.g. 'mos:groups=[6,6]')",
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=input_file,
        help="logits, or features for a feature scorer (what `oodscore list` says it reads); "
        "PATH::KEY picks an array of an .npz or .pt file",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help=f"scores file to write (.npy, .npz, .pt, .csv), or {STDOUT} for CSV on stdout",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scorer parameter, repeatable, each key once (e.g. --param temperature=2); "
        "the same as NAME:KEY=VALUE",
    )
    add_key_option(parser)
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUTPUT (and --save-state) if it exists"
    )
    add_device_option(parser)
    add_head_option(parser)
    add_reading_options(parser)
    group = parser.add_argument_group(
        "fitted scorers", "where the fitted state comes from: --fit or --state, exactly one"
    )
    group.add_argument(
        "--fit",
        type=input_file,
        metavar="DATA",
        help="fit on these ID logits or features, what the scorer reads ((N, C) or (N, D))",
    )
    group.add_argument(
        "--fit-targets",
        type=input_file,
        metavar="TARGETS",
        help="targets of the --fit rows: (N,) class ids or (N, C) multi-hot labels",
    )
    group.add_argument(
        "--state", type=Path, metavar="STATE", help="read the fitted scorer from a state file"
    )
    group.add_argument(
        "--save-state",
        type=Path,
        metavar="STATE",
        help="write the state fitted with --fit to this file (.pt)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build (and fit or load) the scorer, score the input in row blocks, write the scores."""
    from oodscore.commands.score_run import run_score

    return run_score(args)


def refuse_fit_options(args: argparse.Namespace, options: tuple[str, ...], why: str) -> None:
    """Refuse the given ``options`` (``args`` attributes) that nothing would read."""
    given = [f"--{o.replace('_', '-')}" for o in options if getattr(args, o)]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{', '.join(given)} {verb} only to fitted scorers; {why}.")


def check_kind(label: str, scorer: type[Scorer] | Scorer, *, head: bool = False) -> None:
    """Refuse the scorers the command line cannot run.

    Model scorers need the model. Scorers that apply the classifier head need one: from
    ``--head`` (``head``) or, for a scorer read from a state file, the file's.
    """
    if scorer.input_kind == "model":
        raise ValueError(
            f"{label!r} runs a model; the command line scores saved logits and features. "
            "Use oodscore.evaluate(model, ...) in Python."
        )
    has_head = not isinstance(scorer, type) and bool(getattr(scorer, "has_head", False))
    if scorer.needs_head and not head and not has_head:
        raise ValueError(
            f"{label!r} applies the classifier head to the features: give it with --head HEAD "
            "(a .pt of an nn.Linear's state_dict or model.pt::fc of a model's, an .npz of "
            "'weight' (C, D) and 'bias' (C,), or an .npy of the weight)."
        )


def give_head(scorers: dict[str, Scorer], head: dict[str, Any] | None) -> None:
    """Give ``--head`` to each scorer that applies a head and has none.

    Raises:
        ValueError: If ``--head`` is given and no scorer takes it (none applies a head, or
            each has its own from its state file), or a head that does not fit.
    """
    if head is None:
        return
    takers = [
        (label, s)
        for label, s in scorers.items()
        if s.needs_head and not s.has_head  # type: ignore[attr-defined]
    ]
    if not takers:
        why = (
            "each scorer that applies a head has its own, from its state file"
            if any(s.needs_head for s in scorers.values())
            else "none of the scorers applies the classifier head"
        )
        raise ValueError(f"--head would not be used: {why}.")
    for label, scorer in takers:
        try:
            scorer.set_head(**head)  # type: ignore[attr-defined]
        except (TypeError, ValueError) as error:
            raise ValueError(f"--head does not fit {label!r}: {error}") from None


def reads(cls: type[Scorer] | Scorer) -> str:
    """What a scorer reads, in words: ``"logits"`` or ``"features"``."""
    return "logits" if cls.input_kind == "logits" else "features"


def check_fit_options(args: argparse.Namespace, cls: type[Scorer]) -> None:
    """The state options: none for other scorers, exactly one source for fitted scorers."""
    if not cls.requires_fit:  # exactly the FittedScorer subclasses
        refuse_fit_options(args, FIT_OPTIONS, f"{args.name!r} is not fitted")
        return
    if args.fit is None and args.state is None:
        data = reads(cls)
        raise ValueError(
            f"{args.name!r} is a fitted scorer: fit it on ID {data} with --fit "
            f"{data.upper()} [--fit-targets TARGETS], or read a fitted one with --state STATE."
        )
    if args.fit is not None and args.state is not None:
        raise ValueError("Give either --fit or --state, not both.")
    if args.fit_targets is not None and args.fit is None:
        raise ValueError("--fit-targets needs --fit (the rows they label).")
    if args.save_state is not None and args.fit is None:
        raise ValueError("--save-state writes the state fitted with --fit; --state is a file.")
