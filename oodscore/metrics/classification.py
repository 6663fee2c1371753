r"""Quality of the ID task: accuracy for class targets, macro mAP for multi-hot targets.

`oodscore.evaluate` and `oodscore.evaluate_logits` add these to a `oodscore.Report` when
the ID set carries targets: ``accuracy`` of the arg-max prediction for (N,) class indices,
``map`` (macro mean average precision, as scikit-learn computes it) for (N, C) multi-hot
labels.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import as_tensor, to_torch
from oodscore._validation import check_logits
from oodscore.metrics import aupr_in

__all__ = ["as_logits", "check_targets", "id_task_metrics", "mean_average_precision"]


def id_task_metrics(logits: Any, targets: Any) -> dict[str, float]:
    """``{"accuracy": ...}`` for (N,) class indices, ``{"map": ...}`` for (N, C) multi-hot labels.

    Examples:
        >>> import torch
        >>> from oodscore.metrics.classification import id_task_metrics
        >>> id_task_metrics(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        {'accuracy': 0.5}
    """
    tensor = as_logits(logits, "logits")
    target_tensor = _as_targets(targets)
    check_targets(target_tensor, tensor.shape, "id_targets")
    if target_tensor.ndim == 1:
        correct = tensor.argmax(dim=1) == target_tensor.to(tensor.device)
        return {"accuracy": float(correct.double().mean())}
    return {"map": mean_average_precision(tensor, target_tensor)}


def check_targets(targets: Tensor, logits_shape: torch.Size, name: str) -> None:
    """Check targets against (N, C) logits: (N,) integer classes or (N, C) 0/1 labels."""
    n, c = logits_shape
    if targets.ndim == 1:
        if targets.dtype.is_floating_point or targets.dtype in (torch.bool, torch.complex64):
            raise TypeError(
                f"Expected `{name}` of shape (N,) to hold integer class indices, got dtype "
                f"{targets.dtype}."
            )
        if len(targets) != n:
            raise ValueError(f"Expected `{name}` to have N = {n} entries, got {len(targets)}.")
        if n and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(
                f"Expected `{name}` to be class indices in 0..{c - 1}, got values from "
                f"{int(targets.min())} to {int(targets.max())}."
            )
        return
    if targets.ndim == 2:
        if tuple(targets.shape) != (n, c):
            raise ValueError(
                f"Expected multi-hot `{name}` of shape {(n, c)} like the logits, got "
                f"{tuple(targets.shape)}."
            )
        if not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError(f"Expected multi-hot `{name}` to hold only 0 and 1.")
        return
    raise ValueError(
        f"Expected `{name}` to be (N,) class indices or (N, C) multi-hot labels, got shape "
        f"{tuple(targets.shape)}."
    )


def mean_average_precision(scores: Any, targets: Any) -> float:
    r"""Macro mean average precision of multi-label scores, as scikit-learn computes it.

    $$ \text{mAP} = \frac{1}{C} \sum_{c=1}^{C} \text{AP}_c, \qquad
       \text{AP}_c = \sum_k (R_k - R_{k-1}) P_k $$

    the step-wise (not interpolated) average precision of label c, ranking the samples by
    their logit (or any increasing function of it) for that label; the same number as
    ``sklearn.metrics.average_precision_score(targets, scores, average="macro")``. As there,
    a label with no positive sample counts with AP = 0 (a warning names it) and a label
    with no negative sample with AP = 1. AP per label comes from
    `oodscore.metrics.aupr_in` (positives as the ID side).

    Args:
        scores: (N, C) scores, higher = label more likely (logits are best: a sigmoid in
            float32 ties confident samples and changes the ranking).
        targets: (N, C) multi-hot labels of 0 and 1.

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics.classification import mean_average_precision
        >>> y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
        >>> s = np.array([[2.0, 0.1], [0.5, 0.9], [1.0, -0.2], [1.5, 0.3]])
        >>> round(mean_average_precision(s, y), 4)  # AP 0.8333 and 0.75
        0.7917
    """
    score_tensor = as_logits(scores, "scores")
    target_tensor = _as_targets(targets)
    check_targets(target_tensor, score_tensor.shape, "targets")
    if target_tensor.ndim != 2:
        raise ValueError(
            f"Expected multi-hot `targets` of shape (N, C), got {tuple(target_tensor.shape)}."
        )
    s = score_tensor.detach().cpu().double().numpy()
    y = target_tensor.detach().cpu().numpy() == 1
    precisions = []
    empty = []
    for c in range(s.shape[1]):
        positive, negative = s[y[:, c], c], s[~y[:, c], c]
        if len(positive) == 0:
            empty.append(c)
            precisions.append(0.0)
        elif len(negative) == 0:
            precisions.append(1.0)
        else:
            precisions.append(float(aupr_in(positive, negative)))
    if empty:
        warnings.warn(
            f"Labels {empty} have no positive sample; they count with AP = 0 in the mAP "
            "(as in scikit-learn).",
            UserWarning,
            stacklevel=2,
        )
    return float(np.mean(precisions))


def as_logits(x: Any, name: str) -> Tensor:
    """``x`` (tensor or NumPy array) as a floating (N, C) tensor, checked finite, N, C >= 1.

    The tensor is in ``x``'s compute dtype (float16 and bfloat16 become float32, see
    `oodscore._arrays.as_tensor`); NumPy input becomes a CPU tensor. `oodscore.evaluate_logits`
    checks its inputs with it too.

    Raises:
        TypeError: If ``x`` is neither a tensor nor an array of real numbers.
        ValueError: If ``x`` is not a finite 2-D array with at least one row and column.
    """
    tensor, _ = as_tensor(x, name)
    check_logits(tensor, name)
    if tensor.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to have at least one row, got shape (0, C).")
    return tensor


def _as_targets(x: Any) -> Tensor:
    """Targets as a tensor; NumPy arrays are wrapped on the CPU, dtype kept."""
    if isinstance(x, np.ndarray):
        return to_torch(x)
    if isinstance(x, Tensor):
        return x
    raise TypeError(
        f"Expected targets to be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}."
    )
