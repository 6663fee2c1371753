"""Streaming OODMetrics: exact mode equals ood_metrics, binned mode stays within its bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodscore.data import load_digits_split
from oodscore.metrics import OODMetrics, ood_metrics
from tests.reference import metrics as ref


def feed(metric: OODMetrics, id_scores: np.ndarray, ood_scores: np.ndarray, batches: int) -> None:
    """Shuffle ID and OOD together and feed them in `batches` uneven batches."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([id_scores, ood_scores])
    is_ood = np.r_[np.zeros(len(id_scores), bool), np.ones(len(ood_scores), bool)]
    order = rng.permutation(len(scores))
    cuts = np.sort(rng.choice(np.arange(1, len(scores)), batches - 1, replace=False))
    for i, part in enumerate(np.split(order, cuts)):
        if i % 2:  # alternate NumPy and torch, bool and 0/1 labels
            metric.update(torch.from_numpy(scores[part]), torch.from_numpy(is_ood[part]).long())
        else:
            metric.update(scores[part], is_ood[part])


@pytest.fixture(scope="module")
def digit_scores() -> dict[str, np.ndarray]:
    """Real scores of a real classifier: ridge regression onto one-hot labels of digits 0-5
    (closed form, 98% test accuracy), logits scaled by 10; ID test digits against digits
    6-9 (near OOD) and inverted digits (far OOD, scored *higher* than ID: AUROC near 0).
    MSP (piled up near 1) and energy scores, in float32."""
    split = load_digits_split()

    def with_bias(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)

    x = with_bias(split.x_train)
    y = torch.nn.functional.one_hot(split.y_train).double()
    weight = torch.linalg.solve(x.T @ x + 0.1 * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    out = {}
    for name, images in (("id", split.x_test), ("near", split.x_ood), ("far", 1 - split.x_ood)):
        logits = (10 * with_bias(images) @ weight).float()
        out[f"msp_{name}"] = logits.softmax(1).amax(1).numpy()
        out[f"energy_{name}"] = logits.logsumexp(1).numpy()
    return out


@pytest.mark.parametrize("rule", ["first", "nearest", "openood"])
def test_exact_mode_equals_ood_metrics(rule: str) -> None:
    rng = np.random.default_rng(1)
    a = np.round(rng.normal(0.8, 1, 3000) * 8) / 8
    b = np.round(rng.normal(0.0, 1, 2000) * 8) / 8
    for dtype in (np.float16, np.float32, np.float64):
        metric = OODMetrics(rule=rule, tpr=0.9)  # type: ignore[arg-type]
        feed(metric, a.astype(dtype), b.astype(dtype), batches=7)
        want = ood_metrics(a.astype(dtype), b.astype(dtype), 0.9, rule=rule)  # type: ignore[arg-type]
        assert metric.compute() == want
        assert metric.error_bounds() == {
            "auroc": 0.0,
            "aupr_in": 0.0,
            "aupr_out": 0.0,
            "fpr90": 0.0,
        }


def test_exact_mode_mixed_dtypes_and_reset() -> None:
    metric = OODMetrics()
    metric.update(np.array([3, 2, 1]), np.array([0, 1, 0]))  # integers: kept as int64
    metric.update(torch.tensor([0.5, 2.0], dtype=torch.float16), torch.tensor([True, False]))
    ids, oods = np.array([3.0, 1.0, 2.0]), np.array([2.0, 0.5])
    assert metric.compute() == ood_metrics(ids, oods)
    metric.reset()
    with pytest.raises(ValueError, match=r"at least one ID and one OOD score.*got 0 ID and 0 OOD"):
        metric.compute()
    metric.update(np.array([1.0]), np.array([True]))
    with pytest.raises(ValueError, match="got 0 ID and 1 OOD"):
        metric.compute()


@pytest.mark.parametrize("kind", ["msp", "energy"])
@pytest.mark.parametrize("ood", ["near", "far"])
@pytest.mark.parametrize("num_bins", [16, 256, 2**16])
def test_binned_bounds_hold_on_digit_scores(
    digit_scores: dict[str, np.ndarray], kind: str, ood: str, num_bins: int
) -> None:
    a, b = digit_scores[f"{kind}_id"], digit_scores[f"{kind}_{ood}"]
    exact = ood_metrics(a, b)
    metric = OODMetrics("binned", num_bins=num_bins)
    feed(metric, a, b, batches=5)
    binned, bounds = metric.compute(), metric.error_bounds()
    for key in ("auroc", "aupr_in", "aupr_out"):
        assert abs(binned[key] - exact[key]) <= bounds[key] + 1e-12, key
    assert binned["fpr95"] - bounds["fpr95"] - 1e-12 <= exact["fpr95"] <= binned["fpr95"] + 1e-12
    if num_bins == 2**16 and kind == "energy":  # fine bins: the bounds themselves are small
        assert bounds["auroc"] < 2e-3
        assert max(bounds["aupr_in"], bounds["aupr_out"]) < 5e-3
        for key in ("auroc", "aupr_in", "aupr_out"):
            assert binned[key] == pytest.approx(exact[key], abs=3e-3)


@pytest.mark.parametrize("num_bins", [64, 1024, 2**14])
def test_binned_bounds_hold_on_skewed_scores(num_bins: int) -> None:
    """MSP-like scores piled up near 1 and heavy-tailed energies, 60k scores per side."""
    rng = np.random.default_rng(num_bins)
    msp_id = (1 / (1 + np.exp(-rng.gamma(2.0, 3.0, 60_000)))).astype(np.float32)
    msp_ood = (1 / (1 + np.exp(-rng.gamma(1.5, 2.0, 60_000)))).astype(np.float32)
    energy_id = rng.lognormal(2.0, 0.5, 60_000)
    energy_ood = rng.lognormal(1.7, 0.7, 60_000)
    for a, b in ((msp_id, msp_ood), (energy_id, energy_ood)):
        exact = ood_metrics(a, b)
        metric = OODMetrics("binned", num_bins=num_bins)
        feed(metric, a, b, batches=4)
        binned, bounds = metric.compute(), metric.error_bounds()
        for key in ("auroc", "aupr_in", "aupr_out"):
            assert abs(binned[key] - exact[key]) <= bounds[key] + 1e-12, key
        assert 0 <= binned["fpr95"] - exact["fpr95"] <= bounds["fpr95"] + 1e-12


def test_binned_grows_its_range_exactly() -> None:
    """A first batch in [0, 1) then scores up to 1e6: bins merge, nothing is lost, and the
    counts equal those of a histogram built on the final grid directly."""
    rng = np.random.default_rng(2)
    metric = OODMetrics("binned", num_bins=128)
    batches = [rng.random(500), rng.random(500) * 1e3 - 5, rng.random(500) * 1e6]
    for i, batch in enumerate(batches):
        metric.update(batch, np.arange(batch.size) % (2 + i) == 0)
    histogram = metric._histogram
    assert histogram.exponent is not None
    everything = np.concatenate(batches)
    labels = np.concatenate([np.arange(b.size) % (2 + i) == 0 for i, b in enumerate(batches)])
    grid = np.floor(np.ldexp(everything, -histogram.exponent)).astype(np.int64)
    for row, mask in ((0, ~labels), (1, labels)):
        want = np.bincount(grid[mask] - histogram.start, minlength=histogram.num_bins)
        np.testing.assert_array_equal(histogram.counts[row], want)
    assert int(histogram.counts.sum()) == everything.size


def test_binned_score_range_and_infinities() -> None:
    a = np.array([np.inf, 0.3, 0.9, -np.inf, 5.0])  # 5.0 lies outside the given range
    b = np.array([np.inf, 0.1, 0.31, -np.inf])
    metric = OODMetrics("binned", score_range=(0.0, 1.0), num_bins=2**10)
    metric.update(np.r_[a, b], np.r_[np.zeros(5), np.ones(4)].astype(bool))
    got = metric.compute()
    assert got["auroc"] == pytest.approx(ref.auroc(a, b))
    assert got["aupr_in"] == pytest.approx(ref.aupr_in(a, b))
    assert got["fpr95"] == pytest.approx(ref.fpr_first(a, b))


def test_binned_ties_equal_exact() -> None:
    """Scores on a coarse grid coarser than the bins: binning changes nothing."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 20, 5000) / 4, rng.integers(-8, 12, 4000) / 4
    metric = OODMetrics("binned", num_bins=1024, rule="nearest")
    feed(metric, a, b, batches=3)
    want = ood_metrics(a, b, rule="nearest")
    got = metric.compute()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "approximate"}, r"`mode` to be 'exact' or 'binned', got 'approximate'"),
        ({"tpr": 1.5}, r"`tpr` to be a number in \(0, 1\]"),
        ({"rule": "last"}, "`rule` to be one of"),
        ({"num_bins": 4}, "`num_bins` to be an integer >= 16, got 4"),
        ({"num_bins": 100.0}, "`num_bins`"),
        ({"score_range": (1.0, 0.0)}, r"`score_range` to be a pair \(low, high\)"),
        ({"score_range": (0.0, float("inf"))}, "`score_range`"),
        ({"score_range": 1.0}, "`score_range`"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OODMetrics(**kwargs)


def test_bad_updates() -> None:
    metric = OODMetrics()
    with pytest.raises(
        ValueError, match=r"`is_ood` to be 1-D of the same length as `scores` \(3\)"
    ):
        metric.update(np.zeros(3), np.zeros(2, bool))
    with pytest.raises(ValueError, match=r"`is_ood` to hold only 0 and 1, got 2 at index 1"):
        metric.update(np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(TypeError, match=r"`is_ood` to hold bool or 0/1 integers, got dtype float"):
        metric.update(np.zeros(3), np.zeros(3))
    with pytest.raises(TypeError, match=r"`is_ood` to be a torch\.Tensor or a numpy\.ndarray"):
        metric.update(np.zeros(3), [0, 1, 0])
    with pytest.raises(ValueError, match=r"`scores` to hold no NaN, but 1 entry is NaN"):
        metric.update(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"`scores` to be 1-D"):
        metric.update(np.zeros((2, 2)), np.array([0, 1]))
    metric.update(np.zeros(0), np.zeros(0, bool))  # an empty batch is fine
    assert "OODMetrics(mode='exact', tpr=0.95, rule='first'" in repr(metric)
