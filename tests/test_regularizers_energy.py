"""Energy margin, outlier exposure, balanced energy and margin calibration vs float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from oodscore import (
    BalancedEnergyLoss,
    EnergyMarginLoss,
    OutlierExposureLoss,
    calibrate_margins,
    estimate_class_prior,
    get_regularizer,
)
from oodscore.functional import balanced_energy_loss
from tests.reference import regularizers as ref

C = 5

# These tests compare values on batches built to reach every branch, some of which put
# all energies of a batch far beyond a margin; the warning that raises is tested in
# tests/test_regularizer_terms.py.
pytestmark = pytest.mark.filterwarnings("ignore:EnergyMarginLoss. :UserWarning")


def _logits(rng: np.random.Generator, rows: int, *, scale: float, shift: float = 0.0):
    return torch.from_numpy(rng.normal(shift, scale, size=(rows, C)))


def _extreme(rng: np.random.Generator, rows: int) -> torch.Tensor:
    """±1e4 logits, mixed with ordinary ones: energies near ±1e4, softmax one-hot."""
    values = rng.choice([-1e4, 1e4, 0.0, 3.0], size=(rows, C))
    return torch.from_numpy(values)


# Logit scales that make both hinges active for the margins under test.
CASES = {
    "random": lambda rng: (_logits(rng, 16, scale=8.0), _logits(rng, 24, scale=8.0)),
    "shifted": lambda rng: (_logits(rng, 9, scale=3.0, shift=6.0), _logits(rng, 11, scale=1.0)),
    "extreme": lambda rng: (_extreme(rng, 12), _extreme(rng, 12)),
    "batch_of_one": lambda rng: (_logits(rng, 1, scale=8.0), _logits(rng, 1, scale=8.0)),
}


def _close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dtype == torch.float64
    assert actual.ndim == 0
    np.testing.assert_allclose(float(actual), expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- energy margin


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"weight": 1.0, "margin_in": -3.0, "margin_out": -1.0},
        {"weight": 1.0, "margin_in": -12.0, "margin_out": -6.0, "temperature": 2.5},
        {"weight": 0.1, "margin_in": -23.0, "margin_out": -5.0},
    ],
)
def test_energy_margin_matches_reference(case: str, params: dict[str, float]) -> None:
    rng = np.random.default_rng(list(CASES).index(case))
    logits_in, logits_out = CASES[case](rng)
    expected = ref.energy_margin(logits_in.numpy(), logits_out.numpy(), **params)
    _close(EnergyMarginLoss(**params)(logits_in=logits_in, logits_out=logits_out), expected)


def test_energy_margin_defaults_are_the_official_values() -> None:
    reg = EnergyMarginLoss()
    assert (reg.weight, reg.margin_in, reg.margin_out, reg.temperature) == (0.1, -25.0, -7.0, 1.0)


def test_energy_margin_hinges_are_one_sided() -> None:
    # ID energy already below m_in and outlier energy above m_out: nothing to pay.
    low = torch.tensor([[30.0, 0.0]], dtype=torch.float64)  # E ≈ -30
    high = torch.tensor([[-10.0, -10.0]], dtype=torch.float64)  # E ≈ 9.3
    assert float(EnergyMarginLoss()(logits_in=low, logits_out=high)) == 0.0
    # Swapped roles pay both hinges.
    expected = 0.1 * ((-float(torch.logsumexp(high, 1)) + 25) ** 2 + (-7 + 30.0) ** 2)
    np.testing.assert_allclose(
        float(EnergyMarginLoss()(logits_in=high, logits_out=low)), expected, rtol=1e-6
    )


def test_energy_margin_gradcheck() -> None:
    rng = np.random.default_rng(1)
    logits_in = _logits(rng, 4, scale=6.0).requires_grad_()
    logits_out = _logits(rng, 3, scale=6.0).requires_grad_()
    reg = EnergyMarginLoss(weight=1.0, margin_in=-8.0, margin_out=-4.0, temperature=1.5)
    assert torch.autograd.gradcheck(
        lambda a, b: reg(logits_in=a, logits_out=b), (logits_in, logits_out)
    )


def test_energy_margin_float32_and_half() -> None:
    rng = np.random.default_rng(2)
    logits_in, logits_out = _logits(rng, 6, scale=8.0), _logits(rng, 6, scale=8.0)
    expected = ref.energy_margin(logits_in.numpy(), logits_out.numpy())
    out32 = EnergyMarginLoss()(logits_in=logits_in.float(), logits_out=logits_out.float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(float(out32), expected, rtol=1e-5)
    out16 = EnergyMarginLoss()(logits_in=logits_in.half(), logits_out=logits_out.half())
    assert out16.dtype == torch.float32  # half precision is computed in float32
    np.testing.assert_allclose(float(out16), expected, rtol=5e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": -0.1}, r"`weight` to be a finite number in \[0, 1000000\], got -0.1"),
        ({"weight": 1e7}, r"`weight` to be a finite number in \[0, 1000000\], got 1"),
        ({"weight": float("nan")}, r"`weight`"),
        ({"margin_in": -7.0, "margin_out": -25.0}, r"margin_in` < `margin_out`.*-7.0"),
        ({"margin_in": -5.0, "margin_out": -5.0}, r"margin_in` < `margin_out`"),
        ({"margin_in": float("inf")}, r"`margin_in` to be a finite number in \[-1000000, "),
        ({"margin_in": -1e30}, r"`margin_in` to be a finite number in \[-1000000, 1000000\]"),
        ({"margin_out": "high"}, r"`margin_out` to be a finite number"),
        ({"temperature": 0.0}, r"`temperature` to be a finite number in \[1e-06, 1000000\]"),
        ({"temperature": 1e-40}, r"`temperature` to be a finite number in \[1e-06, 1000000\]"),
    ],
)
def test_energy_margin_rejects_bad_hyper_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnergyMarginLoss(**kwargs)  # type: ignore[arg-type]


GOOD = torch.zeros(3, C)


@pytest.mark.parametrize(
    ("logits_in", "logits_out", "error", "match"),
    [
        (GOOD, torch.zeros(0, C), ValueError, r"`logits_out` to have at least 1 row"),
        (torch.zeros(0, C), GOOD, ValueError, r"`logits_in` to have at least 1 row"),
        (GOOD, torch.zeros(3, C + 1), ValueError, r"as many classes as `logits_in` \(C = 5\)"),
        (GOOD, torch.full((3, C), math.nan), ValueError, r"`logits_out` to be finite.*NaN"),
        (torch.full((3, C), math.inf), GOOD, ValueError, r"`logits_in` to be finite.*inf"),
        (GOOD[0], GOOD, ValueError, r"`logits_in` to be 2-D"),
        (GOOD, torch.zeros(3, C, dtype=torch.long), TypeError, r"floating-point.*int64"),
        (GOOD, np.zeros((3, C)), TypeError, r"`logits_out` to be a torch.Tensor"),
        (GOOD, None, ValueError, r"Expected `logits_out`, the logits of the auxiliary"),
    ],
)
def test_energy_losses_reject_bad_logits(
    logits_in: object, logits_out: object, error: type[Exception], match: str
) -> None:
    for reg in (EnergyMarginLoss(), BalancedEnergyLoss(np.full(C, 0.2))):
        with pytest.raises(error, match=match):
            reg(logits_in=logits_in, logits_out=logits_out)  # type: ignore[arg-type]


def test_mixed_dtypes_are_promoted() -> None:
    rng = np.random.default_rng(3)
    logits_in, logits_out = _logits(rng, 4, scale=8.0), _logits(rng, 5, scale=8.0)
    out = EnergyMarginLoss()(logits_in=logits_in.float(), logits_out=logits_out)
    assert out.dtype == torch.float64


# --------------------------------------------------------------------------- dense form


def _dense(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = torch.from_numpy(rng.normal(0.0, 8.0, size=(2, C, 3, 4)))
    labels = torch.from_numpy(rng.integers(0, 3, size=(2, 3, 4)))  # 0 ID, 1 outlier, 2 void
    return logits, labels == 1, labels == 0


def _pixels(logits: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    return logits.permute(0, 2, 3, 1).numpy()[mask.numpy()]


def test_dense_form_is_half_the_classification_form_on_pixels() -> None:
    """With outlier pixels the dense form averages the two terms (official ``losses.py``)."""
    logits, mask_out, mask_in = _dense(np.random.default_rng(4))
    prior = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    for reg, reference in (
        (EnergyMarginLoss(margin_in=-12.0, margin_out=-6.0), ref.energy_margin),
        (BalancedEnergyLoss(prior, gamma=3.0, alpha=5.0), ref.balanced_energy),
    ):
        extra = (
            {"prior": prior, "gamma": 3.0, "alpha": 5.0} if reg.name == "balanced_energy" else {}
        )
        params = {"margin_in": reg.margin_in, "margin_out": reg.margin_out, "weight": reg.weight}
        expected = reference(  # type: ignore[operator]
            _pixels(logits, mask_in), _pixels(logits, mask_out), **params, **extra
        )
        _close(reg(logits_in=logits, mask_out=mask_out, mask_in=mask_in), 0.5 * expected)
        # Without mask_in, every pixel outside mask_out is ID (void pixels included).
        everything_else = _pixels(logits, ~mask_out)
        expected_all = reference(  # type: ignore[operator]
            everything_else, _pixels(logits, mask_out), **params, **extra
        )
        _close(reg(logits_in=logits, mask_out=mask_out), 0.5 * expected_all)


def _segmentation(rng: np.random.Generator, *, outliers: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Dense logits (2, C, 4, 5) and official targets: class ids, 254 outlier, 255 void."""
    logits = torch.from_numpy(rng.normal(0.0, 6.0, size=(2, C, 4, 5)))
    targets = rng.integers(0, C, size=(2, 4, 5))
    targets[rng.random(targets.shape) < 0.2] = 255
    if outliers:
        targets[rng.random(targets.shape) < 0.3] = 254
    return logits, targets


@pytest.mark.parametrize("outliers", [True, False], ids=["with_outliers", "no_outliers"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_form_matches_the_official_segmentation_loss(outliers: bool, dtype) -> None:
    """losses.py (``energy_loss_pure``, ``balanced_energy_loss_pure``) times the trainer's 0.1
    (engine/trainer.py:56): ``weight=0.1`` reproduces the official segmentation term."""
    logits, targets = _segmentation(np.random.default_rng(40 + outliers), outliers=outliers)
    mask_out = torch.from_numpy(targets == 254)
    mask_in = torch.from_numpy((targets != 254) & (targets != 255))
    prior = np.array([0.30, 0.05, 0.40, 0.15, 0.10])
    balanced = BalancedEnergyLoss(
        prior, weight=0.1, margin_in=-12.0, margin_out=-6.0, alpha=5.0, gamma=3.0
    )
    plain = EnergyMarginLoss(weight=0.1, margin_in=-12.0, margin_out=-6.0)
    x = logits.to(dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for reg, extra in ((balanced, {"prior": prior, "gamma1": 3.0, "gamma2": 3.0, "alpha": 5.0}),
                       (plain, {})):  # fmt: skip
        got = reg(logits_in=x, mask_out=mask_out, mask_in=mask_in)
        expected = ref.official_dense_loss(logits.numpy(), targets, **extra)
        np.testing.assert_allclose(float(got), expected, rtol=rtol)


def test_dense_form_without_outlier_pixels_keeps_the_id_term() -> None:
    logits, _, _ = _dense(np.random.default_rng(5))
    no_outliers = torch.zeros(2, 3, 4, dtype=torch.bool)
    reg = EnergyMarginLoss(weight=0.5, margin_in=-12.0, margin_out=-6.0)
    pixels = _pixels(logits, ~no_outliers)
    expected = 0.5 * np.mean(np.maximum(0.0, ref.energy(pixels) + 12.0) ** 2)
    _close(reg(logits_in=logits, mask_out=no_outliers), expected)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda r, x, m: r(logits_in=x, logits_out=x, mask_out=m),
            ValueError,
            r"either `logits_out`.*or `mask_out`",
        ),
        (
            lambda r, x, m: r(logits_in=x[:, :, 0, 0], mask_out=m),
            ValueError,
            r"\(N, C, \*spatial\)",
        ),
        (
            lambda r, x, m: r(logits_in=x, mask_out=m[:, :2]),
            ValueError,
            r"`mask_out` to have shape",
        ),
        (
            lambda r, x, m: r(logits_in=x, mask_out=m.long()),
            TypeError,
            r"`mask_out` to be a boolean",
        ),
        (lambda r, x, m: r(logits_in=x, mask_out=m, mask_in=m), ValueError, r"disjoint.*pixel"),
        (
            lambda r, x, m: r(logits_in=x[:, :, 0, 0], logits_out=GOOD, mask_in=m),
            ValueError,
            r"only together",
        ),
        (lambda r, x, m: r(logits_in=x.fill_(math.nan), mask_out=m), ValueError, r"finite.*NaN"),
    ],
)
def test_dense_form_errors(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    logits, mask_out, _ = _dense(np.random.default_rng(6))
    with pytest.raises(error, match=match):
        call(EnergyMarginLoss(), logits.float().clone(), mask_out)


# --------------------------------------------------------------------------- outlier exposure


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_outlier_exposure_matches_reference(case: str, weight: float) -> None:
    _, logits_out = CASES[case](np.random.default_rng(list(CASES).index(case)))
    params = {} if weight == 0.5 else {"weight": weight}
    _close(
        OutlierExposureLoss(**params)(logits_out=logits_out),
        ref.outlier_exposure(logits_out.numpy(), weight=weight),
    )
    _close(
        OutlierExposureLoss(target="zeros", **params)(logits_out=logits_out),
        ref.outlier_exposure_zeros(logits_out.numpy(), weight=weight),
    )


def test_outlier_exposure_is_smallest_at_uniform_softmax() -> None:
    uniform = torch.full((4, C), 3.0, dtype=torch.float64)
    np.testing.assert_allclose(
        float(OutlierExposureLoss(weight=1.0)(logits_out=uniform)), math.log(C)
    )
    confident = uniform.clone()
    confident[:, 0] = 10.0
    assert float(OutlierExposureLoss(weight=1.0)(logits_out=confident)) > math.log(C) + 1


def test_outlier_exposure_gradcheck() -> None:
    logits_out = _logits(np.random.default_rng(7), 4, scale=3.0).requires_grad_()
    for target in ("uniform", "zeros"):
        reg = OutlierExposureLoss(weight=1.0, target=target)  # type: ignore[arg-type]
        assert torch.autograd.gradcheck(lambda x: reg(logits_out=x), (logits_out,))  # noqa: B023


def test_outlier_exposure_errors() -> None:
    with pytest.raises(ValueError, match=r"`target` to be one of 'uniform', 'zeros', got 'ones'"):
        OutlierExposureLoss(target="ones")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`weight` to be a finite number in \[0, 1000000\]"):
        OutlierExposureLoss(weight=-1)
    with pytest.raises(ValueError, match=r"`weight` to be a finite number in \[0, 1000000\]"):
        OutlierExposureLoss(weight=1e39)  # inf in float32: inf * 0 would be NaN
    with pytest.raises(ValueError, match=r"`logits_out` to have at least 1 row"):
        OutlierExposureLoss()(logits_out=torch.zeros(0, C))
    with pytest.raises(ValueError, match=r"`logits_out` to be finite"):
        OutlierExposureLoss()(logits_out=torch.tensor([[0.0, math.inf]]))


def test_outlier_exposure_official_weight() -> None:
    assert OutlierExposureLoss().weight == 0.5
    assert get_regularizer("outlier_exposure", target="zeros").target == "zeros"


# --------------------------------------------------------------------------- balanced energy

PRIOR = np.array([0.45, 0.25, 0.15, 0.1, 0.05])


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"weight": 1.0, "margin_in": -10.0, "margin_out": -4.0, "alpha": 10.0, "gamma": 0.75},
        {"weight": 1.0, "margin_in": -10.0, "margin_out": -4.0, "alpha": 3.0, "gamma": 2.0,
         "gamma_weight": 0.5},
        {"weight": 0.5, "margin_in": -12.0, "margin_out": -6.0, "alpha": 5.0, "gamma": 3.0},
    ],
)  # fmt: skip
def test_balanced_energy_matches_reference(case: str, params: dict[str, float]) -> None:
    rng = np.random.default_rng(10 + list(CASES).index(case))
    logits_in, logits_out = CASES[case](rng)
    expected = ref.balanced_energy(logits_in.numpy(), logits_out.numpy(), PRIOR, **params)
    _close(
        BalancedEnergyLoss(PRIOR, **params)(logits_in=logits_in, logits_out=logits_out), expected
    )


def test_balanced_energy_with_uniform_weights_is_energy_margin_with_shifted_margin() -> None:
    rng = np.random.default_rng(11)
    logits_in, logits_out = _logits(rng, 8, scale=8.0), _logits(rng, 8, scale=8.0)
    balanced = BalancedEnergyLoss(PRIOR, gamma=0.0, alpha=10.0)(
        logits_in=logits_in, logits_out=logits_out
    )
    plain = EnergyMarginLoss(margin_in=-23.0, margin_out=-5.0 + 10.0 / C)(
        logits_in=logits_in, logits_out=logits_out
    )
    torch.testing.assert_close(balanced, plain)


def test_balanced_energy_favors_majority_class_outliers() -> None:
    # Two outliers with the same energy; the one predicted as the majority class gets the
    # larger margin and the larger weight, so its gradient is larger.
    logits_out = torch.tensor([[6.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 6.0]])
    logits_out = logits_out.double().requires_grad_()
    logits_in = torch.zeros(1, C, dtype=torch.float64)
    BalancedEnergyLoss(PRIOR, gamma=1.0)(logits_in=logits_in, logits_out=logits_out).backward()
    assert logits_out.grad is not None
    majority, minority = logits_out.grad.abs().sum(dim=1)
    assert float(majority) > 2 * float(minority)


def test_balanced_energy_weights_that_underflow_keep_their_ratio() -> None:
    """Outliers predicted as classes of prior 0 have tiny weights Z (e^-120 here): 0 in
    float32, where the weighted mean was 0 / 0 (the official code: NaN; before: 0). In log
    space their ratio, and so the weighted mean, stays exact."""
    prior = np.array([0.5, 0.5, 0.0, 0.0, 0.0])
    logits_out = torch.tensor(
        [[-60.0, -60.0, 60.0, 0.0, 0.0], [-50.0, -70.0, 60.0, 0.0, 0.0]], dtype=torch.float64
    )
    logits_in = torch.full((1, C), 100.0, dtype=torch.float64)  # E far below m_in
    reg = BalancedEnergyLoss(prior, weight=1.0, margin_in=-10.0, margin_out=70.0, gamma=1.0)
    expected = ref.balanced_energy(
        logits_in.numpy(), logits_out.numpy(), prior, weight=1.0, margin_in=-10.0,
        margin_out=70.0, gamma=1.0,
    )  # fmt: skip
    assert expected > 0
    for dtype in (torch.float64, torch.float32):
        x_out = logits_out.to(dtype).requires_grad_(True)
        got = reg(logits_in=logits_in.to(dtype), logits_out=x_out)
        (grad,) = torch.autograd.grad(got, x_out)
        np.testing.assert_allclose(float(got.detach()), expected, rtol=1e-5)
        assert torch.isfinite(grad).all()


def test_balanced_energy_gradcheck() -> None:
    rng = np.random.default_rng(12)
    logits_in = _logits(rng, 3, scale=5.0).requires_grad_()
    logits_out = _logits(rng, 4, scale=5.0).requires_grad_()
    reg = BalancedEnergyLoss(
        PRIOR, weight=1.0, margin_in=-8.0, margin_out=-2.0, alpha=4.0, gamma=0.75, gamma_weight=2.0
    )
    assert torch.autograd.gradcheck(
        lambda a, b: reg(logits_in=a, logits_out=b), (logits_in, logits_out)
    )


def test_balanced_energy_influence_is_not_detached() -> None:
    # As in the official code, gradients also flow through the softmax inside Z. With Z
    # detached, each outlier row's gradient would be a multiple of softmax(row) (the
    # gradient of -E); through Z it is not.
    prior = torch.from_numpy(PRIOR)
    logits_in = torch.zeros(1, C, dtype=torch.float64)
    logits_out = _logits(np.random.default_rng(13), 3, scale=2.0).requires_grad_()
    loss = balanced_energy_loss(
        logits_in, logits_out, prior, margin_out=5.0, gamma=1.0, alpha=10.0
    )  # margin 5 > every energy here: every outlier hinge is active
    (grad,) = torch.autograd.grad(loss, logits_out)
    probs = torch.softmax(logits_out.detach(), dim=1)
    cosine = F.cosine_similarity(grad, probs, dim=1)
    assert (cosine.abs() < 1 - 1e-6).all()
    assert (grad.abs().sum(dim=1) > 0).all()


def test_balanced_energy_defaults_and_errors() -> None:
    reg = BalancedEnergyLoss([1, 1, 1])
    assert (reg.weight, reg.margin_in, reg.margin_out, reg.alpha, reg.gamma, reg.gamma_weight) == (
        0.1, -23.0, -5.0, 10.0, 0.05, None,
    )  # fmt: skip
    assert reg.class_prior.dtype == torch.float64
    assert "class_prior=tensor([1., 1., 1.]" in repr(reg)
    assert "gamma=0.05" in repr(reg)
    with pytest.raises(ValueError, match=r"C = len\(class_prior\) = 3 classes, got 5"):
        reg(logits_in=torch.zeros(2, C), logits_out=torch.zeros(2, C))
    for bad in ([], [0.0, 0.0], [0.5, -0.1], np.ones((1, 2)), [math.nan, 1.0]):
        with pytest.raises(ValueError, match=r"`class_prior` to be a non-empty 1-D vector"):
            BalancedEnergyLoss(bad)
    with pytest.raises(TypeError, match=r"`class_prior` to be a tensor, array or sequence"):
        BalancedEnergyLoss("uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`alpha` to be a finite number in \[0, 1000000\]"):
        BalancedEnergyLoss([1, 1], alpha=-1)
    with pytest.raises(ValueError, match=r"`alpha` to be a finite number in \[0, 1000000\]"):
        BalancedEnergyLoss([1, 1], alpha=1e300)
    with pytest.raises(ValueError, match=r"`gamma_weight` to be a finite number >= 0"):
        BalancedEnergyLoss([1, 1], gamma_weight=-0.5)
    with pytest.raises(ValueError, match=r"margin_in` < `margin_out`"):
        BalancedEnergyLoss([1, 1], margin_in=-5.0, margin_out=-23.0)


def test_balanced_energy_prior_moves_with_the_module() -> None:
    reg = BalancedEnergyLoss(torch.tensor([0.7, 0.3]))
    assert "class_prior" in reg.state_dict()
    logits = torch.randn(3, 2, dtype=torch.float32)
    assert reg.to(torch.float32)(logits_in=logits, logits_out=logits).dtype == torch.float32


# --------------------------------------------------------------------------- class prior


def test_estimate_class_prior_matches_reference() -> None:
    rng = np.random.default_rng(14)
    logits = rng.normal(size=(200, C)) + np.array([1.0, 0.5, 0.0, -0.5, -3.0])
    expected = ref.class_prior(logits)
    torch.testing.assert_close(
        estimate_class_prior(torch.from_numpy(logits)), torch.from_numpy(expected)
    )
    got = estimate_class_prior(logits.astype(np.float32))
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected)
    assert got.sum() == pytest.approx(1.0)


def test_estimate_class_prior_ties_single_row_and_errors() -> None:
    torch.testing.assert_close(
        estimate_class_prior(torch.tensor([[1.0, 1.0, 0.0]])),
        torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match=r"`logits_out` to have at least 1 row"):
        estimate_class_prior(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"`logits_out` to be finite"):
        estimate_class_prior(torch.tensor([[math.nan, 1.0]]))
    with pytest.raises(TypeError, match=r"torch.Tensor or a numpy.ndarray, got list"):
        estimate_class_prior([[1.0, 0.0]])  # type: ignore[type-var]


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(("temperature", "widen"), [(1.0, 0.0), (2.0, 0.0), (1.0, 0.5)])
def test_calibrate_margins_matches_reference(temperature: float, widen: float) -> None:
    rng = np.random.default_rng(15)
    logits_in = rng.normal(4.0, 3.0, size=(50, C)) * np.eye(C)[rng.integers(0, C, 50)] * 3
    logits_out = rng.normal(0.0, 1.0, size=(40, C))
    expected = ref.mean_energy_margins(logits_in, logits_out, temperature=temperature, widen=widen)
    got = calibrate_margins(
        logits_in, torch.from_numpy(logits_out), temperature=temperature, widen=widen
    )
    np.testing.assert_allclose(tuple(got), expected, rtol=1e-12)
    reg = EnergyMarginLoss(**got._asdict())
    assert (reg.margin_in, reg.margin_out) == tuple(got)


def test_calibrate_margins_refuses_a_model_that_does_not_separate() -> None:
    confident = torch.tensor([[10.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"mean ID energy to be below the mean outlier energy"):
        calibrate_margins(unsure, confident)
    with pytest.raises(ValueError, match=r"as many classes as `logits_in`"):
        calibrate_margins(confident, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"`widen` to be a finite number >= 0"):
        calibrate_margins(confident, unsure, widen=-1.0)


# --------------------------------------------------------------------------- finite for finite


def test_balanced_energy_gamma_30_with_100_classes_is_finite_and_exact() -> None:
    """P ** 30 of a 100-class prior underflows to 0 in float32: the direct normalization was
    0 / 0 and the loss and its gradients NaN. In log space it matches the float64 reference."""
    rng = np.random.default_rng(30)
    prior = rng.dirichlet(np.ones(100))
    logits_in = rng.normal(0.0, 5.0, size=(8, 100))
    logits_out = rng.normal(0.0, 5.0, size=(12, 100))
    params = {"weight": 0.1, "margin_in": -10.0, "margin_out": 2.0, "alpha": 10.0, "gamma": 30.0}
    expected = ref.balanced_energy(logits_in, logits_out, prior, **params)
    for dtype in (torch.float32, torch.float64):
        x_in = torch.from_numpy(logits_in).to(dtype).requires_grad_(True)
        x_out = torch.from_numpy(logits_out).to(dtype).requires_grad_(True)
        loss = BalancedEnergyLoss(prior, **params)(logits_in=x_in, logits_out=x_out)
        grads = torch.autograd.grad(loss, (x_in, x_out))
        assert all(torch.isfinite(g).all() for g in grads)
        rtol = 1e-5 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(float(loss.detach()), expected, rtol=rtol)


TOP32 = float(torch.finfo(torch.float32).max)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outlier_exposure_of_huge_logits_is_finite_and_exact(dtype) -> None:
    """float32 ``mean([3e38, 3e38, -3e38, -3e38])`` overflowed (inf - inf: the loss was -inf);
    the row term logsumexp - mean is 3e38 + log 2 - 0."""
    big = 3e38 if dtype == torch.float32 else 1e308
    x = torch.tensor([[big, big, -big, -big], [1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    x.requires_grad_(True)
    loss = OutlierExposureLoss(weight=1.0)(logits_out=x)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    expected = (big + math.log(2) + (math.log(3 + math.e) - 0.25)) / 2
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-6)
    zeros = OutlierExposureLoss(target="zeros", weight=1.0)(logits_out=x[:1, :2])
    assert float(zeros.detach()) == pytest.approx(big, rel=1e-6)  # mean of [3e38, 3e38]


def test_energy_margin_of_huge_logits_saturates_without_nan() -> None:
    """Energies of ±3e38 square to inf; each hinge is capped, so the loss and gradients are
    finite (the saturated samples get no gradient)."""
    from oodscore.functional.energy_losses import hinge_cap

    x_in = torch.tensor([[-3e38, -3e38], [1.0, 0.0]], requires_grad=True)  # E = +3e38
    x_out = torch.tensor([[3e38, -3e38], [0.0, 0.0]], requires_grad=True)  # E = -3e38
    reg = EnergyMarginLoss(weight=1e6, temperature=1e-6)
    loss = reg(logits_in=x_in, logits_out=x_out)
    grads = torch.autograd.grad(loss, (x_in, x_out))
    assert math.isfinite(float(loss.detach()))
    assert all(torch.isfinite(g).all() for g in grads)
    cap = hinge_cap(torch.float32)
    in_term = (cap**2 + max(0.0, -1.3132617 + 25) ** 2) / 2
    out_term = (cap**2 + max(0.0, -7 + 0.6931472) ** 2) / 2
    np.testing.assert_allclose(float(loss.detach()), 1e6 * (in_term + out_term), rtol=1e-5)


@st.composite
def _extreme_logits(draw, dtype: type) -> np.ndarray:
    big = float(np.finfo(dtype).max)
    rows = draw(st.integers(1, 4))
    values = st.one_of(
        st.sampled_from([big, -big, big / 3, -big / 3, 1e4, -1e4, 0.0, 88.0, -104.0]),
        st.floats(allow_nan=False, allow_infinity=False, width=32 if dtype is np.float32 else 64),
        st.floats(-40, 40),
    )
    return draw(arrays(dtype, (rows, C), elements=values))


EXTREME_REGULARIZERS = [
    EnergyMarginLoss(),
    EnergyMarginLoss(weight=1e6, margin_in=-1e6, margin_out=1e6, temperature=1e-6),
    EnergyMarginLoss(weight=1e6, margin_in=1e6 - 1, margin_out=1e6, temperature=1e6),
    BalancedEnergyLoss(PRIOR),
    BalancedEnergyLoss([0.5, 0.5, 0.0, 0.0, 1e-300], gamma=30.0, gamma_weight=0.0, alpha=1e6),
    BalancedEnergyLoss([1e-300, 1.0, 0.0, 1e300, 0.0], gamma=1e300, weight=1e6),
    OutlierExposureLoss(weight=1e6),
    OutlierExposureLoss(target="zeros", weight=1e6),
]


@pytest.mark.parametrize("reg", EXTREME_REGULARIZERS, ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_extreme_finite_logits_give_finite_losses_and_gradients(reg, dtype, data) -> None:
    x_in = torch.from_numpy(data.draw(_extreme_logits(dtype))).requires_grad_(True)
    x_out = torch.from_numpy(data.draw(_extreme_logits(dtype))).requires_grad_(True)
    if isinstance(reg, OutlierExposureLoss):
        loss, inputs = reg(logits_out=x_out), (x_out,)
    else:
        loss, inputs = reg(logits_in=x_in, logits_out=x_out), (x_in, x_out)
    grads = torch.autograd.grad(loss, inputs)
    assert math.isfinite(float(loss.detach())), (reg, x_in, x_out, loss)
    assert all(torch.isfinite(g).all() for g in grads), (reg, x_in, x_out, grads)
