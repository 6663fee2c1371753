"""Each logit scorer against its independent float64 reference (tests/reference/scorers.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch

from oodscore import GEN, MSP, Energy, Entropy, JointEnergy, MaxLogit, Scorer
from oodscore._arrays import CHUNK_ELEMENTS
from tests.reference import scorers as ref

CASES: list[tuple[Scorer, Callable[[np.ndarray], np.ndarray]]] = [
    (MSP(), ref.msp),
    (MSP(temperature=2.5), partial(ref.msp, temperature=2.5)),
    (MSP(temperature=0.1), partial(ref.msp, temperature=0.1)),
    (MaxLogit(), ref.max_logit),
    (Energy(), ref.energy),
    (Energy(temperature=0.5), partial(ref.energy, temperature=0.5)),
    (Energy(temperature=1000.0), partial(ref.energy, temperature=1000.0)),
    (Entropy(), ref.negative_entropy),
    (GEN(), ref.gen),
    (GEN(gamma=0.5, top_m=3), partial(ref.gen, gamma=0.5, top_m=3)),
    (GEN(gamma=0.01, top_m=1), partial(ref.gen, gamma=0.01, top_m=1)),
    (JointEnergy(), ref.joint_energy),
    (JointEnergy(top_k=1), partial(ref.joint_energy, top_k=1)),
    (JointEnergy(top_k=3), partial(ref.joint_energy, top_k=3)),
]
IDS = [repr(scorer) for scorer, _ in CASES]


def extreme_logits() -> np.ndarray:
    """Rows at the edge of float32: ±1e4, all equal, one huge, tiny gaps, large negative."""
    rows = [
        [1e4, -1e4, 0.0, 5.0, -3.0],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [7.0, 7.0, 7.0, 7.0, 7.0],
        [1e4, 0.0, 0.0, 0.0, 0.0],
        [1e4, 1e4, -1e4, 0.0, 1.0],
        [30.0, 0.0, 0.0, 0.0, 0.0],
        [-80.0, -90.0, -100.0, -85.0, -95.0],
        [1e-6, 0.0, -1e-6, 2e-6, 0.0],
        [100.0, -100.0, 50.0, -50.0, 0.0],
    ]
    return np.array(rows, dtype=np.float64)


def assert_close(actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    assert np.isfinite(actual).all()


@pytest.mark.parametrize(("scorer", "reference"), CASES, ids=IDS)
@pytest.mark.parametrize("num_classes", [1, 2, 7, 100])
def test_random_logits_float64(scorer, reference, num_classes, rng):
    if getattr(scorer, "top_k", None) and scorer.top_k > num_classes:
        pytest.skip("top_k larger than C is an error, tested elsewhere")
    logits = rng.normal(scale=4.0, size=(64, num_classes))
    assert_close(scorer(logits), reference(logits), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("scorer", "reference"), CASES, ids=IDS)
def test_random_logits_float32(scorer, reference, rng):
    logits = rng.normal(scale=6.0, size=(256, 10)).astype(np.float32)
    result = scorer(logits)
    assert result.dtype == np.float32
    assert_close(result, reference(logits.astype(np.float64)), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(("scorer", "reference"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits(scorer, reference, dtype):
    logits = torch.tensor(extreme_logits(), dtype=dtype)
    expected = reference(logits.double().numpy())
    rtol, atol = (1e-6, 1e-6) if dtype == torch.float32 else (1e-12, 1e-12)
    assert_close(scorer(logits).double().numpy(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(("scorer", "reference"), CASES, ids=IDS)
def test_half_precision_computed_in_float32(scorer, reference, rng):
    logits = rng.normal(scale=3.0, size=(32, 6)).astype(np.float16)
    result = scorer(torch.from_numpy(logits))
    assert result.dtype == torch.float32
    assert_close(result.numpy(), reference(logits.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("scorer", "reference"), CASES, ids=IDS)
def test_large_input_in_row_blocks_matches_reference(scorer, reference, rng):
    """Inputs above one row block go through map_rows' blocked path; results must not change."""
    num_rows = 3 * CHUNK_ELEMENTS // 16 + 7
    logits = torch.from_numpy(rng.normal(scale=5.0, size=(num_rows, 16)))
    blocked = scorer(logits)
    with torch.enable_grad():
        whole = scorer(logits.clone().requires_grad_(True)).detach()  # autograd: one pass
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)
    assert_close(blocked[-500:].numpy(), reference(logits[-500:].numpy()), rtol=1e-10, atol=1e-12)


def test_gen_keeps_distinct_scores_for_confident_float32_predictions():
    """1 - p is not computed as a difference: confident rows keep their order in float32."""
    margins = torch.tensor([17.0, 18.0, 19.0, 20.0, 22.0])
    logits = torch.stack([margins, torch.zeros(5), torch.zeros(5)], dim=1)
    scores = GEN()(logits)
    assert torch.all(scores[1:] > scores[:-1])
    expected = ref.gen(logits.double().numpy())
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)


def test_joint_energy_is_exact_where_log1p_exp_overflows():
    logits = torch.tensor([[100.0, 200.0, -300.0]], dtype=torch.float32)
    assert JointEnergy()(logits).item() == pytest.approx(300.0, rel=1e-7)
    naive = torch.log(1 + torch.exp(logits)).sum(1)  # the official code's form
    assert torch.isinf(naive).all()


def test_joint_energy_top_k_equal_to_num_labels_is_the_full_sum(rng):
    logits = rng.normal(size=(20, 4))
    np.testing.assert_allclose(JointEnergy(top_k=4)(logits), JointEnergy()(logits), rtol=1e-14)


def test_msp_temperature_is_odin_scaling():
    logits = torch.tensor([[4.0, 0.0]])
    assert MSP(temperature=1000.0)(logits).item() == pytest.approx(
        1 / (1 + np.exp(-4.0 / 1000.0)), rel=1e-6
    )


# --------------------------------------------------------------------------------------
# Finite logits whose differences overflow, and the ends of the temperature range.

OVERFLOWING = torch.tensor([[3e38, -3e38, 0.0], [-3e38, 3e38, 3e38]], dtype=torch.float32)


@pytest.mark.parametrize("scorer", [MSP(), Entropy(), GEN(), Energy(temperature=0.5)], ids=repr)
def test_overflowing_logit_differences_give_finite_scores_and_gradients(scorer):
    """3e38 - (-3e38) overflows float32; the scores are those of the float64 logits."""
    x = OVERFLOWING.clone().requires_grad_(True)
    scores = scorer(x)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert torch.isfinite(scores).all()
    assert torch.isfinite(grad).all()
    expected = scorer(OVERFLOWING.double())
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-6)


def test_entropy_of_a_one_hot_float32_row_with_overflowing_differences_is_zero():
    scores = Entropy()(torch.tensor([[3e38, -3e38, 0.0]]))
    assert scores.tolist() == [0.0]


def test_gen_gradient_is_finite_where_probabilities_underflow():
    x = torch.tensor([[100.0, 0.0, -100.0], [20.0, -200.0, -300.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(GEN()(x).sum(), x)
    assert torch.isfinite(grad).all()
    # the gradient of -sum_j (p_j (1 - p_j))^g, by central differences in float64
    x64 = x.detach().double().requires_grad_(True)
    (grad64,) = torch.autograd.grad(GEN()(x64).sum(), x64)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("cls", [MSP, Energy])
@pytest.mark.parametrize("temperature", [1e-300, 1e-40, 1e-7, 1e7, 1e300])
def test_temperature_outside_its_range_is_refused(cls, temperature):
    with pytest.raises(ValueError, match=r"`temperature` to be a finite number in \[1e-06, "):
        cls(temperature=temperature)


@pytest.mark.parametrize("cls", [MSP, Energy])
@pytest.mark.parametrize("temperature", [1e-6, 1e6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temperature_at_the_ends_of_its_range_is_finite(cls, temperature, dtype):
    top = torch.finfo(dtype).max
    x = torch.tensor(
        [[top, -top, 0.0], [1.0, 0.0, -1.0], [top, top, top], [-top, -top, 5.0]], dtype=dtype
    ).requires_grad_(True)
    scorer = cls(temperature=temperature)
    scores = scorer(x)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert torch.isfinite(scores).all()
    assert torch.isfinite(grad).all()
    reference = ref.msp if cls is MSP else ref.energy
    rows = [1] if dtype == torch.float64 else [0, 1, 2, 3]  # float64 rows 0, 2, 3 overflow f/T
    expected = reference(x.detach().double().numpy()[rows], temperature)
    np.testing.assert_allclose(scores.detach().double().numpy()[rows], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_joint_energy_beyond_the_dtype_saturates(dtype):
    """softplus(3e38) + softplus(3e38) = 6e38, beyond float32: the largest float32, not inf."""
    top = torch.finfo(dtype).max
    x = torch.tensor([[top, top], [top, -top]], dtype=dtype, requires_grad=True)
    scores = JointEnergy()(x)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert scores.tolist() == [top, top]
    assert torch.isfinite(grad).all()
