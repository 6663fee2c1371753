"""``oodscore list``: every registered scorer with its description and parameters.

The registry (and with it torch) is imported when the command runs, not when it registers.
"""

from __future__ import annotations

import argparse
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oodscore.scorers.base import Scorer


def register(subparsers: Any) -> None:
    """Add the ``list`` subcommand."""
    parser = subparsers.add_parser(
        "list",
        help="list the scorers with their parameters",
        description=(
            "List the registered scorers: name, one-line description, what the scorer reads "
            "when not logits (e.g. [features: fit on ID features]), parameters."
        ),
    )
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch filter (default: *)")
    parser.set_defaults(run=run)


def describe(cls: type) -> tuple[str, str]:
    """A class's one-line summary with its paper, and its ``name=default`` parameter list."""
    lines = (inspect.getdoc(cls) or "").strip().splitlines()
    summary = lines[0].rstrip(".") if lines else ""
    # The docstring's "Source: paper; official code" line: keep the paper.
    sources = [line.removeprefix("Source:").strip() for line in lines if line.startswith("Source:")]
    if sources:
        summary = f"{summary} ({sources[0].split(';')[0].rstrip('.')})"
    params = [
        f"{p.name} (required)" if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in inspect.signature(cls).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    return summary, ", ".join(params)


def kind_tag(cls: type[Scorer]) -> str:
    """What the scorer reads, when more than logits: ``[features + head: fit on ID features]``."""
    if cls.input_kind == "model":
        return "[model: runs the model]"
    reads = "features + head" if cls.needs_head else cls.input_kind
    if cls.requires_fit:
        return f"[{reads}: fit on ID {cls.input_kind}]"
    return "" if reads == "logits" else f"[{reads}]"


def run(args: argparse.Namespace) -> int:
    """Print one line per matching scorer."""
    # Importing any module of oodscore.scorers runs the package, which registers every scorer.
    from oodscore.scorers.base import SCORERS

    names = SCORERS.names(args.pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        cls = SCORERS.get_class(name)
        summary, params = describe(cls)
        tags = [t for t in (kind_tag(cls), f"[{params}]" if params else "") if t]
        print("  ".join([f"{name:<{width}}", summary, *tags]))
    return 0
