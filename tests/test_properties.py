"""Hypothesis properties of the logit scorers, over many shapes and values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import oodscore
from oodscore import GEN, MSP, Energy, Entropy, JointEnergy, MaxLogit


@st.composite
def logit_matrices(draw, max_value: float = 1e3) -> np.ndarray:
    rows = draw(st.integers(1, 8))
    cols = draw(st.integers(1, 12))
    values = st.floats(-max_value, max_value, allow_nan=False, allow_infinity=False, width=64)
    return draw(arrays(np.float64, (rows, cols), elements=values))


@given(logit_matrices())
def test_msp_lies_between_one_over_c_and_one(logits):
    scores = MSP()(logits)
    num_classes = logits.shape[1]
    assert np.all(scores >= 1 / num_classes - 1e-12)
    assert np.all(scores <= 1 + 1e-12)


@given(logit_matrices())
def test_energy_between_max_logit_and_max_plus_log_c(logits):
    energy = Energy()(logits)
    top = MaxLogit()(logits)
    assert np.all(energy >= top - 1e-9 * np.maximum(1, np.abs(top)))
    assert np.all(energy <= top + math.log(logits.shape[1]) + 1e-9 * np.maximum(1, np.abs(top)))


@given(logit_matrices())
def test_joint_energy_at_least_its_largest_term(logits):
    total = JointEnergy()(logits)
    largest = JointEnergy(top_k=1)(logits)
    assert np.all(total >= largest - 1e-9 * np.maximum(1, np.abs(largest)))
    assert np.all(largest >= 0)


@given(logit_matrices())
def test_negative_entropy_between_minus_log_c_and_zero(logits):
    scores = Entropy()(logits)
    assert np.all(scores <= 1e-12)
    assert np.all(scores >= -math.log(logits.shape[1]) - 1e-9)


@given(logit_matrices(), st.floats(-100, 100))
def test_softmax_scores_ignore_a_shift(logits, shift):
    for scorer in (MSP(), Entropy(), GEN()):
        np.testing.assert_allclose(scorer(logits + shift), scorer(logits), rtol=1e-7, atol=1e-9)


@given(logit_matrices(), st.floats(-100, 100))
def test_energy_and_max_logit_move_with_a_shift(logits, shift):
    for scorer in (Energy(), MaxLogit()):
        np.testing.assert_allclose(
            scorer(logits + shift), scorer(logits) + shift, rtol=1e-9, atol=1e-9
        )


@given(logit_matrices(), st.floats(0.05, 20))
def test_energy_temperature_limits(logits, temperature):
    """T·logsumexp(f/T) decreases towards max f as T shrinks."""
    cold = Energy(temperature=temperature)(logits)
    colder = Energy(temperature=temperature / 2)(logits)
    assert np.all(colder <= cold + 1e-9 * np.maximum(1, np.abs(cold)))


@given(logit_matrices())
def test_gen_bounded_by_number_of_terms(logits):
    gamma = 0.1
    scores = GEN(gamma=gamma)(logits)
    terms = min(100, logits.shape[1])
    assert np.all(scores <= 1e-12)
    assert np.all(scores >= -terms * 0.25**gamma - 1e-9)


# --------------------------------------------------------------------------------------
# Extreme finite logits and extreme valid parameters, for every registered logit scorer.
# Finite logits give finite scores and gradients; where the float64 reference value is
# representable, the score matches it; where it is not (a sum of several 3e38), the score
# saturates at the dtype's largest finite value.

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)

EXTREME_PARAMS: dict[str, list[dict]] = {
    "energy": [{}, {"temperature": 1e-6}, {"temperature": 1e6}],
    "entropy": [{}],
    "gen": [{}, {"gamma": 5e-324, "top_m": 1}, {"gamma": 1 - 2**-53, "top_m": 2}],
    "joint_energy": [{}, {"top_k": 1}],
    "max_logit": [{}],
    "max_sigmoid": [{}],
    "mos": [{}, {"log_scale": True}],  # groups are set from the width in `_build`
    "msp": [{}, {"temperature": 1e-6}, {"temperature": 1e6}],
    "sum_logit": [{}],
    "sum_sigmoid": [{}],
}
"""Scorer name -> parameter sets at the ends of their valid ranges (every plain logit scorer)."""


def _plain_logit_scorers() -> list[str]:
    from oodscore.scorers.base import SCORERS

    return [
        name
        for name in oodscore.list_scorers()
        if SCORERS.get_class(name).input_kind == "logits"
        and not SCORERS.get_class(name).requires_fit
        and not SCORERS.get_class(name).needs_head
    ]


def test_every_plain_logit_scorer_has_extreme_parameters():
    assert sorted(EXTREME_PARAMS) == _plain_logit_scorers()


def _groups(width: int) -> list[int]:
    """A MOS layout of ``width`` = C + K logits: one group, or two when there is room."""
    return [width - 1] if width < 5 else [1, width - 3]


def _build(name: str, params: dict, width: int):
    if name == "mos":
        params = {"groups": _groups(width), **params}
    return oodscore.get_scorer(name, **params)


def _reference(name: str, params: dict, logits: np.ndarray) -> np.ndarray:
    """The float64 reference score of float64 ``logits`` (may be inf/NaN where it overflows)."""
    from tests.reference import logit_baselines as base_ref
    from tests.reference import mos as mos_ref
    from tests.reference import scorers as ref

    width = logits.shape[1]
    if name == "mos":
        groups, start = [], 0
        for size in _groups(width):
            groups.append(list(range(start, start + size)))
            start += size
        score = mos_ref.log_score if params.get("log_scale") else mos_ref.score
        return score(logits, groups)
    table = {
        "energy": lambda x: ref.energy(x, params.get("temperature", 1.0)),
        "entropy": ref.negative_entropy,
        "gen": lambda x: ref.gen(x, params.get("gamma", 0.1), params.get("top_m", 100)),
        "joint_energy": lambda x: ref.joint_energy(x, params.get("top_k")),
        "max_logit": ref.max_logit,
        "max_sigmoid": base_ref.max_sigmoid,
        "msp": lambda x: ref.msp(x, params.get("temperature", 1.0)),
        "sum_logit": _exact_sum,
        "sum_sigmoid": base_ref.sum_sigmoid,
    }
    return table[name](logits)


def _exact_sum(logits: np.ndarray) -> np.ndarray:
    """Row sums, exact (rationals) then rounded: math.fsum overflows on float64 1e308 + 1e308."""
    from fractions import Fraction

    sums = [sum((Fraction(float(v)) for v in row), Fraction(0)) for row in logits]
    largest = Fraction(FLOAT64_MAX)
    return np.array(
        [(math.inf if s > 0 else -math.inf) if abs(s) > largest else float(s) for s in sums]
    )


def _tolerance(name: str, params: dict, logits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Absolute tolerance per row: a few roundings of the row's largest magnitude for the
    scores on the logits' scale, of 1 for the probability scores."""
    eps = float(np.finfo(dtype).eps)
    scale = np.abs(logits).max(axis=1)
    width = logits.shape[1]
    if name in ("energy", "max_logit"):
        spread = params.get("temperature", 1.0) * np.log(width)
        return 8 * eps * (scale + spread + 1)
    if name in ("joint_energy", "sum_logit") or (name == "mos" and params.get("log_scale")):
        return 8 * eps * (width * scale + 1)
    return np.full(len(logits), 64 * eps * width)


def _within_range(logits: np.ndarray) -> np.ndarray:
    """Rows whose softmax the float64 reference represents without underflow to 0."""
    return (logits.max(axis=1) - logits.min(axis=1)) < 600


_EXTREMES32 = [FLOAT32_MAX, -FLOAT32_MAX, 3e38, -3e38, 1e38, -1e38, 1e4, -1e4, 88.0, -104.0]
_EXTREMES64 = [FLOAT64_MAX, -FLOAT64_MAX, 1e308, -1e308, 1e4, -1e4, 710.0, -745.0]


@st.composite
def extreme_logit_matrices(draw, dtype: type) -> np.ndarray:
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 7))
    width = 32 if dtype is np.float32 else 64
    extremes = _EXTREMES32 if dtype is np.float32 else _EXTREMES64
    values = st.one_of(
        st.sampled_from([*extremes, 0.0, 1.0, -1.0]),
        st.floats(allow_nan=False, allow_infinity=False, width=width),
        st.floats(-30, 30, width=width),
    )
    return draw(arrays(dtype, (rows, cols), elements=values))


def _check_scorer(name: str, logits: np.ndarray) -> None:
    import torch

    from oodscore.scorers.base import SCORERS

    dtype = logits.dtype
    big = FLOAT32_MAX if dtype == np.float32 else FLOAT64_MAX
    for params in EXTREME_PARAMS[name]:
        if name == "mos" and logits.shape[1] < 2:
            continue
        if params.get("top_k", 0) > logits.shape[1]:
            continue
        scorer = _build(name, params, logits.shape[1])
        x = torch.from_numpy(logits.copy()).requires_grad_(True)
        scores = scorer(x)
        assert torch.isfinite(scores).all(), (name, params, logits, scores)
        if SCORERS.get_class(name).differentiable:
            (grad,) = torch.autograd.grad(scores.sum(), x)
            assert torch.isfinite(grad).all(), (name, params, logits, grad)
        ours = scores.detach().double().numpy()
        with np.errstate(all="ignore"):  # the reference and the tolerances may overflow
            _compare(name, params, logits, ours, big)


def _compare(name: str, params: dict, logits: np.ndarray, ours: np.ndarray, big: float) -> None:
    wanted = _reference(name, params, logits.astype(np.float64))
    representable = np.isfinite(wanted) & (np.abs(wanted) <= big)
    if name in ("gen", "msp", "entropy", "energy", "mos"):
        representable &= _within_range(logits.astype(np.float64))
    saturated = np.abs(wanted) > big
    if name in ("energy", "msp", "entropy", "gen", "max_logit", "max_sigmoid", "sum_sigmoid"):
        saturated &= np.isfinite(wanted)  # an inf here is the reference's own overflow
    elif name == "mos" and not params.get("log_scale"):
        saturated &= np.isfinite(wanted)
    np.testing.assert_array_equal(ours[saturated], np.sign(wanted[saturated]) * big)
    tol = _tolerance(name, params, logits.astype(np.float64), logits.dtype)
    ok = np.abs(ours - wanted) <= tol + 1e-5 * np.abs(wanted)
    assert np.all(ok[representable]), (name, params, logits, ours, wanted)


@pytest.mark.parametrize("name", sorted(EXTREME_PARAMS))
@given(data=st.data())
def test_extreme_finite_float32_logits_give_finite_scores(name, data):
    _check_scorer(name, data.draw(extreme_logit_matrices(np.float32)))


@pytest.mark.parametrize("name", sorted(EXTREME_PARAMS))
@given(data=st.data())
def test_extreme_finite_float64_logits_give_finite_scores(name, data):
    _check_scorer(name, data.draw(extreme_logit_matrices(np.float64)))
