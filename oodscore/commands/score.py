"""``oodscore score``: score a saved logits or features file with one registered scorer.

Fitted scorers (feature scorers such as Mahalanobis, and fitted logit scorers such as LOF)
get their state from ID data of the kind they read (``--fit``, ``--fit-targets``) or from a
state file (``--state``), and can save it (``--save-state``). The options that say how files
are read (``--csv-header``, ``--csv-index``, ``--decompress-limit``) are shared with ``eval``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path
from typing import Any

from oodscore.io import (
    DECOMPRESS_LIMIT,
    POLICIES,
    check_outputs,
    check_suffix,
    load_array,
    load_targets,
    parse_size,
    write_array,
)
from oodscore.scorers.base import SCORERS, FittedScorer, Scorer
from oodscore.state_file import check_state_suffix, load_state, save_state

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
            "extension). Higher score = more in-distribution. A fitted scorer is fitted on "
            "ID data of the kind it reads (--fit) or read from a state file (--state)."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="a scorer name from `oodscore list`")
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=Path,
        help="logits, or features for a feature scorer (what `oodscore list` says it reads)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="scores file to write")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scorer parameter, repeatable, each key once (e.g. --param temperature=2)",
    )
    parser.add_argument(
        "--key", help="array to read from .npz files or dicts in .pt files (every input)"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUTPUT (and --save-state) if it exists"
    )
    add_reading_options(parser)
    group = parser.add_argument_group(
        "fitted scorers", "where the fitted state comes from: --fit or --state, exactly one"
    )
    group.add_argument(
        "--fit",
        type=Path,
        metavar="DATA",
        help="fit on these ID logits or features, what the scorer reads ((N, C) or (N, D))",
    )
    group.add_argument(
        "--fit-targets",
        type=Path,
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


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how input files are read (`reading` turns them into arguments)."""
    group = parser.add_argument_group("reading files")
    group.add_argument(
        "--csv-header",
        choices=POLICIES,
        default="auto",
        help="whether the first line of CSV inputs names the columns (default auto: a line "
        "of text is a header, a line of numbers is data; refuses a line that could be either)",
    )
    group.add_argument(
        "--csv-index",
        choices=POLICIES,
        default="auto",
        help="whether the first column of CSV inputs is a row index to drop (default auto: "
        "refuses an unnamed first column or one that holds 0..N-1, as pandas writes it)",
    )
    group.add_argument(
        "--decompress-limit",
        type=_size,
        default=DECOMPRESS_LIMIT,
        metavar="SIZE",
        help="the most a compressed .npz or .pt input may expand to (default 1G; e.g. 4G)",
    )


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def reading(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `oodscore.io.load_array` from the options of `add_reading_options`."""
    return {
        "key": args.key,
        "header": args.csv_header,
        "index": args.csv_index,
        "decompress_limit": args.decompress_limit,
    }


def parse_params(items: list[str], cls: type, context: str = "--param ") -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into keyword arguments of ``cls``, values as Python literals.

    Each key may be given once; ``context`` starts the messages (the option they came from).
    """
    accepted = [
        p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    params: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Expected {context.strip()} KEY=VALUE, got {item!r}.")
        if key not in accepted:
            options = ", ".join(accepted) if accepted else "none"
            raise ValueError(
                f"Unknown parameter {key!r} for {cls.__name__}; it accepts: {options}."
            )
        if key in texts:
            raise ValueError(
                f"{context}{key} is given twice ({texts[key]!r} and {text!r}); give each "
                "parameter once."
            )
        texts[key] = text
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            params[key] = text
    return params


def run(args: argparse.Namespace) -> int:
    """Build (and fit or load) the scorer, score the input, write the outputs atomically."""
    cls = SCORERS.get_class(args.name)
    check_kind(args.name, cls)
    params = parse_params(args.param, cls)
    check_fit_options(args, cls)
    output: Path = args.output
    check_suffix(output)
    if args.save_state is not None:
        check_state_suffix(args.save_state)
    inputs = [p for p in (args.input, args.fit, args.fit_targets, args.state) if p is not None]
    outputs = [output] if args.save_state is None else [output, args.save_state]
    # Fail before loading, fitting and scoring a large input.
    check_outputs(outputs, inputs, force=args.force)
    if args.state is not None:
        scorer: Scorer = load_state(
            args.state, name=args.name, params=params, decompress_limit=args.decompress_limit
        )
    else:
        scorer = cls(**params)
    if isinstance(scorer, FittedScorer):
        return _score_fitted(scorer, args, inputs)
    scores = scorer(load_array(args.input, **reading(args)))
    write_array(output, scores, force=args.force, inputs=inputs)
    return 0


def refuse_fit_options(args: argparse.Namespace, options: tuple[str, ...], why: str) -> None:
    """Refuse the given ``options`` (``args`` attributes) that nothing would read."""
    given = [f"--{o.replace('_', '-')}" for o in options if getattr(args, o)]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{', '.join(given)} {verb} only to fitted scorers; {why}.")


def check_kind(label: str, scorer: type[Scorer] | Scorer) -> None:
    """Refuse the scorers the command line cannot run.

    Model scorers need the model; scorers that apply the classifier head need a head, which
    the command line has no way to take yet.
    """
    if scorer.input_kind == "model":
        raise ValueError(
            f"{label!r} runs a model; the command line scores saved logits and features. "
            "Use oodscore.evaluate(model, ...) in Python."
        )
    if scorer.needs_head:
        raise ValueError(
            f"{label!r} applies the classifier head to the features, and the command line "
            "cannot take a head yet; use it in Python, built with head= (an nn.Linear) or "
            "weight=/bias=, or through oodscore.evaluate(model, ...)."
        )


def reads(cls: type[Scorer] | Scorer) -> str:
    """What a scorer reads, in words: ``"logits"`` or ``"features"``."""
    return "logits" if cls.input_kind == "logits" else "features"


def check_fit_options(args: argparse.Namespace, cls: type[Scorer]) -> None:
    """The state options: none for other scorers, exactly one source for fitted scorers."""
    if not issubclass(cls, FittedScorer):
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


def _score_fitted(scorer: FittedScorer, args: argparse.Namespace, inputs: list[Path]) -> int:
    options = reading(args)
    if args.fit is not None:
        fit_data = load_array(args.fit, **options)
        targets = None if args.fit_targets is None else load_targets(args.fit_targets, **options)
        try:
            scorer.fit(fit_data, targets)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Cannot fit {args.name!r} on {str(args.fit)!r}: {error}") from None
    data = load_array(args.input, **options)
    source = f"--fit {str(args.fit)!r}" if args.fit is not None else f"--state {str(args.state)!r}"
    width = scorer.num_features
    if data.ndim == 2 and width is not None and data.shape[1] != width:
        letter, kind = ("C", "logit") if scorer.input_kind == "logits" else ("D", "feature")
        raise ValueError(
            f"{str(args.input)!r} has {letter} = {data.shape[1]} {kind} columns; the scorer "
            f"was fitted on {letter} = {width} ({source})."
        )
    scores = scorer(data)
    output: Path = args.output
    write_array(output, scores, force=args.force, inputs=inputs)
    if args.save_state is not None:
        save_state(scorer, args.save_state, force=args.force, inputs=[*inputs, output])
    return 0
