"""Metrics on hostile inputs: subnormal scores and flush-to-zero, signed zeros, int64 beyond
2**53, degenerate and subnormal spans in binned mode.

Every metric path (exact, streaming exact, binned) must give the same numbers whether or
not the CPU flushes subnormal numbers to zero (``torch.set_flush_denormal``), and equal
scikit-learn where it is defined.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from sklearn import metrics as sk

from oodscore.metrics import OODMetrics, ood_metrics, roc_curve

TOL = 1e-9
TINY64 = float(np.finfo(np.float64).smallest_subnormal)


def _flushing() -> bool:
    """Whether this thread flushes subnormal numbers to zero now."""
    probe = np.multiply(np.array([TINY64]), 1.0)
    return int(probe.view(np.int64)[0]) == 0


# Setting the mode to the one in force tells whether the CPU can change it at all.
FTZ_SUPPORTED = torch.set_flush_denormal(_flushing())


@contextmanager
def flush_denormal(on: bool) -> Iterator[None]:
    """Flush subnormal numbers to zero (or not) inside the block; restore the mode after."""
    if on and not FTZ_SUPPORTED:
        pytest.skip("this CPU cannot flush subnormal numbers to zero")
    before = _flushing()
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def sklearn_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """The four metrics from scikit-learn on the scores as given (no float conversion)."""
    s = np.concatenate([id_scores, ood_scores])
    is_id = np.r_[np.ones(len(id_scores), np.int8), np.zeros(len(ood_scores), np.int8)]
    with np.errstate(over="ignore", invalid="ignore"):
        fpr, tpr, _ = sk.roc_curve(is_id, s, drop_intermediate=False)
    negated = -s if s.dtype.kind == "f" else ~s  # ~x = -x - 1: no overflow at int64 min
    # (scikit-learn's finiteness check sums the scores, which may overflow: a warning only)
    with np.errstate(over="ignore", invalid="ignore"):
        return {
            "auroc": sk.roc_auc_score(is_id, s),
            "aupr_in": sk.average_precision_score(is_id, s),
            "aupr_out": sk.average_precision_score(1 - is_id, negated),
            "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
        }


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= TOL, (key, got[key], want[key])


def assert_same_tally(got: dict[str, float], want: dict[str, float]) -> None:
    """Metrics of the same tally by the two paths: AUROC and FPR equal, APs up to rounding."""
    assert got["auroc"] == want["auroc"]
    assert got["fpr95"] == want["fpr95"]
    assert got["aupr_in"] == pytest.approx(want["aupr_in"], rel=1e-13)
    assert got["aupr_out"] == pytest.approx(want["aupr_out"], rel=1e-13)


def stream(metric: OODMetrics, ids: np.ndarray, oods: np.ndarray) -> OODMetrics:
    """Feed ID and OOD scores interleaved, in two batches."""
    scores = np.concatenate([ids, oods])
    is_ood = np.r_[np.zeros(len(ids), bool), np.ones(len(oods), bool)]
    order = np.argsort(np.arange(len(scores)) % 2, kind="stable")
    half = len(scores) // 2
    for part in (order[:half], order[half:]):
        metric.update(scores[part], is_ood[part])
    return metric


def every_path(ids: np.ndarray, oods: np.ndarray) -> dict[str, object]:
    """The numbers of every metric path, bit for bit (the curve as bytes)."""
    out: dict[str, object] = {
        rule: ood_metrics(ids, oods, rule=rule) for rule in ("first", "nearest", "openood")
    }
    out["roc_curve"] = tuple(a.tobytes() for a in roc_curve(ids, oods))
    out["streaming"] = stream(OODMetrics(), ids, oods).compute()
    binned = stream(OODMetrics("binned", num_bins=64), ids, oods)
    out["binned"] = binned.compute()
    out["binned_bounds"] = binned.error_bounds()
    return out


def assert_binned_within_bounds(ids: np.ndarray, oods: np.ndarray, num_bins: int = 64) -> None:
    exact = ood_metrics(ids, oods)
    metric = stream(OODMetrics("binned", num_bins=num_bins), ids, oods)
    binned, bounds = metric.compute(), metric.error_bounds()
    for key in ("auroc", "aupr_in", "aupr_out"):
        assert abs(binned[key] - exact[key]) <= bounds[key] + 1e-12, key
    assert 0 <= binned["fpr95"] - exact["fpr95"] <= bounds["fpr95"] + 1e-12


# --- Item: the ranking must not depend on how the CPU treats subnormal numbers ---------


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64]
)
@pytest.mark.parametrize("flush", [False, True])
def test_zero_ties_under_flush_to_zero(dtype: type, flush: bool) -> None:
    """ID {0, 1} against OOD {0, -1}: one tie at 0 (the ID 0 once lost its label when the
    CPU flushed the tagged key, a subnormal, to zero: AUROC 1.25, FPR -0.5)."""
    ids, oods = np.array([0, 1], dtype), np.array([0, -1], dtype)
    want = {"auroc": 0.875, "aupr_in": 5 / 6, "aupr_out": 5 / 6, "fpr95": 0.5}
    with flush_denormal(flush):
        for rule in ("first", "nearest", "openood"):
            got = ood_metrics(ids, oods, rule=rule)
            assert {k: got[k] for k in ("auroc", "aupr_in", "aupr_out")} == pytest.approx(
                {k: want[k] for k in ("auroc", "aupr_in", "aupr_out")}, abs=1e-15
            )
        assert ood_metrics(ids, oods)["fpr95"] == 0.5
        assert stream(OODMetrics(), ids, oods).compute() == pytest.approx(want, abs=1e-15)
        assert stream(OODMetrics("binned"), ids, oods).compute() == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_subnormal_scores_rank_as_numbers_under_flush_to_zero(dtype: type) -> None:
    """Subnormal scores are distinct numbers, above 0 and -0, whatever the CPU mode."""
    tiny = np.finfo(dtype).smallest_subnormal
    ids = np.array([tiny, 2 * tiny, 0.0, -tiny], dtype)
    oods = np.array([-0.0, tiny, -2 * tiny, 3 * tiny], dtype)
    want = sklearn_metrics(ids.astype(np.float64), oods.astype(np.float64))
    plain = every_path(ids, oods)
    assert_close(plain["first"], want)  # type: ignore[arg-type]
    with flush_denormal(True):
        assert every_path(ids, oods) == plain
    _, _, thresholds = roc_curve(ids, oods)
    assert thresholds.view(np.int64)[-1] == np.float64(-2 * tiny).view(np.int64)


def test_other_byte_order_and_bfloat16() -> None:
    """The ranking reads the scores' bits: big-endian arrays and bfloat16 tensors too."""
    ids, oods = np.array([0.5, 2.0, 3.0]), np.array([1.0, -1.0, 0.0])
    want = ood_metrics(ids, oods)
    for dtype in (">f2", ">f4", ">f8"):
        assert ood_metrics(ids.astype(dtype), oods.astype(">f8")) == want
        assert stream(OODMetrics(), ids.astype(dtype), oods.astype(dtype)).compute() == want
    assert ood_metrics(np.array([3, 1], ">i8"), np.array([2], ">i4"))["auroc"] == 0.5
    tiny = torch.finfo(torch.bfloat16).smallest_normal / 4  # a bfloat16 subnormal
    id_t = torch.tensor([tiny, 1.0], dtype=torch.bfloat16)
    ood_t = torch.tensor([-0.0, tiny], dtype=torch.bfloat16)
    plain = ood_metrics(id_t, ood_t)
    assert plain["auroc"] == 0.875
    with flush_denormal(True):
        assert ood_metrics(id_t, ood_t) == plain


# --- Item: exact streaming keeps integer scores exact ---------------------------------


def test_streaming_keeps_int64_exact() -> None:
    ids, oods = np.array([2**53 + 1], np.int64), np.array([2**53], np.int64)
    want = ood_metrics(ids, oods)
    assert want["auroc"] == 1.0
    assert_close(want, sklearn_metrics(ids, oods))
    assert stream(OODMetrics(), ids, oods).compute() == want
    # Integer dtypes of several widths combine exactly; unsigned 64-bit too.
    metric = OODMetrics()
    metric.update(np.array([2**53 + 1, 2**62 + 1], np.int64), np.array([0, 1]))
    metric.update(np.array([5], np.int32), np.array([1]))
    metric.update(np.array([2**62], np.int64), np.array([0]))
    metric.update(np.array([7], np.int8), np.array([True]))
    assert metric.compute() == ood_metrics(
        np.array([2**53 + 1, 2**62], np.int64), np.array([2**62 + 1, 5, 7], np.int64)
    )
    big = OODMetrics()
    big.update(np.array([2**64 - 1, 2**64 - 2], np.uint64), np.array([0, 1]))
    assert big.compute()["auroc"] == 1.0


def test_binned_keeps_small_integer_spans_exact() -> None:
    """Integers that span fewer bins than there are fall into bins of their own: exact."""
    ids, oods = np.array([2**53 + 1, 2**60 + 3], np.int64), np.array([2**53, 2**60 + 2])
    binned = stream(OODMetrics("binned"), ids[:1], oods[:1]).compute()
    assert_same_tally(binned, ood_metrics(ids[:1], oods[:1]))
    assert_binned_within_bounds(ids, oods)


# --- Item: binned mode over degenerate and subnormal spans ----------------------------


@pytest.mark.parametrize("flush", [False, True])
def test_binned_subnormal_and_degenerate_spans(flush: bool) -> None:
    with flush_denormal(flush):
        one_subnormal = stream(OODMetrics("binned"), np.array([TINY64]), np.array([0.0]))
        assert one_subnormal.compute() == {
            "auroc": 1.0,
            "aupr_in": 1.0,
            "aupr_out": 1.0,
            "fpr95": 0.0,
        }
        assert one_subnormal.error_bounds() == {
            "auroc": 0.0,
            "aupr_in": 0.0,
            "aupr_out": 0.0,
            "fpr95": 0.0,
        }
        constant = stream(OODMetrics("binned"), np.full(3, TINY64), np.full(2, TINY64))
        assert constant.compute()["auroc"] == 0.5
        assert constant.compute()["fpr95"] == 1.0
        ranged = OODMetrics("binned", score_range=(0.0, TINY64))
        stream(ranged, np.array([TINY64, 0.0]), np.array([-0.0]))
        assert ranged.compute()["auroc"] == 0.75


# --- Properties ------------------------------------------------------------------------

SPECIAL = [
    0.0,
    -0.0,
    TINY64,
    -TINY64,
    2 * TINY64,
    float(np.finfo(np.float32).smallest_subnormal),
    -float(np.finfo(np.float32).smallest_subnormal),
    float(np.finfo(np.float16).smallest_subnormal),
    float(np.finfo(np.float64).tiny),
    float(np.finfo(np.float32).tiny),
    -float(np.finfo(np.float32).tiny),
    1e-310,
    1.0,
    -1.0,
]
floats_with_subnormals = st.one_of(
    st.sampled_from(SPECIAL), st.floats(allow_nan=False, allow_infinity=False, width=64)
)
score_lists = st.lists(floats_with_subnormals, min_size=1, max_size=20)


@given(score_lists, score_lists, st.sampled_from([np.float16, np.float32, np.float64]))
@example([0.5], [0.0], np.float16)  # a first batch of one score in [0.5, 1): frexp exponent 0
@example([TINY64, -0.0], [0.0, 2 * TINY64], np.float64)
def test_every_path_ignores_flush_to_zero(a: list, b: list, dtype: type) -> None:
    with np.errstate(over="ignore"):
        ids, oods = np.array(a).astype(dtype), np.array(b).astype(dtype)
    plain = every_path(ids, oods)
    if np.isfinite(ids).all() and np.isfinite(oods).all():
        want = sklearn_metrics(ids.astype(np.float64), oods.astype(np.float64))
        assert_close(plain["first"], want)  # type: ignore[arg-type]
    assert plain["streaming"] == plain["first"]
    assert_binned_within_bounds(ids, oods)
    with flush_denormal(True):
        assert every_path(ids, oods) == plain


near_2_53 = st.one_of(
    st.integers(2**53 - 4, 2**53 + 4),
    st.integers(-(2**53) - 4, -(2**53) + 4),
    st.sampled_from([-(2**63), 2**63 - 1, 0, 1, -1, 2**62]),
)
int_lists = st.lists(near_2_53, min_size=1, max_size=12)


@given(int_lists, int_lists)
def test_int64_beyond_2_53_on_every_path(a: list, b: list) -> None:
    ids, oods = np.array(a, np.int64), np.array(b, np.int64)
    want = ood_metrics(ids, oods)
    assert_close(want, sklearn_metrics(ids, oods))
    assert stream(OODMetrics(), ids, oods).compute() == want
    shift = np.uint64(2**63)  # x + 2**63 maps int64 onto uint64 in the same order
    assert ood_metrics(ids.astype(np.uint64) + shift, oods.astype(np.uint64) + shift) == want
    _, _, thresholds = roc_curve(ids, oods)
    assert len(thresholds) == len(np.unique(np.r_[ids, oods])) + 1
    assert_binned_within_bounds(ids, oods)
    values = [int(v) for v in np.r_[ids, oods]]
    if max(values) - min(values) <= 2**16 - 2:  # every integer in a bin of its own
        assert_same_tally(stream(OODMetrics("binned"), ids, oods).compute(), want)
    plain = every_path(ids, oods)
    with flush_denormal(True):
        assert every_path(ids, oods) == plain


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
)
def test_float64_end_to_end(a: list, b: list) -> None:
    ids, oods = np.array(a, np.float64), np.array(b, np.float64)
    want = sklearn_metrics(ids, oods)
    got = ood_metrics(ids, oods)
    assert_close(got, want)
    is_id = np.r_[np.ones(len(ids)), np.zeros(len(oods))]
    with np.errstate(over="ignore", invalid="ignore"):
        theirs_curve = sk.roc_curve(is_id, np.r_[ids, oods], drop_intermediate=False)
    for ours, theirs in zip(roc_curve(ids, oods), theirs_curve, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert stream(OODMetrics(), ids, oods).compute() == got
    assert_binned_within_bounds(ids, oods)
