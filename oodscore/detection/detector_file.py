"""Detector files: a calibrated detector in one file that is never unpickled.

A detector file is what ``torch.save`` writes for a dict of strings, an integer and tensors,
in the manner of `oodscore.state_file`:

```python
{"format": "oodscore-detector", "version": 1,
 "scorer": "energy",                              # the registry name
 "params": '{"temperature": 1.0}',                # the JSON of get_params()
 "grouping": '{"rule": "predicted_class"}',       # the JSON of the group rule
 "state": {...},                                  # OODDetector.state_dict(): tensors only
 "head": {}}                                      # the scorer's classifier head, if it has one
```

The ``"head"`` entry is that of `oodscore.state_file`: the weight and bias of the head of a
scorer that applies one (ViM, ReAct, ASH, ...), as tensors.

`load_detector` reads it with ``torch.load(..., weights_only=True)`` and rebuilds the
detector from the names and the JSON alone. The model is not part of it: a detector file
decides on saved logits (``oodscore detect``), or on a model's outputs in Python.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from oodscore.detection.detector import OODDetector
from oodscore.detection.grouping import ByClassGroups, ByLabelCount, ByPredictedClass, Grouping
from oodscore.io import DECOMPRESS_LIMIT, write_atomic
from oodscore.scorers.base import SCORERS
from oodscore.scorers.head import params_and_head, params_with_head
from oodscore.state_file import json_entry, parse_json_entry, read_payload

SUFFIXES = (".pt", ".pth")
"""Extensions of detector files (they are torch files)."""

FORMAT = "oodscore-detector"
"""The ``"format"`` entry of every detector file."""

VERSION = 1
"""The layout version this oodscore writes and reads."""

FILE = "detector file"
"""What messages call a detector file."""


def save_detector(
    detector: OODDetector,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write a calibrated detector (scorer, group rule, calibration) to ``path`` (.pt/.pth).

    Atomic (a temporary file, then a rename); an existing file is kept unless ``force``,
    and none of ``inputs`` is ever overwritten.

    Raises:
        RuntimeError: If the detector is not calibrated.
        ValueError: On an unregistered scorer, parameters or group labels JSON cannot hold,
            a custom `Grouping`, another extension, or ``path`` among ``inputs``.
        FileExistsError: If ``path`` exists and ``force`` is false.

    Examples:
        >>> import pathlib, tempfile, torch
        >>> from oodscore.detection import OODDetector, load_detector, save_detector
        >>> logits = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
        >>> detector = OODDetector("energy", grouping=[0, 0, 1, 1]).calibrate(
        ...     logits=logits, alpha=0.1)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "detector.pt"
        >>> save_detector(detector, path)
        >>> loaded = load_detector(path)
        >>> loaded.grouping, loaded.alpha, loaded.report.num_calibration
        (ByClassGroups(classes=[0, 0, 1, 1]), 0.1, 200)
        >>> torch.equal(loaded(logits).reject, detector(logits).reject)
        True
    """
    check_detector_suffix(path)
    state = detector.state_dict()
    scorer = detector.scorer
    name = type(scorer).name
    if not name or name not in SCORERS or SCORERS.get_class(name) is not type(scorer):
        raise ValueError(
            f"Cannot save a detector of {type(scorer).__name__}: it is not a registered scorer, "
            "so a detector file could not rebuild it."
        )
    params, head = params_and_head(scorer)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "scorer": name,
        "params": json_entry(params, f"the parameters of {scorer!r}", file=FILE),
        "grouping": json_entry(_grouping_spec(detector.grouping), "the group rule", file=FILE),
        "state": state,
        "head": head,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue(), force=force, inputs=inputs)


def load_detector(
    path: str | os.PathLike[str], *, decompress_limit: int = DECOMPRESS_LIMIT
) -> OODDetector:
    """Rebuild the detector saved by `save_detector`, without unpickling anything.

    Raises:
        ValueError: On a file that is not a detector file (a pickle that would run code, a
            state file, a corrupt or foreign file, another version) or whose contents do
            not rebuild a detector.
        OSError: If the file is missing or cannot be read.
    """
    check_detector_suffix(path)
    where = repr(str(path))
    payload = read_payload(path, FORMAT, VERSION, what=FILE, decompress_limit=decompress_limit)
    name, state = payload.get("scorer"), payload.get("state")
    params = parse_json_entry(payload.get("params"), where, "params", file=FILE)
    grouping = parse_json_entry(payload.get("grouping"), where, "grouping", file=FILE)
    if not isinstance(name, str) or not isinstance(state, dict):
        raise ValueError(f"{where} is a damaged detector file (bad 'scorer' or 'state' entry).")
    try:
        scorer = SCORERS.get_class(name)(**params_with_head(params, payload.get("head", {})))
        detector = OODDetector(scorer, grouping=_grouping_of(grouping))
        detector.load_state_dict(state)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} does not rebuild a detector: {error}") from None
    return detector


def check_detector_suffix(path: str | os.PathLike[str]) -> None:
    """Refuse a detector-file path that does not end in `SUFFIXES`."""
    if Path(path).suffix.lower() not in SUFFIXES:
        raise ValueError(f"Expected a detector file ending in .pt or .pth, got {str(path)!r}.")


def _grouping_spec(grouping: Grouping | None) -> dict[str, Any]:
    if grouping is None:
        return {"rule": None}
    if type(grouping) is ByPredictedClass:
        return {"rule": "predicted_class"}
    if type(grouping) is ByLabelCount:
        return {"rule": "label_count", "threshold": grouping.threshold}
    if type(grouping) is ByClassGroups:
        table = grouping.rule_state(0)["class_groups"].tolist()
        return {"rule": "class_groups", "classes": [grouping.labels[g] for g in table]}
    raise ValueError(
        f"Cannot save the group rule {grouping!r}: a detector file holds the built-in rules "
        "(predicted_class, label_count, class groups)."
    )


def _grouping_of(spec: dict[str, Any]) -> Grouping | None:
    rule = spec.get("rule")
    if rule is None:
        return None
    if rule == "predicted_class":
        return ByPredictedClass()
    if rule == "label_count":
        return ByLabelCount(threshold=spec.get("threshold", 0.5))
    if rule == "class_groups" and isinstance(spec.get("classes"), list):
        return ByClassGroups(spec["classes"])
    raise ValueError(f"unknown group rule {spec!r}")
