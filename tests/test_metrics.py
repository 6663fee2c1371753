"""Functional OOD metrics against scikit-learn and the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as sk

from oodscore.metrics import (
    _ranking,
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_tpr,
    ood_metrics,
    roc_curve,
)
from oodscore.metrics._cumulative import metrics_of_tally
from oodscore.metrics._positions import metrics_of_ranked
from oodscore.metrics._ranking import rank, tally
from oodscore.metrics.functional import fpr_key
from tests.reference import metrics as ref

TOL = 1e-9


def sklearn_metrics(
    id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95, *more_tpr: float
) -> dict:
    """The four metrics from scikit-learn, as the library defines them.

    scikit-learn refuses ±inf; they become ±1e300, which ranks the same here.
    """
    s = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    s = np.where(np.isinf(s), np.sign(s) * 1e300, s)
    is_id = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    fpr, tpr_curve, _ = sk.roc_curve(is_id, s, drop_intermediate=False)
    return {
        "auroc": sk.roc_auc_score(is_id, s),
        "aupr_in": sk.average_precision_score(is_id, s),
        "aupr_out": sk.average_precision_score(1 - is_id, -s),
    } | {fpr_key(t): float(fpr[np.argmax(tpr_curve >= t)]) for t in (tpr, *more_tpr)}


def assert_close(got: dict, want: dict, tol: float = TOL) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])


def tied_scores(rng: np.random.Generator, n: int, shift: float, levels: int) -> np.ndarray:
    """Normal scores rounded to `levels` steps per unit: many ties within and across sides."""
    return np.round(rng.normal(shift, 1.0, n) * levels) / levels


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(("n_id", "n_ood"), [(1, 1), (1, 7), (13, 2), (300, 500), (20_000, 9_000)])
@pytest.mark.parametrize("levels", [1, 8, 0])
def test_equals_sklearn(dtype: type, n_id: int, n_ood: int, levels: int) -> None:
    rng = np.random.default_rng(n_id * 31 + n_ood + levels)
    if levels:
        a, b = tied_scores(rng, n_id, 0.7, levels), tied_scores(rng, n_ood, 0.0, levels)
    else:
        a, b = rng.normal(0.7, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
    a, b = a.astype(dtype), b.astype(dtype)
    tprs = (0.95, 0.9, 0.5, 1.0, 1e-3)
    want = sklearn_metrics(a, b, *tprs)
    for tpr in tprs:
        got = ood_metrics(a, b, tpr)
        key = fpr_key(tpr)
        assert_close(got, {k: want[k] for k in ("auroc", "aupr_in", "aupr_out", key)})
    assert auroc(a, b) == got["auroc"]
    assert aupr_in(a, b) == got["aupr_in"]
    assert aupr_out(a, b) == got["aupr_out"]
    assert fpr_at_tpr(a, b, 1e-3) == got["fpr0.1"]


@pytest.mark.parametrize("levels", [2, 16, 0])
def test_equals_reference_on_small_inputs(levels: int) -> None:
    rng = np.random.default_rng(levels)
    for n_id, n_ood in [(1, 1), (3, 9), (40, 25), (101, 99)]:
        if levels:
            a, b = tied_scores(rng, n_id, 0.5, levels), tied_scores(rng, n_ood, 0.0, levels)
        else:
            a, b = rng.normal(0.5, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
        got = ood_metrics(a, b)
        assert abs(got["auroc"] - ref.auroc(a, b)) <= TOL
        assert abs(got["aupr_in"] - ref.aupr_in(a, b)) <= TOL
        assert abs(got["aupr_out"] - ref.aupr_out(a, b)) <= TOL
        for tpr in (0.95, 0.8, 0.5, 0.33):
            assert fpr_at_tpr(a, b, tpr) == pytest.approx(ref.fpr_first(a, b, tpr), abs=TOL)
            assert fpr_at_tpr(a, b, tpr, rule="nearest") == pytest.approx(
                ref.fpr_nearest(a, b, tpr), abs=TOL
            )
            assert fpr_at_tpr(a, b, tpr, rule="openood") == pytest.approx(
                ref.fpr_openood(a, b, tpr), abs=TOL
            )


scores = st.lists(
    st.sampled_from([-np.inf, -3.0, -1.5, -0.0, 0.0, 1e-300, 0.25, 0.5, 2.0, 7.0, np.inf]),
    min_size=1,
    max_size=40,
)


@given(scores, scores, st.sampled_from([np.float16, np.float32, np.float64]))
def test_hypothesis_ties_and_infinities(a: list, b: list, dtype: type) -> None:
    ids, oods = np.array(a, dtype=dtype), np.array(b, dtype=dtype)
    assert_close(ood_metrics(ids, oods), sklearn_metrics(ids, oods))
    for rule, reference in (("nearest", ref.fpr_nearest), ("openood", ref.fpr_openood)):
        assert fpr_at_tpr(ids, oods, rule=rule) == pytest.approx(reference(ids, oods), abs=TOL)


@given(
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=60),
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=60),
)
def test_hypothesis_any_float32(a: list, b: list) -> None:
    ids, oods = np.array(a, dtype=np.float32), np.array(b, dtype=np.float32)
    assert_close(ood_metrics(ids, oods), sklearn_metrics(ids, oods))


@pytest.mark.parametrize("kind", ["positive", "both signs", "extremes"])
def test_key_widths_give_the_same_tally(kind: str) -> None:
    """float32 scores sort as 32-bit tagged keys when their keys span fewer than 2**31
    values (all of one sign, or both signs away from 0), else as 64-bit ones, as float64
    scores do: the tallies must be identical, bit for bit, on ties, signed zeros,
    subnormals and extremes, and so must the metrics."""
    rng = np.random.default_rng(7)
    a = tied_scores(rng, 5000, 0.3, 4)
    b = rng.normal(0, 1, 4000)
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-40, 1.0, -1.0, 3.4e38, -3.4e38]
    if kind == "positive":
        a, b, special = np.abs(a), np.abs(b), [0.0, -0.0, 1e-45, 1e-40, 1.0]
    elif kind == "both signs":
        a, b, special = a + 0.1, b + 0.1, [1.0, -1.0, 1e-20, -1e-20]
    a = np.concatenate([a, special]).astype(np.float32)
    b = np.concatenate([b, special[::-1]]).astype(np.float32)
    narrow, wide = rank([a], [b]), rank([a.astype(np.float64)], [b.astype(np.float64)])
    assert narrow.keys.dtype == (np.uint64 if kind == "extremes" else np.uint32)
    assert wide.keys.dtype == np.uint64
    fast, slow = tally(narrow, with_values=True), tally(wide, with_values=True)
    np.testing.assert_array_equal(fast.id_counts, slow.id_counts)
    np.testing.assert_array_equal(fast.ood_counts, slow.ood_counts)
    np.testing.assert_array_equal(fast.values, slow.values)
    assert ood_metrics(a, b) == ood_metrics(a.astype(np.float64), b.astype(np.float64))
    assert_close(ood_metrics(a, b), sklearn_metrics(a, b))


@pytest.mark.parametrize("levels", [0, 3, 40])
def test_positions_and_tally_paths_agree(levels: int) -> None:
    """Rule "first" sums over the groups as they come, the other rules and the binned mode
    read a tally; both feed the same kernels: AUROC and FPR agree exactly, the average
    precisions up to rounding."""
    rng = np.random.default_rng(100 + levels)
    for dtype in (np.float16, np.float32, np.float64):
        if levels:
            a, b = tied_scores(rng, 3000, 0.5, levels), tied_scores(rng, 2000, 0.0, levels)
        else:
            a, b = rng.normal(0.5, 1.0, 3000), rng.normal(0.0, 1.0, 2000)
        a, b = a.astype(dtype), b.astype(dtype)
        for tpr in (0.95, 0.5, 1.0, 1e-3):
            from_positions = metrics_of_ranked(rank([a], [b]), tpr)
            from_tally = metrics_of_tally(tally(rank([a], [b])), tpr, "first")
            assert from_positions.auroc == from_tally.auroc
            assert from_positions.fpr == from_tally.fpr
            assert from_positions.aupr_in == pytest.approx(from_tally.aupr_in, rel=1e-13)
            assert from_positions.aupr_out == pytest.approx(from_tally.aupr_out, rel=1e-13)


def test_no_ties_path_and_large_n() -> None:
    rng = np.random.default_rng(3)
    a = rng.permutation(200_000)[:120_000].astype(np.float32)  # distinct integers: no ties
    b = rng.permutation(200_000)[:80_000].astype(np.float32) + 0.5
    assert_close(ood_metrics(a, b), sklearn_metrics(a, b))


def test_signed_zeros_are_one_threshold() -> None:
    got = ood_metrics(np.array([0.0, 0.0], np.float32), np.array([-0.0], np.float32))
    assert got["auroc"] == 0.5
    assert got["fpr95"] == 1.0


def test_infinities_rank_as_numbers() -> None:
    a = np.array([np.inf, 1.0, -np.inf], dtype=np.float32)
    b = np.array([np.inf, 0.0], dtype=np.float32)
    # pairs: (inf,inf) tie, (inf,0) win, (1,inf) loss, (1,0) win, (-inf,*) losses
    assert auroc(a, b) == pytest.approx(2.5 / 6)
    assert_close(ood_metrics(a, b), sklearn_metrics(a, b))


def test_constant_scores_give_half() -> None:
    assert auroc(np.full(5, 3.0), np.full(8, 3.0)) == 0.5
    assert fpr_at_tpr(np.full(5, 3.0), np.full(8, 3.0)) == 1.0


def test_perfect_and_reversed_separation() -> None:
    ids, oods = np.arange(10.0, 20.0), np.arange(10.0)
    assert ood_metrics(ids, oods) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    reversed_ = ood_metrics(oods, ids)
    assert reversed_["auroc"] == 0.0
    assert reversed_["fpr95"] == 1.0


def test_integer_and_torch_inputs() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(-5, 5, 300), rng.integers(-7, 3, 200)
    want = sklearn_metrics(a, b)
    assert_close(ood_metrics(a, b), want)
    assert_close(ood_metrics(a.astype(np.int16), b.astype(np.int16)), want)
    ta = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    assert_close(ood_metrics(ta, torch.tensor(b)), want)
    assert_close(ood_metrics(ta.to(torch.bfloat16), torch.tensor(b, dtype=torch.bfloat16)), want)


def test_roc_curve_equals_sklearn() -> None:
    rng = np.random.default_rng(5)
    for dtype in (np.float16, np.float32, np.float64):
        a = tied_scores(rng, 700, 0.5, 10).astype(dtype)
        b = rng.normal(0, 1, 400).astype(dtype)
        fpr, tpr, thresholds = roc_curve(a, b)
        is_id = np.r_[np.ones(a.size), np.zeros(b.size)]
        want = sk.roc_curve(is_id, np.r_[a, b], drop_intermediate=False)
        for got_array, want_array in zip((fpr, tpr, thresholds), want, strict=True):
            assert got_array.dtype == np.float64
            np.testing.assert_allclose(got_array, want_array.astype(np.float64), rtol=0, atol=TOL)


def test_fpr_key_follows_tpr() -> None:
    a, b = np.arange(5.0), np.arange(3.0)
    assert list(ood_metrics(a, b, 0.9)) == ["auroc", "aupr_in", "aupr_out", "fpr90"]
    assert "fpr99.5" in ood_metrics(a, b, 0.995)
    assert "fpr0.1" in ood_metrics(a, b, 0.001)
    assert "fpr100" in ood_metrics(a, b, 1.0)


def test_three_rules_on_the_documented_example() -> None:
    """The worked example of docs/metrics.md: the three rules give three numbers."""
    ids = np.arange(1.0, 21.0)  # 20 ID scores 1..20
    oods = np.array([0.5, 1.5, 2.5, 3.0, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5])
    # first: highest threshold with >= 18 of 20 ID scores is 3.0; OOD >= 3.0: 7 of 10
    assert fpr_at_tpr(ids, oods, 0.9) == pytest.approx(0.7)
    # nearest: recall 0.9 first met walking up from the bottom at 2.5 (an OOD score): 8 of 10
    assert fpr_at_tpr(ids, oods, 0.9, rule="nearest") == pytest.approx(0.8)
    # openood: OOD positive; 9 of 10 OOD scores are <= 7.5; ID scores <= 7.5: 7 of 20
    assert fpr_at_tpr(ids, oods, 0.9, rule="openood") == pytest.approx(0.35)
    # at 0.93: first needs 19 ID scores (>= 2.0); nearest takes recall 0.95 (>= 1.5)
    assert fpr_at_tpr(ids, oods, 0.93) == pytest.approx(0.8)
    assert fpr_at_tpr(ids, oods, 0.93, rule="nearest") == pytest.approx(0.9)
    for tpr in (0.9, 0.93):
        assert fpr_at_tpr(ids, oods, tpr) == ref.fpr_first(ids, oods, tpr)
        assert fpr_at_tpr(ids, oods, tpr, rule="nearest") == ref.fpr_nearest(ids, oods, tpr)
        assert fpr_at_tpr(ids, oods, tpr, rule="openood") == ref.fpr_openood(ids, oods, tpr)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([]), np.array([1.0])), "`id_scores` to hold at least one score"),
        ((np.array([1.0]), np.array([], np.float32)), "`ood_scores` to hold at least one"),
        ((np.array([1.0, np.nan]), np.array([1.0])), r"`id_scores` to hold no NaN.*index 1"),
        ((np.array([1.0]), np.full(3, np.nan)), r"3 entries are NaN"),
        ((np.ones((2, 2)), np.array([1.0])), r"`id_scores` to be 1-D.*shape \(2, 2\)"),
        ((np.array([1.0]), np.ones((3, 1))), r"`ood_scores` to be 1-D"),
        ((np.array(1.0), np.array([1.0])), r"`id_scores` to be 1-D.*0-D"),
    ],
)
def test_bad_scores(args: tuple, match: str) -> None:
    for fn in (auroc, aupr_in, aupr_out, fpr_at_tpr, ood_metrics, roc_curve):
        with pytest.raises(ValueError, match=match):
            fn(*args)


def test_bad_kinds_and_dtypes() -> None:
    with pytest.raises(TypeError, match=r"`id_scores` to be a torch\.Tensor or a numpy\.ndarray"):
        auroc([1.0, 2.0], np.array([1.0]))
    with pytest.raises(TypeError, match=r"`ood_scores` to hold real numbers.*bool"):
        auroc(np.array([1.0]), np.array([True]))
    with pytest.raises(TypeError, match="complex"):
        auroc(np.array([1j]), np.array([1.0]))


@pytest.mark.parametrize("tpr", [0, 0.0, -0.1, 1.0000001, 2, float("nan"), float("inf"), True, "x"])
def test_bad_tpr(tpr: object) -> None:
    with pytest.raises(ValueError, match=r"`tpr` to be a number in \(0, 1\]"):
        fpr_at_tpr(np.array([1.0]), np.array([0.0]), tpr)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`tpr`"):
        ood_metrics(np.array([1.0]), np.array([0.0]), tpr)  # type: ignore[arg-type]


def test_bad_rule() -> None:
    with pytest.raises(ValueError, match=r"`rule` to be one of \('first', 'nearest', 'openood'\)"):
        fpr_at_tpr(np.array([1.0]), np.array([0.0]), rule="closest")  # type: ignore[arg-type]


@pytest.mark.parametrize("block", [1, 3, 64])
def test_block_boundaries(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Tiny blocks put runs of ties and the FPR threshold across block boundaries."""
    monkeypatch.setattr(_ranking, "BLOCK", block)
    rng = np.random.default_rng(block)
    for dtype in (np.float32, np.float64):
        for levels in (1, 4, 0):
            if levels:
                a, b = tied_scores(rng, 300, 0.4, levels), tied_scores(rng, 200, -0.2, levels)
            else:
                a, b = rng.normal(0.4, 1, 300), rng.normal(0, 1, 200)
            a, b = a.astype(dtype), b.astype(dtype)
            for tpr in (0.95, 0.5, 1.0):
                assert_close(ood_metrics(a, b, tpr), sklearn_metrics(a, b, tpr))


def test_long_runs_across_default_blocks() -> None:
    rng = np.random.default_rng(9)
    a = rng.integers(-3, 4, 150_000).astype(np.float32)  # 7 values: runs of ~30k scores
    b = rng.integers(-4, 2, 90_000).astype(np.float32)
    assert_close(ood_metrics(a, b), sklearn_metrics(a, b))
    assert_close(ood_metrics(a.astype(np.float64), b), sklearn_metrics(a, b))
