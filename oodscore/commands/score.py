"""``oodscore score``: score a saved logits or features file with one registered scorer.

Feature scorers get their fitted state from ID features (``--fit``, ``--fit-targets``) or
from a state file (``--state``), and can save it (``--save-state``).
"""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path
from typing import Any

from oodscore.io import (
    check_outputs,
    check_suffix,
    encode_array,
    load_array,
    load_targets,
    write_atomic,
)
from oodscore.scorers.base import SCORERS, FittedScorer, Scorer
from oodscore.state_file import check_state_suffix, load_state, save_state

FEATURE_OPTIONS = ("fit", "fit_targets", "state", "save_state")
"""The options (``args`` attributes) that only feature scorers take."""


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand."""
    parser = subparsers.add_parser(
        "score",
        help="score a logits or features file (.npy, .npz, .pt, .csv)",
        description=(
            "Score the (N, C) logits, or the (N, D) features for a feature scorer, in INPUT "
            "with the scorer NAME and write the N scores to OUTPUT (format from its "
            "extension). Higher score = more in-distribution. A feature scorer is fitted on "
            "ID features (--fit) or read from a state file (--state)."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="a scorer name from `oodscore list`")
    parser.add_argument(
        "input", metavar="INPUT", type=Path, help="logits file, or features for a feature scorer"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="scores file to write")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scorer parameter, repeatable (e.g. --param temperature=2)",
    )
    parser.add_argument(
        "--key", help="array to read from .npz files or dicts in .pt files (every input)"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUTPUT (and --save-state) if it exists"
    )
    group = parser.add_argument_group(
        "feature scorers", "where the fitted state comes from: --fit or --state, exactly one"
    )
    group.add_argument(
        "--fit", type=Path, metavar="FEATURES", help="fit on these (N, D) ID features"
    )
    group.add_argument(
        "--fit-targets",
        type=Path,
        metavar="TARGETS",
        help="targets of the --fit features: (N,) class ids or (N, C) multi-hot labels",
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


def parse_params(items: list[str], cls: type) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into keyword arguments of ``cls``, values as Python literals."""
    accepted = [
        p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected --param KEY=VALUE, got {item!r}.")
        if key not in accepted:
            options = ", ".join(accepted) if accepted else "none"
            raise ValueError(
                f"Unknown parameter {key!r} for {cls.__name__}; it accepts: {options}."
            )
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text
    return params


def run(args: argparse.Namespace) -> int:
    """Build (and fit or load) the scorer, score the input, write the outputs atomically."""
    cls = SCORERS.get_class(args.name)
    params = parse_params(args.param, cls)
    check_feature_options(args, cls)
    output: Path = args.output
    check_suffix(output)
    if args.save_state is not None:
        check_state_suffix(args.save_state)
    inputs = [p for p in (args.input, args.fit, args.fit_targets, args.state) if p is not None]
    outputs = [output] if args.save_state is None else [output, args.save_state]
    # Fail before loading, fitting and scoring a large input.
    check_outputs(outputs, inputs, force=args.force)
    if args.state is not None:
        scorer: Scorer = load_state(args.state, name=args.name, params=params)
    else:
        scorer = cls(**params)
    if isinstance(scorer, FittedScorer):
        return _score_features(scorer, args, inputs)
    scores = scorer(load_array(args.input, key=args.key))
    write_atomic(output, encode_array(scores, output.suffix), force=args.force, inputs=inputs)
    return 0


def refuse_feature_options(args: argparse.Namespace, options: tuple[str, ...], why: str) -> None:
    """Refuse the given ``options`` (``args`` attributes): only feature scorers read them."""
    given = [f"--{o.replace('_', '-')}" for o in options if getattr(args, o)]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{', '.join(given)} {verb} only to feature scorers; {why}.")


def check_kind(label: str, scorer: type[Scorer] | Scorer) -> None:
    """Refuse scorers that run a model: the command line has only saved arrays."""
    if scorer.input_kind == "model":
        raise ValueError(
            f"{label!r} runs a model; the command line scores saved logits and features."
        )


def check_feature_options(args: argparse.Namespace, cls: type[Scorer]) -> None:
    """The state options: none for other scorers, exactly one source for feature scorers."""
    check_kind(args.name, cls)
    if not issubclass(cls, FittedScorer):
        refuse_feature_options(args, FEATURE_OPTIONS, f"{args.name!r} reads logits")
        return
    if args.fit is None and args.state is None:
        raise ValueError(
            f"{args.name!r} is a feature scorer: fit it on ID features with --fit FEATURES "
            "[--fit-targets TARGETS], or read a fitted one with --state STATE."
        )
    if args.fit is not None and args.state is not None:
        raise ValueError("Give either --fit or --state, not both.")
    if args.fit_targets is not None and args.fit is None:
        raise ValueError("--fit-targets needs --fit (the features they label).")
    if args.save_state is not None and args.fit is None:
        raise ValueError("--save-state writes the state fitted with --fit; --state is a file.")


def _score_features(scorer: FittedScorer, args: argparse.Namespace, inputs: list[Path]) -> int:
    if args.fit is not None:
        fit_features = load_array(args.fit, key=args.key)
        targets = None if args.fit_targets is None else load_targets(args.fit_targets, key=args.key)
        try:
            scorer.fit(fit_features, targets)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Cannot fit {args.name!r} on {str(args.fit)!r}: {error}") from None
    features = load_array(args.input, key=args.key)
    source = f"--fit {str(args.fit)!r}" if args.fit is not None else f"--state {str(args.state)!r}"
    width = scorer.num_features
    if features.ndim == 2 and width is not None and features.shape[1] != width:
        raise ValueError(
            f"{str(args.input)!r} has D = {features.shape[1]} feature columns; the scorer was "
            f"fitted on D = {width} ({source})."
        )
    scores = scorer(features)
    output: Path = args.output
    write_atomic(output, encode_array(scores, output.suffix), force=args.force, inputs=inputs)
    if args.save_state is not None:
        save_state(scorer, args.save_state, force=args.force, inputs=[*inputs, output])
    return 0
