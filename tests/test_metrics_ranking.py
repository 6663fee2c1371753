"""The one sort behind the exact metrics: tagged keys of every width, in parts, in chunks.

Every path of `oodscore.metrics._keys.KeyMap` (32-bit keys, 64-bit keys, the gap around 0,
the slots of ±inf, the table of distinct keys) must give scikit-learn's numbers, on ties,
constant scores, signed zeros, subnormals and integers of every width; scores given in
parts must give the numbers of their concatenation; and the sort must not cost more than
its keys in memory.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oodscore.metrics import OODMetrics, _keys, _positions, _ranking, ood_metrics, roc_curve
from oodscore.metrics._keys import KeyMap
from oodscore.metrics._ranking import rank, tally
from oodscore.metrics.functional import metrics_dict, metrics_of_parts
from tests.test_metrics import sklearn_metrics as sklearn_finite
from tests.test_metrics_hostile import flush_denormal, sklearn_metrics

TOL = 1e-9
TINY32 = float(np.finfo(np.float32).smallest_subnormal)


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= TOL, (key, got[key], want[key])


def key_map(ids: np.ndarray, oods: np.ndarray) -> KeyMap:
    return rank([ids], [oods]).key_map


def check(
    ids: np.ndarray, oods: np.ndarray, want: tuple[dict[str, float], np.ndarray] | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """ood_metrics against scikit-learn on the values as given, the ROC thresholds against
    the unique values (or both from ``want``), the streaming metric fed in parts."""
    if want is None:
        unique = np.unique(np.r_[ids, oods].astype(np.float64))
        want = (sklearn_metrics(ids, oods), unique[::-1])
    got = ood_metrics(ids, oods)
    assert_close(got, want[0])
    np.testing.assert_array_equal(roc_curve(ids, oods)[2][1:], want[1])
    assert stream_parts(ids, oods).compute() == got
    return (got, want[1])


def stream_parts(ids: np.ndarray, oods: np.ndarray, parts: int = 3) -> OODMetrics:
    metric = OODMetrics()
    for side, flag in ((ids, False), (oods, True)):
        for piece in np.array_split(side, parts):
            metric.update(piece, np.full(piece.shape[0], flag))
    return metric


# --- Which keys: 32 bits where the scores allow -----------------------------------------


@pytest.mark.parametrize("zeros", [False, True])
def test_float32_both_signs_take_32_bit_keys_through_the_gap(zeros: bool) -> None:
    """Normal scores: the keys between 0 and the smallest magnitude are dropped (with ±0
    scores, 0 keeps its key), and 32 bits suffice."""
    rng = np.random.default_rng(0)
    ids = rng.normal(1.0, 1.0, 3000).astype(np.float32)
    oods = rng.normal(0.0, 1.0, 2000).astype(np.float32)
    if zeros:
        ids[:5], oods[:3], oods[3:5] = 0.0, -0.0, 0.0
    mapped = key_map(ids, oods)
    assert mapped.width == np.uint32
    assert mapped.gap > 0
    assert mapped.zeros == zeros
    assert mapped.table is None
    check(ids, oods)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_ties_zeros_and_subnormals_in_32_bit_keys(dtype: type) -> None:
    """MSP-like scores piled up at 1, exact zeros of both signs and subnormals."""
    rng = np.random.default_rng(1)
    tiny = np.finfo(dtype).smallest_subnormal
    pile = np.ones(500)
    ids = np.r_[pile, rng.random(800), [0.0, -0.0, tiny, 2 * tiny]].astype(dtype)
    oods = np.r_[pile[:300], rng.random(900) ** 3, [-0.0, tiny, 0.0]].astype(dtype)
    assert key_map(ids, oods).width == np.uint32
    want = check(ids, oods)
    with flush_denormal(True):  # (scikit-learn and np.unique would see subnormals as 0)
        check(ids, oods, want)


def test_all_equal_scores() -> None:
    for value in (0.0, -0.0, 1.0, TINY32, -3e38):
        ids, oods = np.full(7, value, np.float32), np.full(5, value, np.float32)
        got, _ = check(ids, oods)
        assert got["auroc"] == 0.5
        assert got["fpr95"] == 1.0
    assert ood_metrics(np.full(3, 2**62, np.int64), np.full(2, 2**62, np.int64))["auroc"] == 0.5


def test_infinities_sit_next_to_the_finite_extremes() -> None:
    """±inf get the keys just beyond the finite scores: float32 keys stay 32 bits."""
    rng = np.random.default_rng(2)
    ids = np.r_[rng.random(400), [np.inf, np.inf, -np.inf]].astype(np.float32)
    oods = np.r_[rng.random(300) - 0.5, [np.inf, -np.inf, 0.0]].astype(np.float32)
    mapped = key_map(ids, oods)
    assert mapped.width == np.uint32
    assert mapped.clamp is not None
    assert_close(ood_metrics(ids, oods), sklearn_finite(ids, oods))
    _, _, thresholds = roc_curve(ids, oods)
    assert thresholds[1] == np.inf
    assert thresholds[-1] == -np.inf
    only_infinite = np.array([np.inf, -np.inf], np.float64)
    assert ood_metrics(only_infinite, only_infinite[::-1])["auroc"] == 0.5


@pytest.mark.parametrize(
    ("ids", "oods"),
    [
        (np.array([-(2**63), 2**63 - 1, 5], np.int64), np.array([5, 0, 2**63 - 1], np.int64)),
        (np.array([2**64 - 1, 0], np.uint64), np.array([2**63, 1, 0], np.uint64)),
        (np.array([-1e299, 1e-300, 1e300]), np.array([-1e-300, 1e300, -np.inf])),
    ],
)
def test_keys_spanning_everything_are_numbered(ids: np.ndarray, oods: np.ndarray) -> None:
    """64-bit scores from end to end fall back to numbering their distinct keys."""
    assert key_map(ids, oods).table is not None
    reference = sklearn_finite if ids.dtype.kind == "f" else sklearn_metrics  # (±inf, exact ints)
    assert_close(ood_metrics(ids, oods), reference(ids, oods))
    assert stream_parts(ids, oods, parts=2).compute() == ood_metrics(ids, oods)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_integer_scores_of_every_width(dtype: type) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    ids = rng.integers(info.min, info.max, 700, dtype=dtype, endpoint=True)
    oods = rng.integers(info.min, info.max, 500, dtype=dtype, endpoint=True)
    ids[:50], oods[:30] = info.max, info.max  # ties at the top
    got = ood_metrics(ids, oods)
    assert_close(got, sklearn_metrics(ids, oods))
    narrow: np.ndarray = rng.integers(-40, 40, 900).astype(dtype if info.min < 0 else np.int16)
    assert key_map(narrow, narrow[::2]).width == np.uint32
    assert_close(ood_metrics(narrow, narrow[::3]), sklearn_metrics(narrow, narrow[::3]))


def test_mixed_dtypes_in_parts_follow_numpy_promotion() -> None:
    """Parts of several dtypes compare as their promotion (int64 with float32: float64)."""
    rng = np.random.default_rng(4)
    id_parts: list[np.ndarray] = [
        rng.normal(0, 1, 300).astype(np.float16),
        rng.normal(0, 1, 200).astype(np.float32),
    ]
    ood_parts: list[np.ndarray] = [
        rng.integers(-3, 3, 250).astype(np.int64),
        rng.normal(-1, 1, 100),
    ]
    common = np.result_type(*(p.dtype for p in id_parts + ood_parts))
    ids = np.concatenate([p.astype(common) for p in id_parts])
    oods = np.concatenate([p.astype(common) for p in ood_parts])
    for rule in ("first", "nearest", "openood"):
        got = metrics_dict(metrics_of_parts(id_parts, ood_parts, 0.95, rule), 0.95)
        assert got == ood_metrics(ids, oods, rule=rule)
    assert_close(ood_metrics(ids, oods), sklearn_metrics(ids, oods))


def test_chunks_and_blocks_of_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys built a few scores at a time and groups read a few positions at a time: runs of
    ties, the FPR threshold and chunk ends fall across every boundary."""
    rng = np.random.default_rng(5)
    ids = np.round(rng.normal(0.5, 1, 400) * 3).astype(np.float32)
    oods = np.round(rng.normal(0.0, 1, 300) * 3).astype(np.float32)
    want = sklearn_metrics(ids, oods)
    for chunk, block in ((1, 1), (3, 2), (7, 64), (64, 5)):
        monkeypatch.setattr(_keys, "CHUNK", chunk)
        monkeypatch.setattr(_ranking, "BLOCK", block)
        assert_close(ood_metrics(ids, oods), want)
        for tpr in (0.05, 0.5, 1.0):
            assert_close(ood_metrics(ids, oods, tpr), sklearn_finite(ids, oods, tpr))
        counts = tally(rank([ids], [oods]))
        assert int(counts.id_counts.sum()) == 400
        assert int(counts.ood_counts.sum()) == 300


def test_pair_sums_in_int64_beyond_float_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond 2**53 pairs the AUROC sums run in int64 (exercised here on small inputs)."""
    rng = np.random.default_rng(6)
    ids = np.round(rng.normal(0.5, 1, 3000) * 4).astype(np.float32)
    oods = np.round(rng.normal(0.0, 1, 2000) * 4).astype(np.float32)
    want = ood_metrics(ids, oods)
    monkeypatch.setattr(_positions, "EXACT_FLOAT_SUMS", 0)
    assert ood_metrics(ids, oods) == want
    assert_close(want, sklearn_metrics(ids, oods))


floats = st.floats(allow_nan=False, width=32)


@given(
    st.lists(floats, min_size=1, max_size=40),
    st.lists(floats, min_size=1, max_size=40),
    st.integers(1, 3),
)
def test_parts_equal_their_concatenation(a: list[float], b: list[float], parts: int) -> None:
    ids, oods = np.array(a, np.float32), np.array(b, np.float32)
    want = ood_metrics(ids, oods)
    got = metrics_of_parts(np.array_split(ids, parts), np.array_split(oods, parts), 0.95, "first")
    assert metrics_dict(got, 0.95) == want
    if np.isfinite(ids).all() and np.isfinite(oods).all():
        assert_close(want, sklearn_metrics(ids, oods))


# --- Memory: the sort holds the keys and cache-sized blocks, nothing else ----------------


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the memory ``fn()`` allocates (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extra_memory_per_score(dtype: type) -> None:
    """Beyond the scores, float32 scores need their 4-byte keys, float64 ones 8-byte keys,
    plus cache-sized blocks (about 6 MiB); the streaming metric reads the parts it keeps
    without concatenating them."""
    n = 2_000_000
    rng = np.random.default_rng(0)
    ids: np.ndarray = rng.normal(1, 1, n // 2).astype(dtype)
    oods: np.ndarray = rng.normal(0, 1, n - n // 2).astype(dtype)
    most = np.dtype(dtype).itemsize * n + 8 * 2**20
    assert peak_bytes(lambda: ood_metrics(ids, oods)) <= most
    metric = OODMetrics()
    for side, flag in ((ids, False), (oods, True)):
        for piece in np.array_split(side, 8):
            metric.update(piece, np.full(piece.shape[0], flag))
    assert peak_bytes(metric.compute) <= most
