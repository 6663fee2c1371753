"""Which fitted class each in-distribution sample belongs to: class ids, multi-hot labels, none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import to_torch


@dataclass(frozen=True)
class Membership:
    """Sample-class pairs: row ``rows[r]`` of the features belongs to class ``classes[r]``.

    Single-label data have one pair per sample; multi-label data one per positive label (a
    sample with k positive labels is in k classes); no targets put every sample in class 0.

    Attributes:
        rows: (R,) int64 row indices into the features.
        classes: (R,) int64 class ids, each in ``0 .. num_classes - 1``.
        num_classes: C; every class has at least one row.
        multi_label: Whether the targets were multi-hot.
    """

    rows: Tensor
    classes: Tensor
    num_classes: int
    multi_label: bool


def class_membership(targets: object, num_rows: int) -> Membership:
    """The `Membership` of ``num_rows`` samples given their ``targets``.

    Args:
        targets: ``None`` (one class); integer class ids (N,) in ``0 .. C - 1``; or multi-hot
            labels (N, C) of 0/1 (bool, integer or float). A tensor or a NumPy array.
        num_rows: N, the number of feature rows.

    Raises:
        ValueError: On a length other than N, negative ids, a class with no sample, or
            multi-hot values other than 0 and 1.
        TypeError: On targets that are not a tensor or an array of numbers.

    Examples:
        >>> import torch
        >>> from oodscore.scorers.membership import class_membership
        >>> m = class_membership(torch.tensor([[1, 0, 1], [0, 1, 0]]), 2)
        >>> m.rows.tolist(), m.classes.tolist(), m.num_classes
        ([0, 0, 1], [0, 2, 1], 3)
    """
    if targets is None:
        rows = torch.arange(num_rows)
        return Membership(rows, torch.zeros_like(rows), 1, multi_label=False)
    if isinstance(targets, np.ndarray):
        if targets.dtype.kind not in "biuf":
            raise TypeError(f"Expected `targets` to hold numbers, got dtype {targets.dtype}.")
        labels = to_torch(targets)
    elif isinstance(targets, Tensor):
        labels = targets.detach().cpu()
        if labels.dtype.is_complex:
            raise TypeError(f"Expected `targets` to hold real numbers, got dtype {labels.dtype}.")
    else:
        raise TypeError(
            f"Expected `targets` to be None, a torch.Tensor or a numpy.ndarray, got "
            f"{type(targets).__name__}."
        )
    if labels.ndim not in (1, 2) or labels.shape[0] != num_rows:
        raise ValueError(
            f"Expected `targets` of shape (N,) class ids or (N, C) multi-hot labels with "
            f"N = {num_rows} (the rows of `features`), got shape {tuple(labels.shape)}."
        )
    if labels.ndim == 2:
        return _multi_hot(labels)
    return _class_ids(labels)


def _class_ids(labels: Tensor) -> Membership:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"Expected `targets` to hold integer class ids, got dtype {labels.dtype}.")
    classes = labels.long()
    if classes.numel() == 0:
        raise ValueError("Expected `targets` to hold at least one class id, got none.")
    if int(classes.min()) < 0:
        raise ValueError(f"Expected `targets` >= 0 (class ids), got {int(classes.min())}.")
    counts = torch.bincount(classes)
    _check_every_class(counts, "class id")
    return Membership(torch.arange(len(classes)), classes, len(counts), multi_label=False)


def _multi_hot(labels: Tensor) -> Membership:
    if labels.shape[1] == 0:
        raise ValueError(
            f"Expected `targets` to have C >= 1 labels, got shape {tuple(labels.shape)}."
        )
    if labels.dtype != torch.bool:
        bad = (labels != 0) & (labels != 1)
        if bool(bad.any()):
            value = labels[bad][0].item()
            raise ValueError(f"Expected multi-hot `targets` of 0 and 1, got the value {value!r}.")
    positive = labels != 0
    _check_every_class(positive.sum(dim=0), "label")
    rows, classes = torch.nonzero(positive, as_tuple=True)
    return Membership(rows, classes, labels.shape[1], multi_label=True)


def _check_every_class(counts: Tensor, what: str) -> None:
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise ValueError(
            f"Expected every {what} 0..{len(counts) - 1} to have at least one sample in "
            f"`targets`; {what} {int(empty[0])} has none ({empty.numel()} empty in all). Fit "
            "on data that covers every class, or renumber the classes."
        )
