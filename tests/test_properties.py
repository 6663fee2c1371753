"""Hypothesis properties of the logit scorers, over many shapes and values."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

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
