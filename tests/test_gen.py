"""GEN with many classes: the top-M selection, ties at its edge, and underflowing probabilities.

`gen_score` is compared with the independent float64 reference (tests/reference/scorers.py)
at C = 1000 and beyond, with and without autograd (the two must agree).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodscore import GEN
from oodscore._arrays import CHUNK_ELEMENTS
from oodscore.functional.softmax import gen_score
from tests.reference import scorers as ref

SETTINGS = [(0.1, 100), (0.5, 10), (0.01, 1), (0.1, 999), (0.1, 1000), (0.3, 5000)]


def every_class(logits: torch.Tensor, gamma: float, top_m: int) -> torch.Tensor:
    """`gen_score` with autograd recording."""
    with torch.enable_grad():
        return gen_score(logits.clone().requires_grad_(True), gamma, top_m).detach()


@pytest.mark.parametrize(("gamma", "top_m"), SETTINGS)
def test_thousand_classes_float64_against_reference(gamma, top_m, rng):
    logits = rng.normal(scale=4.0, size=(64, 1000))
    expected = ref.gen(logits, gamma=gamma, top_m=top_m)
    np.testing.assert_allclose(GEN(gamma=gamma, top_m=top_m)(logits), expected, rtol=1e-12)
    torch.testing.assert_close(
        every_class(torch.from_numpy(logits), gamma, top_m).numpy(), expected, rtol=1e-12, atol=0
    )


@pytest.mark.parametrize(("gamma", "top_m"), SETTINGS)
def test_thousand_classes_float32_against_reference(gamma, top_m, rng):
    logits = rng.normal(scale=6.0, size=(64, 1000)).astype(np.float32)
    result = GEN(gamma=gamma, top_m=top_m)(logits)
    assert result.dtype == np.float32
    expected = ref.gen(logits.astype(np.float64), gamma=gamma, top_m=top_m)
    np.testing.assert_allclose(result, expected, rtol=2e-6)


@pytest.mark.parametrize("top_m", [100, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_path_agrees_with_the_torch_path(dtype, top_m, rng):
    """The two paths differ only in rounding: a few units in the last place."""
    logits = torch.from_numpy(rng.normal(scale=5.0, size=(300, 1000))).to(dtype)
    rtol = 1e-6 if dtype == torch.float32 else 2e-15
    expected = every_class(logits, 0.1, top_m)
    torch.testing.assert_close(gen_score(logits, 0.1, top_m), expected, rtol=rtol, atol=0)


def test_ties_at_the_edge_of_the_top_m(rng):
    """Logits drawn from five values: about 200 classes tie at the 100th largest."""
    logits = rng.integers(0, 5, size=(64, 1000)).astype(np.float64)
    # a row whose top 99 are distinct and whose 100th value is shared by 50 classes
    logits[0] = -10.0
    logits[0, :99] = np.linspace(5.0, 1.0, 99)
    logits[0, 99:149] = 0.5
    logits[1] = 3.0  # every class tied
    for gamma, top_m in SETTINGS:
        expected = ref.gen(logits, gamma=gamma, top_m=top_m)
        np.testing.assert_allclose(
            GEN(gamma=gamma, top_m=top_m)(logits), expected, rtol=1e-12, atol=0
        )
    assert GEN(gamma=0.5, top_m=100)(logits[1:2])[0] == pytest.approx(
        -100 * (1 / 1000 * 999 / 1000) ** 0.5, rel=1e-13
    )


def test_tied_top_classes_count_each(rng):
    logits = rng.normal(size=(8, 1000))
    logits[:, [3, 500, 999]] = 20.0  # three classes share the largest logit
    np.testing.assert_allclose(GEN()(logits), ref.gen(logits), rtol=1e-12)


def confident_rows_reference(margins: np.ndarray, gamma: float = 0.1) -> np.ndarray:
    r"""GEN (M = 100) of rows ``[m, 0, ..., 0]`` (1000 classes), worked out in log space.

    With $r = 999 e^{-m}$ and $S = 1 + r$: $p_1 = 1/S$, $1 - p_1 = r/S$, $p_j = e^{-m}/S$ and
    $1 - p_j = (1 + 998 e^{-m})/S$; every logarithm is exact where $e^{-m}$ underflows
    (the softmax reference is not: its probabilities are subnormal there).
    """
    log_s = np.log1p(999 * np.exp(-margins))
    top = np.exp(gamma * (np.log(999.0) - margins - 2 * log_s))
    other = np.exp(gamma * (-margins + np.log1p(998 * np.exp(-margins)) - 2 * log_s))
    return -(top + 99 * other)


@pytest.mark.parametrize(
    ("dtype", "margins"),
    [(torch.float32, np.arange(80.0, 112.0, 0.5)), (torch.float64, np.arange(700.0, 760.0))],
)
def test_other_probabilities_near_and_below_underflow(dtype, margins):
    """Confident rows: 1 - p from normal to subnormal to underflowed, around the fallback.

    The top logit leads 999 zeros by ``margin``; above about 87 (float32) or 708 (float64)
    the other probabilities are subnormal, then zero, and the top class's log(S - e) comes
    from the log-sum-exp instead of log r.
    """
    logits = torch.zeros(len(margins), 1000, dtype=dtype)
    logits[:, 0] = torch.from_numpy(margins)
    scores = GEN()(logits)
    rtol = 2e-6 if dtype == torch.float32 else 1e-13
    expected = confident_rows_reference(margins)
    np.testing.assert_allclose(scores.double().numpy(), expected, rtol=rtol)
    assert torch.all(scores[1:] > scores[:-1])  # more confident, higher score
    np.testing.assert_allclose(
        confident_rows_reference(margins[:5]),
        ref.gen(logits[:5].double().numpy()),
        rtol=1e-12,  # the worked-out form agrees with the reference where both are exact
    )


def test_overflowing_differences_with_many_classes():
    """3e38 - (-3e38) overflows float32: probability 0, as in float64."""
    logits = torch.zeros(3, 1000)
    logits[0, :2] = torch.tensor([3e38, -3e38])
    logits[1, :200] = -3e38
    logits[2, :500] = 3e38
    scores = GEN()(logits)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores.double(), GEN()(logits.double()), rtol=1e-6, atol=0)


def test_row_blocks_with_many_classes(rng):
    """Above one row block (CHUNK_ELEMENTS values) the blocks are scored one by one."""
    num_rows = CHUNK_ELEMENTS // 1000 + 37
    logits = torch.from_numpy(rng.normal(scale=5.0, size=(num_rows, 1000)))
    scores = GEN()(logits)
    torch.testing.assert_close(scores, every_class(logits, 0.1, 100), rtol=2e-15, atol=0)
    np.testing.assert_allclose(scores[-40:].numpy(), ref.gen(logits[-40:].numpy()), rtol=1e-12)


def test_strided_input_and_a_tensor_that_requires_grad_under_no_grad(rng):
    wide = torch.from_numpy(rng.normal(scale=3.0, size=(40, 2000)))
    strided = wide[:, ::2]
    expected = ref.gen(strided.numpy())
    np.testing.assert_allclose(gen_score(strided).numpy(), expected, rtol=1e-12)
    with torch.no_grad():
        scores = gen_score(strided.clone().requires_grad_(True))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-12)


def test_gradient_with_many_classes_matches_float64(rng):
    x = torch.from_numpy(rng.normal(scale=4.0, size=(6, 1000)).astype(np.float32))
    x32 = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(GEN()(x32).sum(), x32)
    x64 = x.double().requires_grad_(True)
    (grad64,) = torch.autograd.grad(GEN()(x64).sum(), x64)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(GEN()(x64).detach().numpy(), ref.gen(x.double().numpy()), rtol=1e-6)


@pytest.mark.parametrize("top_m", [1, 2, 3, 100])
def test_a_single_finite_logit_gives_zero_and_a_zero_gradient(top_m):
    """Masked classes (logits of -inf): p = 1 for the one left, whose term is 0."""
    logits = torch.tensor([[0.0, -torch.inf, -torch.inf, -torch.inf]], requires_grad=True)
    score = gen_score(logits, 0.1, top_m)
    score.sum().backward()
    assert score.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_top_m_below_one_is_refused():
    with pytest.raises(ValueError, match="`top_m` >= 1, got 0"):
        gen_score(torch.zeros(2, 3), 0.1, 0)
