"""The one ranking step behind every metric: ID and OOD scores in one exact order.

`rank` turns every score into its tagged key (`oodscore.metrics._keys`: twice its order key
plus 1 for an ID score, 32 bits wide where the scores allow) and sorts them with one plain
``np.sort``, in place: equal scores end up adjacent and the labels come along. Nothing
else of the size of the scores is built: the keys are written chunk by chunk from the
scores (or from the parts `oodscore.metrics.OODMetrics` keeps, never concatenated), and
every later step reads the sorted keys block by block.

`group_ends` is that reading: the scores fall into groups of equal value, and a metric needs
for each group where it ends and how many ID scores lie before that end
(`oodscore.metrics._kernels`). `oodscore.metrics._positions` sums the four metrics of rule
"first" over these groups as they come; `tally` collects them as a `Tally` for the other
FPR rules, the ROC curve and the binned streaming metrics. Scores are never transformed
before ranking: ties are ties of the values given (with ``-0.0 == 0.0``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oodscore.metrics import _keys
from oodscore.metrics._keys import KeyMap

__all__ = [
    "BLOCK",
    "FloatArray",
    "IntArray",
    "Ranked",
    "Tally",
    "block_size",
    "group_ends",
    "rank",
    "tally",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.integer[Any]]]

BLOCK = 1 << 16
"""Sorted positions per block of `group_ends` (its temporaries stay in a core's cache)."""


@dataclass(frozen=True)
class Tally:
    """ID and OOD counts at each unique score value, in ascending order of the values.

    Attributes:
        id_counts: ``(G,)`` number of ID scores equal to each unique value (any integer
            dtype).
        ood_counts: ``(G,)`` number of OOD scores equal to each unique value.
        n_id: Total number of ID scores, ``P``.
        n_ood: Total number of OOD scores, ``N``.
        values: ``(G,)`` the unique values as float64, when they were asked for.
    """

    id_counts: IntArray
    ood_counts: IntArray
    n_id: int
    n_ood: int
    values: FloatArray | None = None


@dataclass(frozen=True)
class Ranked:
    """Every score as a tagged key, in ascending order (OOD before ID among equal scores).

    Attributes:
        keys: ``(n,)`` the sorted tagged keys, ``uint32`` or ``uint64``.
        key_map: How the keys were made (and how to read the scores back).
        n_id: Number of ID scores, ``P``.
        n_ood: Number of OOD scores, ``N``.
    """

    keys: IntArray
    key_map: KeyMap
    n_id: int
    n_ood: int


def rank(
    id_parts: Sequence[np.ndarray[Any, Any]], ood_parts: Sequence[np.ndarray[Any, Any]]
) -> Ranked:
    """Sort the checked 1-D scores of ``id_parts`` and ``ood_parts`` (any real dtypes) as one.

    The parts of a side are read in turn, as if concatenated; scores of several dtypes
    compare by NumPy's promotion (int64 against float32 in float64).
    """
    parts = [*id_parts, *ood_parts]
    key_map = KeyMap.of(parts)
    n_id = sum(p.shape[0] for p in id_parts)
    n = n_id + sum(p.shape[0] for p in ood_parts)
    keys = np.empty(n, key_map.width)
    position, size = 0, _keys.CHUNK
    for tag, side in ((1, id_parts), (0, ood_parts)):
        for part in side:
            for start in range(0, part.shape[0], size):
                chunk = part[start : start + size]
                key_map.encode(chunk, tag, keys[position : position + chunk.shape[0]])
                position += chunk.shape[0]
    keys.sort()
    return Ranked(keys, key_map, n_id, n - n_id)


def block_size() -> int:
    """`BLOCK`, read when called (tests shrink it)."""
    return BLOCK


def group_ends(ranked: Ranked, block: int) -> Iterator[tuple[FloatArray, FloatArray]]:
    """The groups of equal scores, block by block: where each ends, and the ID scores before.

    Yields ``(ends, ids)``, two float64 arrays of ``G + 1`` entries for the ``G`` groups
    that end in a block of ``block`` sorted positions: entry 0 belongs to the group before
    them (0 and 0 at first), entry ``g`` to the ``g``-th: the position just after its last
    score, and the number of ID scores before that position. The counts are integers held
    exactly (below 2**53). The arrays are reused: read them before asking for the next
    block.

    A group ends where two neighbouring keys differ in more than the tag bit. The ID
    scores before a position are a running count of the tags.
    """
    keys, n = ranked.keys, ranked.keys.shape[0]
    one = keys.dtype.type(1)
    changed = np.empty(block, keys.dtype)
    tags = np.empty(block, keys.dtype)
    starts = np.empty(block, bool)
    running = np.zeros(block + 1, keys.dtype)  # running[j]: ID scores in the block before j
    taken = np.empty(block + 1, keys.dtype)
    ends, ids = np.empty(block + 2), np.empty(block + 2)
    ends[0] = ids[0] = 0.0
    ids_before = 0  # ID scores before the block
    for start in range(0, n, block):
        stop = min(start + block, n)
        size = stop - start
        chunk = keys[start:stop]
        # changed[j]: key j against key j - 1 (the first key of all begins a group: 0 here).
        if start:
            np.bitwise_xor(chunk, keys[start - 1 : stop - 1], out=changed[:size])
        else:
            changed[0] = 0
            np.bitwise_xor(chunk[1:], chunk[:-1], out=changed[1:size])
        np.greater(changed[:size], one, out=starts[:size])
        local = np.flatnonzero(starts[:size])  # a group ends just before each of these
        np.bitwise_and(chunk, one, out=tags[:size])
        np.cumsum(tags[:size], out=running[1 : size + 1])
        count = local.shape[0]
        np.add(local, np.float64(start), out=ends[1 : count + 1])
        np.take(running, local, out=taken[:count], mode="wrap")
        np.add(taken[:count], np.float64(ids_before), out=ids[1 : count + 1])
        ids_before += int(running[size])
        if stop == n:  # the last group ends with the scores
            count += 1
            ends[count], ids[count] = stop, ids_before
        yield ends[: count + 1], ids[: count + 1]
        ends[0], ids[0] = ends[count], ids[count]


def tally(ranked: Ranked, *, with_values: bool = False) -> Tally:
    """Count ID and OOD scores at every unique value (and read the values, if asked)."""
    id_counts, ood_counts, values = [], [], []
    for ends, ids in group_ends(ranked, block_size()):
        gained = np.diff(ids).astype(np.int64)
        id_counts.append(gained)
        ood_counts.append(np.diff(ends).astype(np.int64) - gained)
        if with_values:  # the key of a group's last score
            values.append(ranked.keys[ends[1:].astype(np.int64) - 1])
    return Tally(
        np.concatenate(id_counts),
        np.concatenate(ood_counts),
        ranked.n_id,
        ranked.n_ood,
        ranked.key_map.values(np.concatenate(values)) if with_values else None,
    )
