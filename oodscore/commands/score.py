"""``oodscore score``: score a saved logits file with one registered scorer."""

from __future__ import annotations

import argparse
import ast
import inspect
from pathlib import Path
from typing import Any

from oodscore.io import check_suffix, encode_array, load_array, write_atomic
from oodscore.scorers.base import SCORERS


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand."""
    parser = subparsers.add_parser(
        "score",
        help="score a logits file (.npy, .npz, .pt, .csv)",
        description=(
            "Score the (N, C) logits in INPUT with the scorer NAME and write the N scores to "
            "OUTPUT (format from its extension). Higher score = more in-distribution."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="a scorer name from `oodscore list`")
    parser.add_argument("input", metavar="INPUT", type=Path, help="logits file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="scores file to write")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scorer parameter, repeatable (e.g. --param temperature=2)",
    )
    parser.add_argument("--key", help="array to read from an .npz file or a dict in a .pt file")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
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
    """Load, score and write atomically."""
    cls = SCORERS.get_class(args.name)
    scorer = cls(**parse_params(args.param, cls))
    output: Path = args.output
    check_suffix(output)
    if output.exists() and not args.force:  # fail before loading and scoring a large input
        raise FileExistsError(f"{str(output)!r} exists; pass --force to overwrite it.")
    logits = load_array(args.input, key=args.key)
    scores = scorer(logits)
    write_atomic(output, encode_array(scores, output.suffix), force=args.force, inputs=[args.input])
    return 0
