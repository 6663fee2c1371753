"""Checks of what users pass to the metrics: scores and OOD labels, as NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from oodscore._arrays import check_numeric

__all__ = ["as_labels", "as_scores", "sum_is_finite"]


def _as_numpy(x: object, name: str) -> np.ndarray[Any, Any]:
    """``x`` as a NumPy array, no value changed, or a TypeError naming ``name``.

    A torch tensor (any device, any dtype, with or without grad) is detached and copied to
    the CPU, bfloat16 (which NumPy lacks) as float32, exactly; a NumPy array is returned as is.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        arr: np.ndarray[Any, Any] = t.cpu().numpy()
        return arr
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(
        f"Expected `{name}` to be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}."
    )


def as_scores(x: object, name: str, *, allow_empty: bool = False) -> np.ndarray[Any, Any]:
    """Return ``x`` as a 1-D NumPy array of real scores on the CPU, after checking it.

    Torch tensors are copied to the CPU (bfloat16 as float32), arrays of the other byte
    order are byte-swapped; no value is changed.

    Raises:
        TypeError: ``x`` is not a tensor or array, or does not hold real numbers.
        ValueError: ``x`` is not 1-D, is empty (unless ``allow_empty``), or holds NaN.
    """
    arr = _as_numpy(x, name)
    check_numeric(arr.dtype, name)
    if arr.ndim != 1:
        raise ValueError(
            f"Expected `{name}` to be 1-D of shape (N,), got {arr.ndim}-D shape {arr.shape}."
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"Expected `{name}` to hold at least one score, got an empty array.")
    if not arr.dtype.isnative:  # the ranking reads the bits: same values, native byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "f" and not sum_is_finite(arr):
        nan = np.isnan(arr)
        if nan.any():
            count = int(np.count_nonzero(nan))
            first = int(np.argmax(nan))
            noun = "entry is" if count == 1 else "entries are"
            raise ValueError(
                f"Expected `{name}` to hold no NaN, but {count} {noun} NaN (first: index {first})."
            )
    return arr


def sum_is_finite(arr: np.ndarray[Any, Any]) -> bool:
    """One fast pass: a finite sum proves there is no NaN and no ±inf.

    The converse can fail by overflow, so a non-finite sum only calls for the exact check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum(dtype=np.float32 if arr.dtype == np.float16 else None)
    return bool(np.isfinite(total))


def as_labels(x: object, length: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Return ``x`` as a boolean NumPy array (True = OOD) after checking it.

    Raises:
        TypeError: ``x`` is not a tensor/array of bool or integer dtype.
        ValueError: ``x`` is not 1-D of length ``length`` or holds values other than 0/1.
    """
    arr = _as_numpy(x, "is_ood")
    if arr.dtype.kind not in "biu":
        raise TypeError(f"Expected `is_ood` to hold bool or 0/1 integers, got dtype {arr.dtype}.")
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"Expected `is_ood` to be 1-D of the same length as `scores` ({length}), "
            f"got shape {arr.shape}."
        )
    if arr.dtype.kind != "b":
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            first = int(np.argmax(bad))
            value = arr[first].item()
            raise ValueError(
                f"Expected `is_ood` to hold only 0 and 1, got {value!r} at index {first}."
            )
        arr = arr.astype(bool)
    return arr
