"""Split-conformal formulas against a float64 reference, and the guarantee itself in simulation.

The simulations run thousands of calibration/test splits at once: each split is one group of
`grouped_calibration`, so one call calibrates them all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from oodscore.detection.fdr import select_ood
from oodscore.functional.conformal import (
    conformal_p_values,
    conformal_rank,
    conformal_threshold,
    group_counts,
    group_p_values,
    group_ranks,
    group_thresholds,
    grouped_calibration,
    min_calibration_size,
)
from tests.reference import conformal as ref

ALPHAS = [0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.9, 1 / 3, 0.123456]


def _f64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def _inputs(rng: np.random.Generator, kind: str, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "continuous":
        return rng.normal(size=n), rng.normal(size=m)
    if kind == "ties":  # few distinct values, and test scores equal to calibration scores
        cal = rng.integers(0, 5, size=n).astype(float)
        return cal, np.concatenate([rng.integers(-1, 6, size=m - 3), cal[:3]]).astype(float)
    huge = np.array([-1e308, -1e-300, 0.0, 5e-324, 1e-300, 1e308])  # extremes, subnormal
    return rng.choice(huge, size=n), rng.choice(huge, size=m)


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("kind", ["continuous", "ties", "extreme"])
@pytest.mark.parametrize("n", [1, 2, 19, 200])
def test_p_values_and_thresholds_match_the_reference(kind: str, n: int) -> None:
    rng = np.random.default_rng(n)
    cal, test = _inputs(rng, kind, n, 50)
    ordered = torch.sort(_f64(cal)).values
    got = conformal_p_values(ordered, _f64(test)).numpy()
    np.testing.assert_array_equal(got, ref.p_values(cal, test))
    for alpha in ALPHAS:
        k = conformal_rank(n, alpha)
        assert k == ref.rank(n, alpha)
        if k >= 1:
            assert float(conformal_threshold(ordered, k)) == ref.threshold(cal, alpha)


def test_float32_scores_compare_exactly_with_float64_calibration() -> None:
    cal = np.float32([0.1, 0.2, 0.3]).astype(np.float64)  # float32 values, held in float64
    test = torch.tensor([0.1, 0.2, 0.30000001], dtype=torch.float32)
    got = conformal_p_values(torch.sort(_f64(cal)).values, test)
    np.testing.assert_array_equal(got.numpy(), ref.p_values(cal, test.double().numpy()))


def test_rank_is_floor_alpha_n_plus_1_and_minimum_size_is_ceil_1_over_alpha_minus_1() -> None:
    rng = np.random.default_rng(1)
    for alpha in [*rng.uniform(0.001, 0.999, size=200), 0.05, 0.1, 0.01]:
        minimum = min_calibration_size(float(alpha))
        assert minimum == ref.min_size(float(alpha)) == math.ceil(1 / alpha) - 1
        assert conformal_rank(minimum, float(alpha)) == 1
        assert conformal_rank(minimum - 1, float(alpha)) == 0
        for n in rng.integers(0, 5000, size=20):
            assert conformal_rank(int(n), float(alpha)) == ref.exact_rank(int(n), float(alpha))


def test_rank_counts_the_p_values_at_or_below_alpha_when_alpha_rounds_below_j_over_n_plus_1() -> (
    None
):
    # float(1/3) < 1/3: floor(alpha (n + 1)) in exact arithmetic is 1 for n = 5, but the
    # p-value 2/6 computes to exactly float(1/3) <= alpha, so p <= alpha rejects 2 ranks.
    assert ref.exact_rank(5, 1 / 3) == 1
    assert conformal_rank(5, 1 / 3) == ref.rank(5, 1 / 3) == 2
    assert min_calibration_size(1 / 3) == 2  # 1 / 3 <= alpha for n + 1 = 3


@pytest.mark.parametrize("kind", ["continuous", "ties", "extreme"])
def test_p_value_rule_equals_threshold_rule_including_ties(kind: str) -> None:
    rng = np.random.default_rng(2)
    for n in (19, 20, 57, 199):
        cal, test = _inputs(rng, kind, n, 400)
        ordered = torch.sort(_f64(cal)).values
        p = conformal_p_values(ordered, _f64(test))
        for alpha in ALPHAS:
            k = conformal_rank(n, alpha)
            if k == 0:
                assert bool((p > alpha).all())  # nothing can be rejected
                continue
            by_threshold = _f64(test) < conformal_threshold(ordered, k)
            assert torch.equal(p <= alpha, by_threshold)
            counts = torch.searchsorted(ordered, _f64(test), right=True)
            assert torch.equal(counts < k, by_threshold)


@pytest.mark.parametrize("kind", ["continuous", "ties", "extreme"])
def test_group_p_values_and_thresholds_match_the_reference(kind: str) -> None:
    rng = np.random.default_rng(3)
    cal, test = _inputs(rng, kind, 300, 200)
    num_groups = 5
    cal_groups = rng.integers(0, num_groups, size=cal.size)
    cal_groups[cal_groups == 4] = 3  # group 4 is empty
    test_groups = rng.integers(0, num_groups, size=test.size)
    ordered, keys, offsets, sizes = grouped_calibration(
        _f64(cal), torch.from_numpy(cal_groups), num_groups
    )
    groups = torch.from_numpy(test_groups)
    counts = group_counts(ordered, keys, offsets, _f64(test), groups)
    got = group_p_values(counts, sizes, groups).numpy()
    np.testing.assert_array_equal(got, ref.group_p_values(cal, cal_groups, test, test_groups))
    for alpha in (0.05, 0.1, 0.3):
        ranks = group_ranks(sizes, alpha)
        thresholds = group_thresholds(ordered, keys, offsets, ranks).numpy()
        np.testing.assert_array_equal(
            thresholds, ref.group_thresholds(cal, cal_groups, alpha, num_groups)
        )
        expected = ref.group_p_values(cal, cal_groups, test, test_groups) <= alpha
        np.testing.assert_array_equal((counts < ranks[groups]).numpy(), expected)


def test_one_group_gives_the_marginal_p_values() -> None:
    rng = np.random.default_rng(4)
    cal, test = _inputs(rng, "ties", 150, 100)
    ordered, keys, offsets, sizes = grouped_calibration(
        _f64(cal), torch.zeros(150, dtype=torch.int64), 1
    )
    zeros = torch.zeros(100, dtype=torch.int64)
    counts = group_counts(ordered, keys, offsets, _f64(test), zeros)
    assert torch.equal(
        group_p_values(counts, sizes, zeros), conformal_p_values(ordered, _f64(test))
    )


# ----------------------------------------------------------------------------- guarantee

REPEATS = 2000


def _split_rejections(
    pool: np.ndarray, n: int, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection counts on the test part and the test p-values of REPEATS random splits."""
    order = np.argsort(rng.random((REPEATS, pool.size)), axis=1)
    shuffled = pool[order]
    cal, test = shuffled[:, :n], shuffled[:, n:]
    split = np.arange(REPEATS)
    ordered, keys, offsets, sizes = grouped_calibration(
        _f64(cal.ravel()), torch.from_numpy(np.repeat(split, n)), REPEATS
    )
    groups = torch.from_numpy(np.repeat(split, test.shape[1]))
    counts = group_counts(ordered, keys, offsets, _f64(test.ravel()), groups)
    ranks = group_ranks(sizes, alpha)
    reject = (counts < ranks[groups]).numpy().reshape(REPEATS, -1)
    p = group_p_values(counts, sizes, groups).numpy().reshape(REPEATS, -1)
    return reject.sum(axis=1), p


def test_rejection_rate_over_random_splits_is_at_most_alpha_and_beta_binomial() -> None:
    """n = 99, m = 100 test points, 2000 splits of one exchangeable pool (no ties).

    The number of test points below the k-th smallest calibration score of a random split
    is Beta-binomial(m, k, n + 1 - k): the Beta law of the rate, seen through m points.
    """
    rng = np.random.default_rng(5)
    n, m, alpha = 99, 100, 0.1
    k = conformal_rank(n, alpha)
    rejected, _ = _split_rejections(rng.normal(size=n + m), n, alpha, rng)
    rates = rejected / m
    law = stats.betabinom(m, k, n + 1 - k)
    standard_error = rates.std() / math.sqrt(REPEATS)
    assert rates.mean() <= alpha + 3 * standard_error
    assert abs(rates.mean() - k / (n + 1)) <= 3 * standard_error
    assert 0.85 < rejected.var() / law.var() < 1.15
    # chi-square goodness of fit on bins of about equal probability under the law
    edges = np.unique(law.ppf(np.linspace(0, 1, 9)[1:-1]).astype(int))
    observed = np.bincount(np.searchsorted(edges, rejected, side="left"), minlength=edges.size + 1)
    cdf = np.concatenate([law.cdf(edges), [1.0]])
    expected = np.diff(np.concatenate([[0.0], cdf])) * REPEATS
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_rate_given_the_calibration_set_follows_beta_k_n_plus_1_minus_k() -> None:
    """For U(0, 1) scores, F(t) = t: the conditional rate is the threshold itself."""
    rng = np.random.default_rng(6)
    n, alpha, repeats = 49, 0.1, 4000
    ordered, keys, offsets, sizes = grouped_calibration(
        _f64(rng.random(n * repeats)),
        torch.from_numpy(np.repeat(np.arange(repeats), n)),
        repeats,
    )
    ranks = group_ranks(sizes, alpha)
    rates = group_thresholds(ordered, keys, offsets, ranks).numpy()
    k = conformal_rank(n, alpha)
    assert stats.kstest(rates, stats.beta(k, n + 1 - k).cdf).pvalue > 1e-3
    assert abs(rates.mean() - k / (n + 1)) < 3 * rates.std() / math.sqrt(repeats)
    # and a rule that is off by one rank is caught by the same test
    assert stats.kstest(rates, stats.beta(k + 1, n - k).cdf).pvalue < 1e-6


@pytest.mark.parametrize("ties", [False, True])
def test_p_values_are_super_uniform_under_the_null(ties: bool) -> None:
    rng = np.random.default_rng(7)
    n = 59
    pool = rng.integers(0, 8, size=n + 40).astype(float) if ties else rng.normal(size=n + 40)
    _, p = _split_rejections(pool, n, 0.1, rng)
    first = p[:, 0]  # one test point per split: independent draws of the p-value
    assert stats.kstest(first, "uniform", alternative="greater").pvalue > 1e-3
    se = math.sqrt(0.25 / p.size)
    for u in (0.01, 0.05, 0.1, 0.2, 0.5, 0.9):
        assert (p <= u).mean() <= u + 4 * se


def test_benjamini_hochberg_matches_the_reference_step_up() -> None:
    rng = np.random.default_rng(8)
    for m in (1, 2, 10, 300):
        p = np.concatenate([rng.uniform(size=m // 2), rng.uniform(0, 0.01, size=m - m // 2)])
        for q in (0.05, 0.1234, 0.5):
            got = select_ood(torch.from_numpy(p), fdr=q).numpy()
            np.testing.assert_array_equal(got, ref.benjamini_hochberg(p, q))
            assert isinstance(select_ood(p, fdr=q), np.ndarray)


def test_benjamini_hochberg_keeps_the_false_discovery_rate_in_simulation() -> None:
    """Conformal p-values of 80 ID and 20 OOD points, n = 199, 1000 repeats, q = 0.1."""
    rng = np.random.default_rng(9)
    n, m_id, m_ood, q, repeats = 199, 80, 20, 0.1, 1000
    fdp = np.empty(repeats)
    power = np.empty(repeats)
    for r in range(repeats):
        ordered = torch.sort(_f64(rng.normal(size=n))).values
        test = np.concatenate([rng.normal(size=m_id), rng.normal(-3.0, 1.0, size=m_ood)])
        selected = select_ood(conformal_p_values(ordered, _f64(test)), fdr=q).numpy()
        false = selected[:m_id].sum()
        fdp[r] = false / max(selected.sum(), 1)
        power[r] = selected[m_id:].mean()
    bound = q * m_id / (m_id + m_ood)
    assert fdp.mean() <= bound + 3 * fdp.std() / math.sqrt(repeats)
    assert power.mean() > 0.5  # the simulation has OOD points BH can find


def test_every_mondrian_group_keeps_its_rate_where_one_threshold_does_not() -> None:
    """Three groups with shifted score laws and sizes 50/20/150% of each other."""
    rng = np.random.default_rng(10)
    alpha, repeats, shifts, shares = 0.1, 1500, np.array([0.0, -1.5, 1.0]), [0.3, 0.1, 0.6]
    n, m = 300, 300

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        groups = rng.choice(3, p=shares, size=(repeats, count))
        return rng.normal(size=(repeats, count)) + shifts[groups], groups

    cal, cal_groups = draw(n)
    test, test_groups = draw(m)
    split = np.arange(repeats)[:, None]
    per_group = {}
    for mondrian in (True, False):
        cal_ids = split * 3 + cal_groups if mondrian else np.broadcast_to(split, cal.shape)
        test_ids = split * 3 + test_groups if mondrian else np.broadcast_to(split, test.shape)
        count = 3 * repeats if mondrian else repeats
        ordered, keys, offsets, sizes = grouped_calibration(
            _f64(cal.ravel()), torch.from_numpy(np.ascontiguousarray(cal_ids).ravel()), count
        )
        ids = torch.from_numpy(np.ascontiguousarray(test_ids).ravel())
        counts = group_counts(ordered, keys, offsets, _f64(test.ravel()), ids)
        reject = (counts < group_ranks(sizes, alpha)[ids]).numpy().reshape(repeats, m)
        per_group[mondrian] = [reject[test_groups == g].mean() for g in range(3)]
        for g in range(3):
            members = (test_groups == g).sum()
            if mondrian:
                assert per_group[mondrian][g] <= alpha + 3 * math.sqrt(alpha / members)
    assert per_group[False][1] > 2 * alpha  # one marginal threshold over-rejects the low group
