"""The k largest values of each row: the selection behind top-M scores."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = (torch.float32, torch.float64)


def largest_values(x: Tensor, k: int) -> Tensor:
    """The ``k`` largest values of each row of ``x`` (N, C), in no particular order: (N, k).

    Differentiable where autograd records the call (``torch.topk``). Otherwise a float32 or
    float64 CPU tensor is partitioned by NumPy's introselect, which moves values rather
    than (value, index) pairs: 3x faster than ``torch.topk`` on 2 threads at C = 1000,
    k = 100, on one. Ties need no rule: tied values are equal, whichever of them is kept.
    NaN counts as the largest value on both paths. ``x`` itself is returned when k = C.

    Examples:
        >>> largest_values(torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0]]), 2).sort().values
        tensor([[4., 5.]])
    """
    num_columns = x.shape[1]
    if not 1 <= k <= num_columns:
        raise ValueError(f"k must be in [1, {num_columns}] for {num_columns} columns, got {k}")
    if k == num_columns:
        return x
    if (
        x.device.type != "cpu"
        or x.dtype not in _NUMPY_DTYPES
        or (x.requires_grad and torch.is_grad_enabled())
    ):
        return torch.topk(x, k, dim=1, sorted=False).values
    array = x.detach().resolve_conj().resolve_neg().numpy()
    kept = np.partition(array, num_columns - k, axis=1)[:, num_columns - k :]
    return torch.from_numpy(np.ascontiguousarray(kept))
