"""Scoring files in row blocks, shared by ``score`` and ``eval``.

A ``.npy`` input is memory-mapped and scored block by block (`score_rows`): the process holds
one block of the input, and the scores, never the whole file. Each block goes to the scoring
device (`resolve_device`); a progress bar shows on a terminal for long runs (tqdm, from the
``progress`` extra); an error in a block is reported for the whole file (row numbers count
from the file's first row).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import CHUNK_ELEMENTS, as_tensor
from oodscore.commands.options import InputFile, reading
from oodscore.commands.score import reads
from oodscore.io import load_array, load_head, load_targets, row_blocks
from oodscore.scorers.base import Scorer

BLOCK_CHUNKS = 8
"""Row chunks of `oodscore._arrays.map_rows` per block read from a file (16 MiB of float32):
large enough that per-block costs vanish, small enough to stay out of the memory's way. A
block is a whole number of chunks, so a scorer sees the same chunks as on the whole array."""

PROGRESS_DELAY = 1.0
"""Seconds a run lasts before its progress bar shows (short runs stay quiet)."""

Check = Callable[[np.ndarray[Any, Any]], Tensor]
"""Checks a block (or a whole array) and returns it as a tensor in its compute dtype."""


def read_array(item: InputFile | Path, args: argparse.Namespace, *, mmap: bool = False) -> Any:
    """The array of an input option (``PATH`` or ``PATH::KEY``), read as the options say."""
    path, options = _where(item, args)
    return load_array(path, **options, mmap=mmap)


def read_scorer_input(
    item: InputFile | Path, args: argparse.Namespace, scorer: Scorer, *, scores: bool = False
) -> dict[str, Any]:
    """``{"logits"|"features": array}`` of an input option, as ``scorer`` reads it.

    With ``scores``, ``{"scores": array}`` instead: (N,) scores of the scorer, a one-column
    CSV of them read as (N,).
    """
    array = read_array(item, args)
    if not scores:
        return {reads(scorer): array}
    if array.ndim == 2 and array.shape[1] == 1:  # a one-column CSV of scores
        array = array[:, 0]
    return {"scores": array}


def read_head(args: argparse.Namespace) -> dict[str, Any] | None:
    """``{"weight": (C, D), "bias": (C,) or None}`` of ``--head``; ``None`` without it."""
    item: InputFile | None = args.head
    if item is None:
        return None
    weight, bias = load_head(item.path, prefix=item.key, decompress_limit=args.decompress_limit)
    return {"weight": weight, "bias": bias}


def read_targets(item: InputFile | Path, args: argparse.Namespace) -> Any:
    """The targets of an input option, read with `oodscore.io.load_targets`."""
    path, options = _where(item, args)
    return load_targets(path, **options)


def _where(item: InputFile | Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    options = reading(args)
    if isinstance(item, InputFile):
        if item.key is not None:
            options["key"] = item.key
        return item.path, options
    return item, options


def resolve_device(text: str) -> torch.device:
    """The device of ``--device``, checked usable here.

    Raises:
        ValueError: One line that says why: an unknown device string, CUDA missing from
            this torch or from this machine, a device index beyond the count, ...
    """
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"--device {text!r} is not a device: expected cpu, cuda, cuda:INDEX, mps, xpu..."
        ) from None
    if device.type == "meta":
        raise ValueError("--device 'meta' holds no values; score on cpu or an accelerator.")
    if device.type == "cuda":
        _check_cuda(text, device)
    try:
        torch.zeros(1, device=device).add_(1)  # a device must compute, not just parse
    except Exception as error:  # AssertionError when torch lacks the backend, RuntimeError...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--device {text!r} cannot be used here: {reason.rstrip('.')}.") from None
    return device


def _check_cuda(text: str, device: torch.device) -> None:
    if torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(
            f"--device {text!r}: this torch ({torch.__version__}) is built without CUDA; "
            "score on cpu, or install a CUDA build of torch."
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"--device {text!r}: no CUDA device is available on this machine.")
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"--device {text!r}: this machine has {count} CUDA device"
            f"{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1})."
        )


def block_rows(columns: int) -> int:
    """Rows per block for arrays of ``columns`` values per row: `BLOCK_CHUNKS` scorer chunks."""
    return BLOCK_CHUNKS * max(1, CHUNK_ELEMENTS // max(1, columns))


def score_rows(
    scorers: Mapping[str, Scorer],
    inputs: Mapping[str, tuple[np.ndarray[Any, Any], Check]],
    *,
    device: torch.device,
    label: str,
) -> dict[str, np.ndarray[Any, Any]]:
    """``{scorer label: scores}`` of ``inputs``, read and scored one block of rows at a time.

    Args:
        scorers: The labelled scorers; each reads the input of its `input_kind`.
        inputs: ``{input kind: (array, check)}``: the rows of one set (logits, features, or
            both with one row each per sample), and the check that turns a block into a
            tensor (raising the error that names the argument).
        device: Where the blocks are scored; the scores come back as NumPy arrays.
        label: What the progress bar says it is scoring.
    """
    kinds = list(inputs)
    total = inputs[kinds[0]][0].shape[0]
    widest = max(int(np.prod(a.shape[1:])) for a, _ in inputs.values())
    rows = block_rows(widest)
    out: dict[str, np.ndarray[Any, Any]] = {}
    # Each block is scored before the next is read: one buffer per input serves them all.
    walks = [row_blocks(inputs[kind][0], rows, reuse=True) for kind in kinds]
    with torch.no_grad(), _progress(label, total) as advance:
        for parts in zip(*walks, strict=True):
            start, count = parts[0][0], len(parts[0][1])
            try:
                blocks = {kind: block for kind, (_, block) in zip(kinds, parts, strict=True)}
                scores = _score_block(scorers, inputs, blocks, device)
            except ValueError:
                if count != total:  # say it of the whole file, rows counted from its start
                    _score_block(scorers, inputs, {k: a for k, (a, _) in inputs.items()})
                raise
            for name, values in scores.items():
                if name not in out:
                    out[name] = np.empty(total, dtype=values.dtype)
                out[name][start : start + count] = values
            advance(count)
    return out


def _score_block(
    scorers: Mapping[str, Scorer],
    inputs: Mapping[str, tuple[np.ndarray[Any, Any], Check]],
    blocks: Mapping[str, np.ndarray[Any, Any]],
    device: torch.device = torch.device("cpu"),  # noqa: B008  (a constant, not a call per use)
) -> dict[str, np.ndarray[Any, Any]]:
    """The scores of one block of each input: checked, moved to ``device``, scored."""
    tensors = {kind: inputs[kind][1](block).to(device) for kind, block in blocks.items()}
    return {
        name: scorer(tensors[scorer.input_kind]).cpu().numpy() for name, scorer in scorers.items()
    }


def as_checked(name: str, check: Callable[[Any, str], Tensor]) -> Check:
    """A `Check` from a checker of the library (``as_logits``, ``as_features``) and a name."""
    return lambda array: check(array, name)


def plain(array: np.ndarray[Any, Any]) -> Tensor:
    """A block as a tensor in its compute dtype (NumPy's rules), unchecked: the scorer checks."""
    tensor, _ = as_tensor(array, "input")
    return tensor


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A function that advances a progress bar of ``total`` rows, on a terminal with tqdm.

    Without a terminal on stderr, or without tqdm (``pip install oodscore[progress]``),
    nothing is shown. The bar appears after `PROGRESS_DELAY` seconds and is removed at the
    end.
    """
    stream = sys.stderr
    bar = None
    if stream is not None and stream.isatty():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(
                total=total,
                desc=f"oodscore: {label}",
                unit=" rows",
                unit_scale=True,
                leave=False,
                delay=PROGRESS_DELAY,
                file=stream,
            )
    if bar is None:
        yield lambda rows: None
        return
    try:
        yield bar.update
    finally:
        bar.close()
