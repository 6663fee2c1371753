"""The work of ``oodscore score`` (its options: `oodscore.commands.score`).

The input is read in row blocks (`oodscore.commands.streaming.score_rows`): a ``.npy`` file is
memory-mapped, so scoring a file larger than the memory holds one block of it and the
scores. The scores are written once, atomically, or as CSV text to stdout with ``-o -``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from oodscore.commands.options import STDOUT, InputFile, parse_params, path_of, split_scorer
from oodscore.commands.score import check_fit_options, check_kind, give_head
from oodscore.commands.streaming import (
    Check,
    plain,
    read_array,
    read_head,
    read_targets,
    resolve_device,
    score_rows,
)
from oodscore.io import check_file, check_outputs, check_suffix, write_array, write_csv
from oodscore.scorers.base import SCORERS, FittedScorer, Scorer
from oodscore.state_file import check_state_suffix, load_state, save_state


def run_score(args: argparse.Namespace) -> int:
    """Build (and fit or load) the scorer, score the input in row blocks, write the scores."""
    args.name, items = split_scorer(args.name, option="NAME")
    cls = SCORERS.get_class(args.name)
    check_kind(args.name, cls, head=args.head is not None or args.state is not None)
    params = parse_params([*items, *args.param], cls)
    check_fit_options(args, cls)
    device = resolve_device(args.device)
    output = None if args.output == STDOUT else Path(args.output)
    if output is not None:
        check_suffix(output)
    if args.save_state is not None:
        check_state_suffix(args.save_state)
    given = (args.input, args.fit, args.fit_targets, args.state, args.head)
    inputs = [path for path in map(path_of, given) if path is not None]
    outputs = [p for p in (output, args.save_state) if p is not None]
    # Fail before loading, fitting and scoring a large input.
    for path in inputs:
        if path != args.state:  # a state file's name is checked when it is read
            check_suffix(path)
        check_file(path)
    check_outputs(outputs, inputs, force=args.force)
    if args.state is not None:
        scorer: Scorer = load_state(
            args.state, name=args.name, params=params, decompress_limit=args.decompress_limit
        )
    else:
        scorer = cls(**params)
    give_head({args.name: scorer}, read_head(args))
    check_kind(args.name, scorer)
    if isinstance(scorer, FittedScorer):
        _fit(scorer, args)
    data = read_array(args.input, args, mmap=True)
    if isinstance(scorer, FittedScorer):
        _check_width(scorer, data, args)
    scores = _score(scorer, data, device)
    if output is None:
        sys.stdout.flush()
        write_csv(sys.stdout.buffer, scores)
        sys.stdout.buffer.flush()
    else:
        write_array(output, scores, force=args.force, inputs=inputs)
    if args.save_state is not None:
        assert isinstance(scorer, FittedScorer)  # check_fit_options: --save-state needs --fit
        written = [] if output is None else [output]
        save_state(scorer, args.save_state, force=args.force, inputs=[*inputs, *written])
    return 0


def _score(scorer: Scorer, data: Any, device: Any) -> np.ndarray[Any, Any]:
    """The scores of every row of ``data``, in blocks; an empty input gives empty scores."""
    if data.ndim >= 1 and data.shape[0] == 0:
        scores: np.ndarray[Any, Any] = scorer(np.asarray(data))
        return scores
    name = type(scorer).name
    inputs: dict[str, tuple[Any, Check]] = {scorer.input_kind: (data, plain)}
    return score_rows({name: scorer}, inputs, device=device, label=f"score {name}")[name]


def _fit(scorer: FittedScorer, args: argparse.Namespace) -> None:
    if args.fit is None:
        return  # read from --state
    fit_data = read_array(args.fit, args)  # whole: fitting reads every row
    targets = None if args.fit_targets is None else read_targets(args.fit_targets, args)
    try:
        scorer.fit(fit_data, targets)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Cannot fit {args.name!r} on {str(args.fit)!r}: {error}") from None


def _check_width(scorer: FittedScorer, data: Any, args: argparse.Namespace) -> None:
    """Name the files when the input's width differs from the fit's."""
    source: InputFile | Path = args.fit if args.fit is not None else args.state
    option = "--fit" if args.fit is not None else "--state"
    width = scorer.num_features
    if data.ndim == 2 and width is not None and data.shape[1] != width:
        letter, kind = ("C", "logit") if scorer.input_kind == "logits" else ("D", "feature")
        raise ValueError(
            f"{str(args.input)!r} has {letter} = {data.shape[1]} {kind} columns; the scorer "
            f"was fitted on {letter} = {width} ({option} {str(source)!r})."
        )
