"""NumPy or torch in, the same kind out: the one place where array kinds are converted."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray[Any, Any])
"""A torch tensor or a NumPy array; functions typed with it return the kind they were given."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)

compiling: Callable[[], bool] = torch.compiler.is_compiling
# torch.jit.is_tracing() is a Python function around torch._C._is_tracing: looked up once,
# for checks that run at every access of a weight.
jit_tracing: Callable[[], bool] = getattr(torch._C, "_is_tracing", None) or torch.jit.is_tracing  # type: ignore[attr-defined]


def tracing() -> bool:
    """Whether torch.compile, torch.export or the JIT is tracing the running code.

    Code that computes outside torch (NumPy) or keeps values between calls (caches) must
    not run then: the trace would hold the values as constants.
    """
    return compiling() or jit_tracing()


def compute_dtype(dtype: torch.dtype, *, from_numpy: bool) -> torch.dtype:
    """The floating dtype a computation on ``dtype`` runs in.

    float32 and float64 are kept; float16 and bfloat16 run in float32 (their sums and
    exponentials lose too much precision, and scores in half precision create ties that
    change AUROC); integers run in float64 when they came from NumPy (NumPy's own rule) and
    in torch's default dtype otherwise.
    """
    if dtype in _LOW_PRECISION:
        return torch.float32
    if dtype.is_floating_point:
        return dtype
    return torch.float64 if from_numpy else torch.get_default_dtype()


def promote(x: Tensor) -> Tensor:
    """``x`` in its compute dtype (`compute_dtype`): float16/bfloat16 become float32."""
    return x.to(compute_dtype(x.dtype, from_numpy=False))


def check_numeric(dtype: torch.dtype | np.dtype[Any], name: str) -> None:
    """Raise a ``TypeError`` unless ``dtype`` is a real (non-bool, non-complex) number type."""
    if isinstance(dtype, torch.dtype):
        ok = dtype != torch.bool and not dtype.is_complex
    else:
        ok = dtype.kind in "fiu"
    if not ok:
        raise TypeError(
            f"Expected `{name}` to hold real numbers (float or int), got dtype {dtype}."
        )


def as_tensor(x: object, name: str) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """Convert ``x`` to a floating tensor in its compute dtype, and a function that converts back.

    Torch input stays on its device and keeps its autograd graph; NumPy input is wrapped
    without a copy where possible. The returned function turns a result tensor into the
    kind of ``x``: a NumPy array for NumPy input, the tensor itself for torch input.

    Args:
        x: A ``torch.Tensor`` or ``numpy.ndarray`` of real numbers.
        name: The argument's name, for error messages.

    Raises:
        TypeError: If ``x`` is neither a tensor nor an array, or holds no real numbers.
    """
    if isinstance(x, Tensor):
        check_numeric(x.dtype, name)
        return x.to(compute_dtype(x.dtype, from_numpy=False)), _identity
    if isinstance(x, np.ndarray):
        check_numeric(x.dtype, name)
        tensor = to_torch(x)
        return tensor.to(compute_dtype(tensor.dtype, from_numpy=True)), _to_numpy
    raise TypeError(
        f"Expected `{name}` to be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}."
    )


def to_torch(x: np.ndarray[Any, Any]) -> Tensor:
    """A CPU tensor of ``x``'s values and dtype, sharing memory where torch allows it.

    Big-endian arrays are converted to native byte order (torch accepts no other), and
    read-only arrays (memory maps, broadcasts) are wrapped without torch's warning: nothing
    in oodscore writes to the tensor.
    """
    # ascontiguousarray returns at least 1-D: keep a 0-d array 0-d, so messages name it.
    array = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")).reshape(x.shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array)


def _identity(t: Tensor) -> Tensor:
    return t


def _to_numpy(t: Tensor) -> np.ndarray[Any, Any]:
    return t.detach().cpu().numpy()


FIT_CHUNK_ELEMENTS = 1 << 21
"""Values per row chunk while fitting statistics (16 MiB in float64): a fit holds its data
once, plus one chunk converted to float64."""


def rows_per_chunk(x: Tensor, elements: int) -> int:
    """How many rows of ``x`` (N, ...) hold about ``elements`` values (at least one)."""
    return max(1, elements // max(1, math.prod(x.shape[1:])))


def row_slices(x: Tensor, elements: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, x[start:start + rows])`` views of about ``elements`` values each (>= 1 row)."""
    rows = rows_per_chunk(x, elements)
    for start in range(0, x.shape[0], rows):
        yield start, x[start : start + rows]


CHUNK_ELEMENTS = 1 << 19
"""Elements per row block in `map_rows` (2 MiB of float32: stays in a CPU core's cache)."""


def map_rows(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply the row-wise ``fn`` to ``x`` (N, ...) -> (N,), in cache-sized row blocks on CPU.

    A scorer's element-wise passes (exp, log, products) each read and write the whole
    matrix; on a large CPU input, blocks that fit in cache make those passes nearly free
    (2-3x faster on 1M x 80 float32). On other devices, when autograd records the call, or
    for inputs that fit in one block, ``fn`` runs once on all of ``x``.
    """
    rows = rows_per_chunk(x, CHUNK_ELEMENTS)
    if (
        x.device.type != "cpu"
        or x.shape[0] <= rows
        or (x.requires_grad and torch.is_grad_enabled())
    ):
        return fn(x)
    first = fn(x[:rows])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, x.shape[0], rows):
        out[start : start + rows] = fn(x[start : start + rows])
    return out


def saturate(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``x`` clamped to the finite range of ``dtype`` (default: the dtype of ``x``).

    For results whose exact value lies beyond the dtype (a sum of two logits of 3e38 in
    float32): the largest finite value of that sign instead of ±inf. Where it clamps, no
    gradient flows (the gradient of the saturated function). NaN stays NaN.
    """
    largest = torch.finfo(dtype or x.dtype).max
    return x.clamp(-largest, largest)


def finite_sum(x: Tensor, dim: int | None = None, *, mean: bool = False) -> Tensor:
    """Sum (or mean, ``mean=True``) of floating ``x`` over ``dim`` (all of it for ``None``).

    No partial sum overflows: below float64 the sum is accumulated in float64 (which holds
    any sum of float32 values), and a float64 sum runs on ``x`` scaled by a power of two
    ``2**-k <= 1/n`` (exact, bar subnormals) and is scaled back once. The result is in the
    dtype of ``x``, saturated (`saturate`) where its exact value lies beyond that dtype; so
    float32 ``[3e38, 3e38, -3e38]`` sums to 3e38, not inf, and float64 ``[1e308, 1e308,
    -1e308, -1e308]`` to 0, not NaN.
    """
    count = x.numel() if dim is None else x.shape[dim]
    if x.dtype != torch.float64:
        total = (
            x.sum(dim=dim, dtype=torch.float64) if dim is not None else x.sum(dtype=torch.float64)
        )
        if mean:
            total = total / max(count, 1)
        return saturate(total, x.dtype).to(x.dtype)
    shift = max(count - 1, 0).bit_length()  # 2**shift >= count
    scale = 2.0**-shift
    scaled = (x * scale).sum(dim=dim) if dim is not None else (x * scale).sum()
    return saturate(scaled / (count * scale) if mean and count else scaled / scale)
