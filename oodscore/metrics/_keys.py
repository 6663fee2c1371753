"""Scores as integers in their order: order keys, and the tagged keys the one sort sorts.

Every comparison behind the metrics is one of integers. A float becomes its **order key**:
its bits read as a signed integer of the same width, negative numbers mirrored
(``-|bits|``), so that the integer order is the order of the numbers and ``-0.0`` and
``+0.0`` share the key 0. Sorting floats directly would depend on the CPU: in flush-to-zero
mode (``torch.set_flush_denormal(True)``) it treats subnormal numbers as 0, and NumPy's
vectorized sort even writes them back as 0. Keys keep every subnormal score a distinct number
in every mode; floats are widened (float16 to float32 to float64) with integer operations too
(`exact_astype`). Integer scores are their own keys.

A **tagged key** is ``2 * (key - low) + tag``, tag 1 for an ID score, as an unsigned
integer: one ``np.sort`` of the tagged keys orders the scores and brings the labels along,
equal scores adjacent (OOD before ID). It is 32 bits wide when the keys span fewer than
2**31 values, which holds for every float16 input and for float32 scores within a few
hundred million float steps: then the sort is as fast as sorting the float32 scores and the
keys take 4 bytes a score. To get there, `KeyMap` drops the keys no score has: those
between 0 and the smallest magnitude present (``gap``), and, when scores are ±inf, those
between the finite extremes and the infinities (``clamp``). Otherwise the tagged keys are 64
bits; only 64-bit scores spanning nearly all 2**64 keys (int64 from end to end, float64
from ``-1e300`` to ``1e300``) fall back to numbering their distinct keys (``table``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CHUNK",
    "SCAN_CHUNK",
    "KeyMap",
    "exact_astype",
    "order_keys",
    "values_of_keys",
]

CHUNK = 1 << 16
"""Scores per chunk while keys are built (a chunk's temporaries stay in a core's cache)."""

SCAN_CHUNK = 1 << 18
"""Scores per chunk while looking for the extremes (fewer temporaries: larger chunks)."""

IntArray = np.ndarray[Any, np.dtype[np.integer[Any]]]

# Signed and unsigned integers of each float width, in bytes.
_SIGNED: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.int16),
    4: np.dtype(np.int32),
    8: np.dtype(np.int64),
}
_UNSIGNED: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.uint16),
    4: np.dtype(np.uint32),
    8: np.dtype(np.uint64),
}
_TOP = 1 << 63  # int64 key of a uint64 score: the score minus 2**63


def order_keys(values: np.ndarray[Any, Any]) -> IntArray:
    """Signed integer keys of floats, in their order, ``-0.0`` and ``+0.0`` both 0.

    Integer operations only, so subnormal numbers keep their place whatever the CPU's
    flush-to-zero mode. The keys have the width of the floats (float32: int32).

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics._keys import order_keys
        >>> order_keys(np.array([-1.0, -0.0, 0.0, 5e-324, 1.0])).tolist()
        [-4607182418800017408, 0, 0, 1, 4607182418800017408]
    """
    signed = _SIGNED[values.dtype.itemsize]
    bits = values.view(signed)
    sign = bits >> (8 * signed.itemsize - 1)  # -1 for negative numbers, 0 otherwise
    keys: IntArray = bits & np.iinfo(signed).max  # the magnitude
    keys ^= sign
    keys -= sign  # negated where the number is negative
    return keys


def values_of_keys(keys: IntArray, dtype: np.dtype[Any] | type) -> np.ndarray[Any, Any]:
    """The floats of `order_keys` (key 0 gives ``+0.0``), of the keys' width."""
    sign = keys >> (8 * keys.dtype.itemsize - 1)
    bits = keys ^ sign
    bits -= sign  # the magnitude
    bits |= sign & np.iinfo(keys.dtype).min  # the sign bit of negative numbers
    return bits.view(dtype)


def exact_astype(values: np.ndarray[Any, Any], dtype: np.dtype[Any] | type) -> np.ndarray[Any, Any]:
    """``values`` as the float ``dtype`` (as wide or wider, for floats), whatever the CPU mode.

    A CPU in flush-to-zero mode turns a float32 subnormal into 0 when widening it to
    float64; this builds the wider bits with integer operations instead (the subnormals,
    normal numbers in the wider format, are scaled by an exact power of two). Integers are
    converted by NumPy's rule (rounding to nearest beyond the float's precision).
    """
    target = np.dtype(dtype)
    if values.dtype == target:
        return values
    if values.dtype.kind != "f":
        return values.astype(target)
    src, dst = np.finfo(values.dtype), np.finfo(target)
    src_bias, dst_bias = src.maxexp - 1, dst.maxexp - 1
    bits = values.view(_UNSIGNED[values.dtype.itemsize]).astype(np.uint64)
    biased = (bits >> src.nmant) & ((1 << src.nexp) - 1)
    mantissa = bits & ((1 << src.nmant) - 1)
    out = (biased + (dst_bias - src_bias)) << dst.nmant
    out |= mantissa << (dst.nmant - src.nmant)
    top = biased == (1 << src.nexp) - 1  # ±inf (NaN keeps its payload)
    if top.any():
        out[top] = (((1 << dst.nexp) - 1) << dst.nmant) | (mantissa[top] << (dst.nmant - src.nmant))
    low = biased == 0  # zeros and subnormals: m * 2**(1 - bias - nmant), normal when m > 0
    if low.any():
        scaled = mantissa[low].astype(np.float64) * 2.0 ** (1 - src_bias - src.nmant)
        out[low] = scaled.astype(target).view(_UNSIGNED[target.itemsize])
    out |= (bits >> (8 * values.dtype.itemsize - 1)) << (8 * target.itemsize - 1)
    widened: np.ndarray[Any, Any] = out.astype(_UNSIGNED[target.itemsize]).view(target)
    return widened


def _key_dtype(common: np.dtype[Any]) -> np.dtype[Any]:
    """The signed integers keys of scores compared in ``common`` are computed in."""
    if common.itemsize <= 4 and common != np.uint32:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def signed_keys(values: np.ndarray[Any, Any], common: np.dtype[Any]) -> IntArray:
    """Keys of ``values`` compared as ``common``: `order_keys` of floats, integers as they are.

    A uint64 score becomes itself minus 2**63, in int64 (the same order).
    """
    if common.kind == "f":
        keys = order_keys(exact_astype(values, common))
    elif common == np.uint64:
        keys = (values.astype(np.uint64) ^ np.uint64(_TOP)).view(np.int64)
    else:
        return values.astype(_key_dtype(common))  # a copy: callers change the keys in place
    return keys.astype(_key_dtype(common), copy=False)


@dataclass
class _Scan:
    """What one pass over the scores tells the key map (see `_scan`)."""

    low: int | None = None  # bounds on the keys of the finite scores (None: none seen)
    high: int | None = None
    negative_infinity: bool = False
    positive_infinity: bool = False
    magnitude: int = 0  # the smallest nonzero key magnitude of a score (0: none)
    zeros: bool = False  # whether a score is ±0 (floats compared as floats)

    def add(self, other: _Scan) -> None:
        """Widen this scan by ``other``."""
        if other.low is not None and other.high is not None:
            self.low = other.low if self.low is None else min(self.low, other.low)
            self.high = other.high if self.high is None else max(self.high, other.high)
        self.negative_infinity |= other.negative_infinity
        self.positive_infinity |= other.positive_infinity
        if other.magnitude:
            self.magnitude = min(self.magnitude or other.magnitude, other.magnitude)
        self.zeros |= other.zeros


def _scan(part: np.ndarray[Any, Any], common: np.dtype[Any]) -> _Scan:
    """Bounds on the keys of ``part``, its infinities, its smallest nonzero key magnitude.

    One pass, in chunks of `SCAN_CHUNK`: the scores are read from memory once. (The
    magnitudes only matter when scores compare as floats.)

    The float minimum and maximum are fast but, in flush-to-zero mode, blind to subnormal
    numbers: an extreme that is 0 or subnormal is widened to the smallest normal number,
    which bounds every subnormal key. (A magnitude minus 1, as an unsigned integer, puts 0
    last.)
    """
    found = _Scan()
    unsigned = _UNSIGNED.get(common.itemsize, np.dtype(np.uint64))
    magnitude_bits = unsigned.type(np.iinfo(unsigned).max >> 1)
    least = int(np.iinfo(unsigned).max)
    lows, highs = [], []
    for chunk in _chunks(part, SCAN_CHUNK):
        low, high = chunk.min(), chunk.max()
        if part.dtype.kind == "f" and (np.isinf(low) or np.isinf(high)):
            found.negative_infinity |= bool(np.isneginf(low))
            found.positive_infinity |= bool(np.isposinf(high))
            chunk = chunk[np.isfinite(chunk)]
            if chunk.shape[0] == 0:
                continue
            low, high = chunk.min(), chunk.max()
        lows.append(low)
        highs.append(high)
        if common.kind == "f":
            magnitude = exact_astype(chunk, common).view(unsigned) & magnitude_bits
            smallest = int(magnitude.min())
            if smallest == 0:  # ±0 here: the smallest of the others
                found.zeros = True
                magnitude -= unsigned.type(1)
                smallest = (int(magnitude.min()) + 1) % (1 << (8 * unsigned.itemsize))
            least = min(least, smallest or least)
    if lows:
        found.low, found.high = _extreme_keys(min(lows), max(highs), common)
    found.magnitude = 0 if least == int(np.iinfo(unsigned).max) else least
    return found


def _extreme_keys(low: Any, high: Any, common: np.dtype[Any]) -> tuple[int, int]:
    """Keys bounding those of every score from ``low`` to ``high`` (see `_scan`)."""
    if low.dtype.kind != "f":
        ends = signed_keys(np.array([low, high], low.dtype), common)
        return int(ends[0]), int(ends[1])
    tiny = np.finfo(low.dtype).tiny
    keys = [int(k) for k in signed_keys(np.array([low, high, -tiny, tiny], low.dtype), common)]
    if abs(low) < tiny:
        keys[0] = min(keys[0], keys[2])
    if abs(high) < tiny:
        keys[1] = max(keys[1], keys[3])
    return keys[0], keys[1]


def _chunks(part: np.ndarray[Any, Any], size: int = CHUNK) -> list[np.ndarray[Any, Any]]:
    return [part[start : start + size] for start in range(0, part.shape[0], size)]


@dataclass(frozen=True)
class KeyMap:
    """How a score becomes a tagged key and back: ``2 * (c(k) - low) + tag``.

    ``k`` is the score's signed key (`signed_keys`); ``c`` first puts ±inf next to the
    finite extremes (``clamp``), then shrinks every nonzero key by ``gap`` towards 0
    (``k - gap * sign(k)``); with a ``table`` the result is its index in the table.

    Attributes:
        common: The dtype the scores are compared in (NumPy's promotion of every part).
        low: ``c`` of the lowest key, subtracted so that the lowest score gets 0.
        gap: No score's key lies in ``[-gap, 0)`` or ``(0, gap]``.
        clamp: The keys -inf and +inf take (one below and above the finite ones), or None.
        table: The distinct keys ``c(k)``, sorted, when they span 2**63 or more; else None.
        width: ``uint32`` or ``uint64``, the dtype of the tagged keys.
        zeros: Whether a score may be ±0 (False only when known to be none).
    """

    common: np.dtype[Any]
    low: int
    gap: int
    clamp: tuple[int, int] | None
    table: IntArray | None
    width: np.dtype[Any]
    zeros: bool = True

    @classmethod
    def of(cls, parts: list[np.ndarray[Any, Any]]) -> KeyMap:
        """The narrowest map that keeps the order and the ties of every score of ``parts``."""
        common = np.result_type(*(p.dtype for p in parts))
        found = _Scan()
        for part in parts:
            found.add(_scan(part, common))
        low = 0 if found.low is None else found.low
        high = 0 if found.high is None else found.high
        clamp = None
        if found.negative_infinity or found.positive_infinity:
            clamp = (low - 1, high + 1)
            low = clamp[0] if found.negative_infinity else low
            high = clamp[1] if found.positive_infinity else high
        gap = 0
        if common.kind == "f" and high - low >= 1 << 31:
            # The bounds count as keys too: the flush-to-zero guard may put them nearer 0.
            magnitudes = [found.magnitude, abs(low), abs(high)]
            gap = max(min((m for m in magnitudes if m), default=1) - 1, 0)
        low, high = _shrink(low, gap), _shrink(high, gap)
        table = None
        if high - low >= 1 << 63:  # number the distinct keys instead
            plain = cls(common, 0, gap, clamp, None, np.dtype(np.uint64))
            table = np.unique(np.concatenate([plain.shrunk(c) for p in parts for c in _chunks(p)]))
            low, high = 0, table.shape[0] - 1
        width = np.dtype(np.uint32 if high - low < 1 << 31 else np.uint64)
        return cls(common, low, gap, clamp, table, width, found.zeros)

    def shrunk(self, values: np.ndarray[Any, Any]) -> IntArray:
        """``c(k)`` of the scores ``values`` (before the table and the offset)."""
        keys = signed_keys(values, self.common)
        if self.clamp is not None:
            np.clip(keys, *self.clamp, out=keys)
        if self.gap:
            step = np.sign(keys)
            step *= keys.dtype.type(self.gap)
            keys -= step
        return keys

    def encode(self, values: np.ndarray[Any, Any], tag: int, out: np.ndarray[Any, Any]) -> None:
        """Write the tagged keys of ``values`` (tag 1: ID, 0: OOD) into ``out``."""
        if (
            self.common.kind == "f"
            and self.clamp is None
            and self.table is None
            and self.common.itemsize == self.width.itemsize
            and not (self.gap and self.zeros)
        ):  # the common case in fewer steps: no ±inf, and no ±0 to keep at 0
            bits = exact_astype(values, self.common).view(_SIGNED[self.common.itemsize])
            sign = bits >> (8 * self.common.itemsize - 1)
            keys: IntArray = bits & np.iinfo(bits.dtype).max  # the magnitude
            if self.gap:
                keys -= keys.dtype.type(self.gap)
            keys ^= sign
            keys -= sign
        else:
            keys = self.shrunk(values)
        if self.table is not None:
            keys = np.searchsorted(self.table, keys)
        elif keys.dtype.itemsize < self.width.itemsize:
            keys = keys.astype(np.int64)
        if keys.dtype.itemsize == self.width.itemsize:
            keys = keys.view(self.width)
        # 2 * (k - low) + tag, modulo 2**width (the result fits).
        np.left_shift(keys, self.width.type(1), out=out, casting="unsafe")
        out += self.width.type((tag - 2 * self.low) % (1 << (8 * self.width.itemsize)))

    def values(self, tagged: IntArray) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The scores of tagged keys, as float64 (NumPy's conversion for wide integers)."""
        keys = (tagged >> tagged.dtype.type(1)).astype(np.int64) + self.low
        if self.table is not None:
            keys = self.table[keys].astype(np.int64)
        keys += self.gap * np.sign(keys)
        if self.common.kind == "f":
            narrow = keys.astype(_SIGNED[self.common.itemsize])
            out = exact_astype(values_of_keys(narrow, self.common), np.float64)
            if self.clamp is not None:
                out[keys == self.clamp[0]] = -np.inf
                out[keys == self.clamp[1]] = np.inf
            return out
        if self.common == np.uint64:
            keys = keys.view(np.uint64) ^ np.uint64(_TOP)
        values: np.ndarray[Any, np.dtype[np.float64]] = keys.astype(np.float64)
        return values


def _shrink(key: int, gap: int) -> int:
    return key - gap * ((key > 0) - (key < 0))
