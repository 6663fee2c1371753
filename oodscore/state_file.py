"""State files: a fitted scorer's name, parameters and tensors in one file that is never unpickled.

A state file is what ``torch.save`` writes for a dict of strings, an integer and tensors:

```python
{"format": "oodscore-state", "version": 1,
 "scorer": "mahalanobis",                                # the registry name
 "params": '{"aggregation": "max", "shrinkage": null}',  # the JSON of get_params()
 "state": {"means": tensor, "whitening": tensor},        # state_dict()
 "head": {}}                                             # see below
```

A scorer that applies the classifier head (ViM, ReAct, DICE) keeps it under ``"head"`` as
``{"weight": (C, D), "bias": (C,)}`` tensors, its values when saved (an ``nn.Linear`` head is
saved as its weights), and leaves the head's arguments out of ``"params"``; ``{}`` when it
has no head (one is then lent by `oodscore.evaluate`). Files without the entry read as
``{}``.

`load_state` reads it with ``torch.load(..., weights_only=True)``, which refuses any file
that would run code, and rebuilds the scorer from the name, the parameters and the head.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from oodscore.io import DECOMPRESS_LIMIT, load_torch, write_atomic
from oodscore.scorers.base import SCORERS, FittedScorer
from oodscore.scorers.head import params_and_head, params_with_head

FORMAT = "oodscore-state"
"""The ``"format"`` entry of every state file."""

VERSION = 1
"""The layout version this oodscore writes and reads."""

SUFFIXES = (".pt", ".pth")
"""Extensions of state files (they are torch files)."""


def save_state(
    scorer: FittedScorer,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write a fitted scorer's name, parameters and state to ``path`` (``.pt``/``.pth``).

    The write is atomic (a temporary file, then a rename); an existing file is kept unless
    ``force``, and none of ``inputs`` is ever overwritten.

    Args:
        scorer: A fitted, registered `oodscore.scorers.base.FittedScorer`.
        path: The state file to write.
        force: Overwrite ``path`` if it exists.
        inputs: Files that must not be overwritten, even with ``force``.

    Raises:
        NotFittedError: If ``scorer`` is not fitted.
        ValueError: On an unregistered scorer, parameters JSON cannot hold, another
            extension, or ``path`` among ``inputs``.
        FileExistsError: If ``path`` exists and ``force`` is false.

    Examples:
        >>> import tempfile, pathlib, torch
        >>> from oodscore import Mahalanobis
        >>> from oodscore.state_file import load_state, save_state
        >>> features = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
        >>> scorer = Mahalanobis(shrinkage=0.1).fit(features)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "mahalanobis.pt"
        >>> save_state(scorer, path)
        >>> loaded = load_state(path, name="mahalanobis")
        >>> loaded
        Mahalanobis(aggregation='max', shrinkage=0.1)
        >>> torch.equal(loaded(features), scorer(features))
        True
    """
    check_state_suffix(path)
    if not isinstance(scorer, FittedScorer):
        raise TypeError(f"Expected a fitted scorer (FittedScorer), got {type(scorer).__name__}.")
    name = type(scorer).name
    if not name or name not in SCORERS or SCORERS.get_class(name) is not type(scorer):
        raise ValueError(
            f"Cannot save the state of {type(scorer).__name__}: it is not a registered scorer, "
            "so a state file could not rebuild it."
        )
    # clone() keeps the strides (a transposed whitening stays transposed), so that the loaded
    # scorer multiplies in the same order and gives bit-identical scores.
    state = {k: v.detach().cpu().clone() for k, v in scorer.state_dict().items()}
    params, head = params_and_head(scorer)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "scorer": name,
        "params": _params_json(params, scorer),
        "state": state,
        "head": head,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue(), force=force, inputs=inputs)


def load_state(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    decompress_limit: int = DECOMPRESS_LIMIT,
) -> FittedScorer:
    """Rebuild the fitted scorer saved by `save_state`, without unpickling anything.

    Args:
        path: A state file.
        name: If given, the scorer the file must hold (another one is refused).
        params: If given, parameters the file's must equal (others are refused); the
            parameters not named here are taken from the file.
        decompress_limit: See `oodscore.io.load_torch` (torch writes state files
            uncompressed; a compressed one may expand to at most this many bytes).

    Returns:
        A new scorer of the file's class and parameters, fitted with its tensors.

    Raises:
        ValueError: On a file that is not a state file (a pickle that would run code, a
            corrupt or foreign file, another version), or one of another scorer or with
            other parameters than asked.
        OSError: If the file is missing or cannot be read.
    """
    check_state_suffix(path)
    where = repr(str(path))
    payload = read_payload(
        path, FORMAT, VERSION, what="state file", decompress_limit=decompress_limit
    )
    saved_name = payload.get("scorer")
    saved = parse_json_entry(payload.get("params"), where, "params")
    state = payload.get("state")
    if not isinstance(saved_name, str) or not isinstance(state, dict):
        raise ValueError(f"{where} is a damaged state file (bad 'scorer' or 'state' entry).")
    if name is not None and saved_name != name:
        raise ValueError(f"{where} holds the state of {saved_name!r}, not of {name!r}.")
    cls = SCORERS.get_class(saved_name)
    if not issubclass(cls, FittedScorer):
        raise ValueError(f"{where} names {saved_name!r}, which is not a fitted scorer.")
    if params:
        _check_same_params(cls(**{**saved, **params}), saved, params, where)
    try:
        scorer = cls(**params_with_head(saved, payload.get("head", {})))
        scorer.load_state_dict(state)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} does not rebuild {saved_name!r}: {error}") from None
    return scorer


def check_state_suffix(path: str | os.PathLike[str]) -> None:
    """Refuse a state-file path that does not end in `SUFFIXES`."""
    if Path(path).suffix.lower() not in SUFFIXES:
        raise ValueError(f"Expected a state file ending in .pt or .pth, got {str(path)!r}.")


def json_entry(value: object, what: str, *, file: str = "state file") -> str:
    """``value`` as the JSON text of an entry of an oodscore ``file`` (no NaN, keys sorted).

    Raises:
        ValueError: If JSON cannot hold ``value``, naming ``what`` it is.
    """
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot save {what} as JSON ({error}); a {file} holds only numbers, strings, "
            "booleans, None and lists of them."
        ) from None


def parse_json_entry(
    text: object, where: str, key: str, *, file: str = "state file"
) -> dict[str, Any]:
    """The JSON object of the entry ``key`` of the oodscore ``file`` at ``where``.

    Raises:
        ValueError: If the entry is not the text of a JSON object.
    """
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"{where} is a damaged {file} ({key!r} is not a JSON object).")
    return value


def _params_json(params: dict[str, Any], scorer: FittedScorer) -> str:
    return json_entry(params, f"the parameters of {scorer!r}")


def _check_same_params(
    requested: FittedScorer, saved: dict[str, Any], asked: Mapping[str, Any], where: str
) -> None:
    """Compare the asked parameters, as the constructor stores them, with the file's."""
    wanted = json.loads(_params_json(params_and_head(requested)[0], requested))
    for key in asked:
        if key not in wanted:  # the head's arguments: the head is saved in the file
            raise ValueError(
                f"{where} holds the scorer's classifier head; {key!r} cannot be given with it."
            )
        have, want = saved.get(key), wanted[key]
        if have != want or isinstance(have, bool) != isinstance(want, bool):
            raise ValueError(
                f"{where} was fitted with {key}={have!r}, not {key}={want!r}; drop the "
                "parameter to use the file's, or fit again."
            )


def read_payload(
    path: str | os.PathLike[str],
    format: str,
    version: int,
    *,
    what: str,
    decompress_limit: int = DECOMPRESS_LIMIT,
) -> dict[str, Any]:
    """An oodscore file's dict, read with ``weights_only=True``; format and version checked.

    Args:
        path: The file.
        format: The ``"format"`` entry it must hold.
        version: The ``"version"`` entry it must hold.
        what: What the file is, for messages (``"state file"``, ``"detector file"``).
        decompress_limit: The most the file may expand to.

    Raises:
        ValueError: On a file of another format or version, or one that is not a torch file
            of plain data (a pickle that would run code included).
    """
    where = repr(str(path))
    payload = load_torch(path, decompress_limit=decompress_limit)
    if not isinstance(payload, dict) or payload.get("format") != format:
        raise ValueError(f"{where} is not an oodscore {what} (no 'format': {format!r}).")
    if payload.get("version") != version:
        raise ValueError(
            f"{where} is a {what} of version {payload.get('version')!r}; this oodscore "
            f"reads version {version}."
        )
    return payload
