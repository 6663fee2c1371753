"""Input checks shared by every component; each error names the argument and the value."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal

import torch
from torch import Tensor

Closed = Literal["left", "right", "both", "neither"]


@dataclass(frozen=True)
class Interval:
    """A declared range of valid values for a hyper-parameter, in the spirit of scikit-learn's.

    ``Interval(Real, 0, None, closed="neither")`` accepts the finite reals > 0;
    ``Interval(Integral, 1, None, closed="left")`` the integers >= 1. ``None`` leaves a side
    open without bound. Booleans are never numbers here, NaN and ±inf never pass.

    Examples:
        >>> from numbers import Real
        >>> from oodscore._validation import Interval
        >>> Interval(Real, 0, 1, closed="neither").check(0.5, "gamma")
        0.5
        >>> Interval(Real, 0, 1, closed="neither").check(1, "gamma")
        Traceback (most recent call last):
        ...
        ValueError: Expected `gamma` to be a finite number in (0, 1), got 1.
    """

    kind: type[Real] | type[Integral]
    low: float | None = None
    high: float | None = None
    closed: Closed = "both"

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        number = float(value)
        if not math.isfinite(number):
            return False
        if self.low is not None:
            left_closed = self.closed in ("left", "both")
            if number < self.low or (number == self.low and not left_closed):
                return False
        if self.high is not None:
            right_closed = self.closed in ("right", "both")
            if number > self.high or (number == self.high and not right_closed):
                return False
        return True

    def describe(self) -> str:
        """The range in words: "a finite number > 0", "an integer in [1, 10]"."""
        noun = "an integer" if self.kind is Integral else "a finite number"
        low, high = _plain(self.low), _plain(self.high)
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if self.closed in ('left', 'both') else '>'} {low}"
        if self.low is None:
            return f"{noun} {'<=' if self.closed in ('right', 'both') else '<'} {high}"
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        return f"{noun} in {left}{low}, {high}{right}"

    def check(self, value: object, name: str) -> float:
        """Return ``value`` as a float, or raise a ``ValueError`` naming ``name`` and the range."""
        if value not in self:
            raise ValueError(f"Expected `{name}` to be {self.describe()}, got {value!r}.")
        return float(value)  # type: ignore[arg-type]


def _plain(bound: float | None) -> str:
    """A bound as written by hand: 0 and 1, not 0.0 and 1.0."""
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


FINITE = Interval(Real, None, None)
POSITIVE = Interval(Real, 0, None, closed="neither")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")
UNIT_OPEN = Interval(Real, 0, 1, closed="neither")
TEMPERATURE = Interval(Real, 1e-6, 1e6)
"""Softmax and energy temperatures: within it, softmax(f/T), T logsumexp(f/T) and their
gradients are finite and accurate in float32 for every finite logit (published values:
1 to 1000)."""
LOSS_SCALE = Interval(Real, 0, 1e6)
"""Loss weights and margin shifts: large enough for any use, small enough that a weighted
loss of finite logits stays finite."""
MARGIN = Interval(Real, -1e6, 1e6)
"""Energy margins: beyond ±1e6 the squared hinges of ordinary logits would saturate."""


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number > 0."""
    return POSITIVE.check(value, name)


def check_non_negative(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number >= 0."""
    return NON_NEGATIVE.check(value, name)


def check_finite_number(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite (non-bool) real number."""
    return FINITE.check(value, name)


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    Interval(Integral, minimum, None, closed="left").check(value, name)
    return operator.index(value)  # type: ignore[arg-type]  # an Integral, checked above


def check_logits(x: Tensor, name: str = "logits") -> None:
    """Check that ``x`` is a finite (N, C) matrix with C >= 1 (N may be 0).

    Raises:
        ValueError: On a wrong number of dimensions, no columns, NaN or ±inf.
    """
    check_matrix(x, name, columns="C")


def check_matrix(x: Tensor, name: str, *, columns: str = "D") -> None:
    """Check that ``x`` is a finite (N, ``columns``) matrix with at least one column.

    Raises:
        ValueError: On a wrong number of dimensions, no columns, NaN or ±inf.
    """
    if x.ndim != 2:
        raise ValueError(
            f"Expected `{name}` to be 2-D of shape (N, {columns}), got {x.ndim}-D shape "
            f"{tuple(x.shape)}."
        )
    if x.shape[1] == 0:
        raise ValueError(
            f"Expected `{name}` to have at least one column ({columns} >= 1), got shape "
            f"{tuple(x.shape)}."
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


def check_float_matrix(
    x: object, name: str, *, columns: str = "D", min_rows: int = 1, finite: bool = True
) -> Tensor:
    """Return ``x`` after checking it is a finite floating (N, ``columns``) tensor.

    For the inputs of losses, which need a floating tensor to differentiate; N must be at
    least ``min_rows``. ``finite=False`` skips the value check (NaN, ±inf), the only one
    that reads the data (a device synchronization on a GPU).

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
    if finite:
        check_finite(x, name)
    return x


def check_same_width(
    first: Tensor,
    second: Tensor,
    names: tuple[str, str],
    *,
    what: str = "classes",
    symbol: str = "C",
) -> None:
    """Raise a ``ValueError`` unless two 2-D inputs have the same number of columns.

    Args:
        first: The reference input (N, C).
        second: The input checked against it (M, C').
        names: The two arguments' names, in that order.
        what: The columns in words (``"classes"``, ``"features"``).
        symbol: The columns' symbol (``"C"``, ``"D"``).
    """
    if first.shape[1] != second.shape[1]:
        raise ValueError(
            f"Expected `{names[1]}` to have as many {what} as `{names[0]}` "
            f"({symbol} = {first.shape[1]}), got shape {tuple(second.shape)}."
        )
