"""Binned AUPR bounds: they hold, they are reached, and they are small on real-looking scores.

`OODMetrics("binned").error_bounds()` bounds AUPR-In and AUPR-Out by the lowest and highest
average precision any order of the scores inside each bin could give
(`oodscore.metrics._kernels.precision_sum_range`). Here: scores built to take each extreme
order, so that the exact AUPR (scikit-learn) reaches the bound, and MSP-like scores piled
up near 1, where binning moves AUPR-In most.
"""

from __future__ import annotations

import numpy as np
import pytest

from oodscore.metrics import OODMetrics, ood_metrics
from tests.test_metrics import sklearn_metrics

KEYS = ("auroc", "aupr_in", "aupr_out")


def binned(ids: np.ndarray, oods: np.ndarray, **kwargs: object) -> OODMetrics:
    metric = OODMetrics("binned", **kwargs)  # type: ignore[arg-type]
    scores = np.concatenate([ids, oods])
    is_ood = np.r_[np.zeros(len(ids), bool), np.ones(len(oods), bool)]
    order = np.random.default_rng(0).permutation(len(scores))
    for part in np.array_split(order, 3):
        metric.update(scores[part], is_ood[part])
    return metric


def extreme_orders(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Two score sets with the same counts in [k, k + 1/4) for k = 0..15 (one bin each):

    * ``top``: in each bin the ID scores tie above the OOD scores, which tie too: AUPR-In
      and AUPR-Out both take their highest value;
    * ``bottom``: in each bin the OOD scores lie above the ID scores, all distinct: both
      take their lowest value.
    """
    rng = np.random.default_rng(seed)
    id_counts, ood_counts = rng.integers(0, 40, 16), rng.integers(0, 40, 16)
    id_counts[[3, 9]], ood_counts[[3, 12]] = 1, 0  # singletons and one-sided bins too
    top_ids = np.repeat(np.arange(16) + 0.2, id_counts)
    top_oods = np.repeat(np.arange(16) + 0.1, ood_counts)
    steps_id = np.concatenate([np.arange(c) * 1e-3 for c in id_counts])
    steps_ood = np.concatenate([np.arange(c) * 1e-3 for c in ood_counts])
    bottom_ids = np.repeat(np.arange(16.0), id_counts) + steps_id
    bottom_oods = np.repeat(np.arange(16) + 0.1, ood_counts) + steps_ood
    return (top_ids, top_oods), (bottom_ids, bottom_oods)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupr_bounds_hold_and_are_reached(seed: int) -> None:
    """Both orders share one histogram, hence one binned result and one bound; the exact
    AUPRs of the two orders lie within it, and the farther one reaches it."""
    distance = {key: 0.0 for key in KEYS}
    results = []
    for ids, oods in extreme_orders(seed):
        metric = binned(ids, oods, num_bins=64, score_range=(0.0, 16.0))
        assert metric._histogram.exponent is not None
        assert metric._histogram.exponent <= -1
        got, bounds, exact = metric.compute(), metric.error_bounds(), sklearn_metrics(ids, oods)
        results.append((got, bounds))
        for key in KEYS:
            assert abs(got[key] - exact[key]) <= bounds[key] + 1e-12, key
            distance[key] = max(distance[key], abs(got[key] - exact[key]))
    assert results[0] == results[1]
    bounds = results[0][1]
    for key in ("aupr_in", "aupr_out"):
        assert distance[key] >= 0.97 * bounds[key] > 0, (key, distance[key], bounds[key])


def ends_from_the_counts(id_counts: np.ndarray, ood_counts: np.ndarray) -> tuple[float, float]:
    """AUPR-In at the two extreme orders, summed bin by bin from the top (the definition:
    each ID score adds the precision at its threshold)."""
    low = high = 0.0
    ids_above = all_above = 0
    for w, o in zip(id_counts[::-1], ood_counts[::-1], strict=True):
        high += w * (ids_above + w) / (all_above + w) if w else 0.0
        low += sum((ids_above + x) / (all_above + o + x) for x in range(1, w + 1))
        ids_above, all_above = ids_above + w, all_above + w + o
    return low / id_counts.sum(), high / id_counts.sum()


@pytest.mark.parametrize("seed", [3, 4])
def test_the_extreme_orders_give_the_stated_ends(seed: int) -> None:
    """scikit-learn's AUPR-In of the two orders is each end of the stated range, and the
    bound covers both."""
    (top_ids, top_oods), (bottom_ids, bottom_oods) = extreme_orders(seed)
    id_counts = np.bincount(np.floor(top_ids).astype(int), minlength=16)
    ood_counts = np.bincount(np.floor(top_oods).astype(int), minlength=16)
    low, high = ends_from_the_counts(id_counts, ood_counts)
    assert sklearn_metrics(top_ids, top_oods)["aupr_in"] == pytest.approx(high, abs=1e-12)
    assert sklearn_metrics(bottom_ids, bottom_oods)["aupr_in"] == pytest.approx(low, abs=1e-12)
    metric = binned(top_ids, top_oods, num_bins=64, score_range=(0.0, 16.0))
    got, bound = metric.compute()["aupr_in"], metric.error_bounds()["aupr_in"]
    assert low < got < high
    farther = max(high - got, got - low)
    assert farther - 1e-12 <= bound < farther * 1.03


def msp_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax maxima piled up near 1 in float32: many exact ties at 1.0 and next to it."""
    ids = (1 / (1 + np.exp(-rng.gamma(3.0, 3.0, n)))).astype(np.float32)
    oods = (1 / (1 + np.exp(-rng.gamma(1.5, 3.0, n)))).astype(np.float32)
    return ids, oods


@pytest.mark.parametrize("num_bins", [64, 1024, 2**16])
@pytest.mark.parametrize("kind", ["msp", "normal"])
def test_bounds_hold_and_are_useful_on_realistic_scores(kind: str, num_bins: int) -> None:
    """60k scores a side: every bound holds, and the AUPR bounds are within 10x of the
    error binning makes (the AUROC bound is much looser on smooth scores)."""
    rng = np.random.default_rng(num_bins)
    if kind == "msp":
        ids, oods = msp_like(rng, 60_000)
        assert (ids == 1).sum() > 1000  # ties at the top
    else:
        ids = rng.normal(1, 1, 60_000).astype(np.float32)
        oods = rng.normal(0, 1, 60_000).astype(np.float32)
    exact = ood_metrics(ids, oods)
    metric = binned(ids, oods, num_bins=num_bins)
    got, bounds = metric.compute(), metric.error_bounds()
    for key in KEYS:
        error = abs(got[key] - exact[key])
        assert error <= bounds[key] + 1e-12, key
        if key != "auroc":
            assert bounds[key] <= 10 * error, (key, error, bounds[key])
    assert 0 <= got["fpr95"] - exact["fpr95"] <= bounds["fpr95"] + 1e-12


def test_bounds_shrink_with_the_bins() -> None:
    """Finer bins, smaller bounds: 64 times the bins, AUPR bounds at least 16 times smaller
    on smooth scores (on MSP-like ones, exact ties at 1.0 stay in one bin whatever its
    width)."""
    rng = np.random.default_rng(3)
    ids, oods = rng.normal(1, 1, 30_000), rng.normal(0, 1, 30_000)
    coarse = binned(ids, oods, num_bins=256).error_bounds()
    fine = binned(ids, oods, num_bins=2**14).error_bounds()
    for key in ("aupr_in", "aupr_out"):
        assert fine[key] * 16 <= coarse[key], (key, fine[key], coarse[key])


def test_one_value_per_bin_is_exact() -> None:
    """Scores on a grid coarser than the bins: the binned metrics are the exact ones, and
    the bounds say only what the counts cannot tell apart."""
    rng = np.random.default_rng(4)
    ids, oods = rng.integers(0, 40, 3000) / 4, rng.integers(-8, 30, 2000) / 4
    metric = binned(ids, oods, num_bins=1024)
    got, exact = metric.compute(), ood_metrics(ids, oods)
    for key in exact:
        assert got[key] == pytest.approx(exact[key], abs=1e-12)
