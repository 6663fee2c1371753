"""Input checks shared by every component; each error names the argument and the value."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor


def check_logits(x: Tensor, name: str = "logits") -> None:
    """Check that ``x`` is a finite (N, C) matrix with C >= 1 (N may be 0).

    Raises:
        ValueError: On a wrong number of dimensions, no columns, NaN or ±inf.
    """
    if x.ndim != 2:
        raise ValueError(
            f"Expected `{name}` to be 2-D of shape (N, C), got {x.ndim}-D shape {tuple(x.shape)}."
        )
    if x.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to have at least one column (C >= 1), got shape {tuple(x.shape)}."
        )
    check_finite(x, name)


def check_finite(x: Tensor, name: str) -> None:
    """Raise a ``ValueError`` that counts the rows holding NaN or ±inf and gives the first.

    The fast path reads ``x`` once: a sum along the last dimension is finite when every
    entry is (NaN and inf propagate); only when it is not does the exact check run, which
    also clears sums that merely overflowed.
    """
    if x.numel() == 0:
        return
    with torch.no_grad():
        rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
        if bool(torch.isfinite(rows.sum(dim=1)).all()):
            return
        problems = []
        for label, mask in (("NaN", torch.isnan(rows)), ("±inf", torch.isinf(rows))):
            bad_rows = torch.nonzero(mask.any(dim=1)).flatten()
            if bad_rows.numel():
                count = bad_rows.numel()
                noun = "row contains" if count == 1 else "rows contain"
                problems.append(f"{count} {noun} {label} (first: row {int(bad_rows[0])})")
    if problems:
        raise ValueError(f"Expected `{name}` to be finite, but {' and '.join(problems)}.")


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise ValueError(f"Expected `{name}` to be a finite number > 0, got {value!r}.")
    return float(value)


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_non_negative(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(float(value))
        or float(value) < 0
    ):
        raise ValueError(f"Expected `{name}` to be a finite number >= 0, got {value!r}.")
    return float(value)


def check_float_matrix(x: object, name: str, *, columns: str = "D", min_rows: int = 1) -> Tensor:
    """Return ``x`` after checking it is a finite floating (N, ``columns``) tensor.

    For the inputs of losses, which need a floating tensor to differentiate; N must be at
    least ``min_rows``.

    Raises:
        TypeError: If ``x`` is not a torch tensor or not floating point.
        ValueError: On a wrong number of dimensions, too few rows, no columns, NaN or ±inf.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, got {type(x).__name__}.")
    if not x.dtype.is_floating_point:
        raise TypeError(f"Expected `{name}` to be a floating-point tensor, got dtype {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(
            f"Expected `{name}` to be 2-D of shape (N, {columns}), got {x.ndim}-D shape "
            f"{tuple(x.shape)}."
        )
    if x.shape[0] < min_rows:
        raise ValueError(
            f"Expected `{name}` to have at least {min_rows} row(s), got shape {tuple(x.shape)}."
        )
    if x.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to have at least one column ({columns} >= 1), got shape "
            f"{tuple(x.shape)}."
        )
    check_finite(x, name)
    return x
