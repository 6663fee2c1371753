"""SumLogit, MaxSigmoid and SumSigmoid against the float64 references in tests/reference.

The JointEnergy paper's logit baselines (``lib.py`` ``get_logits``: ``logit``/``sum``,
``prob``/``max``, ``prob``/``sum``). Tests named ``test_reference_*`` check the reference alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodscore.functional.logit import sum_logit_score
from oodscore.functional.sigmoid import max_sigmoid_score, sum_sigmoid_score
from oodscore.scorers.logit import MaxLogit, SumLogit
from oodscore.scorers.sigmoid import MaxSigmoid, SumSigmoid
from tests.reference import logit_baselines as ref

CASES = {
    "sum_logit": (SumLogit, sum_logit_score, ref.sum_logit),
    "max_sigmoid": (MaxSigmoid, max_sigmoid_score, ref.max_sigmoid),
    "sum_sigmoid": (SumSigmoid, sum_sigmoid_score, ref.sum_sigmoid),
}
NAMES = list(CASES)


def scorer(name: str):
    return CASES[name][0]()


def reference(name: str, logits) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().double().numpy()
    return CASES[name][2](np.asarray(logits, dtype=np.float64))


def random_logits(rng, rows=200, classes=20, scale=4.0):
    return rng.normal(scale=scale, size=(rows, classes)) + rng.normal(size=(rows, 1)) * 3


def extreme_logits():
    """Rows of ±1e4, ties, saturating values, cancellation and a flat row."""
    return np.array(
        [
            [1e4, -1e4, 0.5, 1e-3],
            [-1e4, -1e4, -1e4, -1e4],
            [1e4, 1e4, 1e4, 1e4],
            [3.0, 3.0, 3.0, 3.0],
            [40.0, 36.0, 17.5, -40.0],
            [-800.0, -705.0, -120.0, -90.0],
            [0.0, 0.0, 0.0, 0.0],
            [1e8, 1.0, -1e8, 0.0],
        ]
    )


def within_one_ulp(actual: np.ndarray, wanted: np.ndarray, dtype) -> None:
    """``actual`` (of ``dtype``) is ``wanted`` (float64) rounded to ``dtype``, up to one ulp."""
    rounded = wanted.astype(dtype)
    low = np.nextafter(rounded, dtype(-np.inf))
    high = np.nextafter(rounded, dtype(np.inf))
    assert actual.dtype == dtype
    assert np.all((actual >= low) & (actual <= high)), (actual, rounded)


# --- the reference alone ---------------------------------------------------------------


def test_reference_sigmoid_matches_closed_forms() -> None:
    f = np.array([-1e4, -800.0, -30.0, 0.0, 2.0, 30.0, 1e4])
    expected = np.array(
        [
            0.0,
            0.0,
            np.exp(-30.0) / (1 + np.exp(-30.0)),
            0.5,
            1 / (1 + np.exp(-2.0)),
            1 / (1 + np.exp(-30.0)),
            1.0,
        ]
    )
    np.testing.assert_allclose(ref.sigmoid(f), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(ref.sigmoid(-f) + ref.sigmoid(f), 1.0, rtol=1e-15)


def test_reference_against_the_official_route(rng) -> None:
    """The official code: float64 logits, torch.sigmoid, np.max / np.sum (lib.py:299-312)."""
    logits = random_logits(rng)
    probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(ref.sum_logit(logits), np.sum(logits, axis=1), rtol=1e-13)
    np.testing.assert_allclose(ref.max_sigmoid(logits), np.max(probs, axis=1), rtol=1e-15)
    np.testing.assert_allclose(ref.sum_sigmoid(logits), np.sum(probs, axis=1), rtol=1e-14)


# --- the scorers against the reference -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_float64_matches_reference(name, rng) -> None:
    logits = random_logits(rng)
    scores = scorer(name)(torch.from_numpy(logits))
    assert scores.dtype == torch.float64
    np.testing.assert_allclose(scores.numpy(), reference(name, logits), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_logits(name) -> None:
    logits = extreme_logits()
    wanted = reference(name, logits)
    scores64 = scorer(name)(logits)
    np.testing.assert_allclose(scores64, wanted, rtol=1e-15, atol=0)
    scores32 = scorer(name)(logits.astype(np.float32))
    within_one_ulp(scores32, reference(name, logits.astype(np.float32)), np.float32)


def test_sum_logit_does_not_cancel_in_float32() -> None:
    """1e8 + 1 - 1e8 is 1: float32 summation loses the 1, the float64 accumulation keeps it."""
    logits = torch.tensor([[1e8, 1.0, -1e8, 0.0], [1e4, -1e4, 0.5, 1e-3]])
    torch.testing.assert_close(SumLogit()(logits), torch.tensor([1.0, 0.501]), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_float32_is_the_float64_value_rounded(name, rng) -> None:
    """Computed in float64 and rounded once: the correctly rounded value (a float32 sum or
    torch's float32 sigmoid misses it on about half of these rows)."""
    logits = random_logits(rng, rows=500, scale=10.0).astype(np.float32)
    wanted = reference(name, logits).astype(np.float32)
    np.testing.assert_array_equal(scorer(name)(logits), wanted)


@pytest.mark.parametrize("name", NAMES)
def test_float32_only_ties_never_reorders(name, rng) -> None:
    """Sorted by the float64 reference, the float32 scores never decrease: rounding makes
    ties (saturation near 1) but never swaps two inputs."""
    logits = random_logits(rng, rows=2000, scale=12.0).astype(np.float32)
    wanted = reference(name, logits)
    order = np.argsort(wanted, kind="stable")
    scores = scorer(name)(logits)[order]
    assert np.all(np.diff(scores.astype(np.float64)) >= 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(name, dtype, rng) -> None:
    logits = torch.from_numpy(random_logits(rng, rows=64, classes=8)).to(dtype)
    scores = scorer(name)(logits)
    assert scores.dtype == torch.float32
    within_one_ulp(scores.numpy(), reference(name, logits.float()), np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_one_class_and_one_row(name, rng) -> None:
    logits = rng.normal(scale=5.0, size=(30, 1))
    np.testing.assert_allclose(scorer(name)(logits), reference(name, logits), rtol=1e-15)
    row = rng.normal(size=(1, 7))
    np.testing.assert_allclose(scorer(name)(row), reference(name, row), rtol=1e-15)


def test_single_class_values() -> None:
    """With C = 1 the three are the logit itself and its probability, twice."""
    f = torch.tensor([[-3.0], [0.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(SumLogit()(f), f[:, 0])
    torch.testing.assert_close(MaxSigmoid()(f), torch.sigmoid(f[:, 0]))
    torch.testing.assert_close(SumSigmoid()(f), torch.sigmoid(f[:, 0]))


def test_saturation_thresholds_stated_in_the_docs() -> None:
    """float32: 1.0 from a largest logit of 17.33 (< 1 at 17.32); float64: from 36.74."""
    below32, above32 = torch.tensor([[17.32]]), torch.tensor([[17.34]])
    assert MaxSigmoid()(below32).item() < 1.0
    assert MaxSigmoid()(above32).item() == 1.0
    below64 = torch.tensor([[36.73]], dtype=torch.float64)
    above64 = torch.tensor([[36.75]], dtype=torch.float64)
    assert MaxSigmoid()(below64).item() < 1.0
    assert MaxSigmoid()(above64).item() == 1.0
    # torch's own float32 sigmoid rounds to 1 earlier; the float64 route does not
    assert torch.sigmoid(torch.tensor(16.7)).item() == 1.0
    assert MaxSigmoid()(torch.tensor([[16.7]])).item() < 1.0
    # towards minus infinity: 0 below -103.97 in float32 (torch's float32 sigmoid: -88.72),
    # never 0 above -709 in float64
    assert torch.sigmoid(torch.tensor(-100.0)).item() == 0.0
    assert MaxSigmoid()(torch.tensor([[-103.9]])).item() > 0.0
    assert MaxSigmoid()(torch.tensor([[-104.0]])).item() == 0.0
    assert MaxSigmoid()(torch.tensor([[-709.0]], dtype=torch.float64)).item() > 0.0


def test_max_sigmoid_ranks_as_max_logit_below_saturation(rng) -> None:
    logits = torch.from_numpy(random_logits(rng, rows=1000, scale=6.0)).clamp(-30, 30)
    np.testing.assert_array_equal(
        torch.argsort(MaxSigmoid()(logits)).numpy(), torch.argsort(MaxLogit()(logits)).numpy()
    )


def test_sum_sigmoid_is_bounded_by_the_class_count(rng) -> None:
    logits = torch.from_numpy(random_logits(rng, rows=300, classes=5, scale=50.0))
    scores = SumSigmoid()(logits)
    assert bool((scores >= 0).all() and (scores <= 5).all())
    assert SumSigmoid()(torch.full((1, 5), 1e4)).item() == 5.0


def test_gradients_are_the_analytic_ones(rng) -> None:
    f = torch.from_numpy(random_logits(rng, rows=10, classes=6)).requires_grad_(True)
    SumLogit()(f).sum().backward()
    torch.testing.assert_close(f.grad, torch.ones_like(f))
    f.grad = None
    SumSigmoid()(f).sum().backward()
    s = torch.sigmoid(f.detach())
    torch.testing.assert_close(f.grad, s * (1 - s))
    f.grad = None
    MaxSigmoid()(f).sum().backward()
    top = f.detach().argmax(dim=1)
    expected = torch.zeros_like(f)
    rows = torch.arange(len(f))
    expected[rows, top] = (s * (1 - s))[rows, top]
    torch.testing.assert_close(f.grad, expected)


def test_gradients_stay_finite_at_extremes() -> None:
    f = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    (SumLogit()(f) + MaxSigmoid()(f) + SumSigmoid()(f)).sum().backward()
    assert torch.isfinite(f.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_flags_and_names(name) -> None:
    cls = CASES[name][0]
    assert cls.name == name
    assert cls.multilabel is True
    assert cls.requires_fit is False
    assert cls.differentiable is True
    assert cls.input_kind == "logits"
    assert repr(cls()) == f"{cls.__name__}()"


def test_sum_logit_never_overflows_in_a_partial_sum() -> None:
    """float64 1e308 + 1e308 overflowed before -1e308 - 1e308 came in: inf (or NaN), where
    the sum is 0. Summed scaled by a power of two, it is exact."""
    rows = [[1e308, 1e308, -1e308, -1e308], [1e308, -1e308, 1.5, 0.0]]
    logits = torch.tensor(rows, dtype=torch.float64)
    torch.testing.assert_close(
        SumLogit()(logits), torch.tensor([0.0, 1.5], dtype=torch.float64), rtol=0, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sum_logit_beyond_the_dtype_saturates(dtype) -> None:
    """Two logits of 3e38 sum to 6e38, beyond float32: the largest float32, not inf."""
    top = torch.finfo(dtype).max
    x = torch.tensor([[top, top], [-top, -top], [top, -top]], dtype=dtype, requires_grad=True)
    scores = SumLogit()(x)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert scores.tolist() == [top, -top, 0.0]
    assert torch.isfinite(grad).all()
