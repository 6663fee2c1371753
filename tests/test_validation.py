"""Bad input gets a ValueError/TypeError that names the argument and the problem."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from oodscore import GEN, MSP, Energy, JointEnergy, MaxLogit
from oodscore._validation import check_finite


@pytest.mark.parametrize(
    ("logits", "match"),
    [
        (torch.zeros(5), r"`logits` to be 2-D of shape \(N, C\), got 1-D shape \(5,\)"),
        (torch.zeros(2, 3, 4), r"got 3-D shape \(2, 3, 4\)"),
        (torch.tensor(1.0), r"got 0-D shape \(\)"),
        (torch.zeros(4, 0), r"at least one column \(C >= 1\), got shape \(4, 0\)"),
    ],
)
def test_wrong_shape(logits, match):
    with pytest.raises(ValueError, match=match):
        Energy()(logits)


def test_nan_reports_row_count_and_first_index():
    logits = torch.zeros(10, 3)
    logits[7, 1] = float("nan")
    logits[3, 0] = float("nan")
    logits[3, 2] = float("nan")
    with pytest.raises(
        ValueError, match=r"`logits` to be finite, but 2 rows contain NaN \(first: row 3\)"
    ):
        MSP()(logits)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinity_is_rejected(value):
    logits = np.zeros((4, 3))
    logits[2, 1] = value
    with pytest.raises(ValueError, match=r"1 row contains ±inf \(first: row 2\)"):
        JointEnergy()(logits)


def test_nan_and_inf_reported_together():
    logits = torch.zeros(6, 2)
    logits[5, 0] = float("inf")
    logits[1, 1] = float("nan")
    with pytest.raises(
        ValueError,
        match=r"1 row contains NaN \(first: row 1\) and 1 row contains ±inf \(first: row 5\)",
    ):
        MaxLogit()(logits)


def test_opposite_infinities_in_one_row_are_caught():
    """+inf and -inf sum to NaN; both must still be reported as inf, not missed."""
    logits = torch.tensor([[float("inf"), float("-inf"), 0.0]])
    with pytest.raises(ValueError, match="±inf"):
        Energy()(logits)


def test_overflowing_row_sum_is_not_a_false_alarm():
    """Finite float32 values whose row sum overflows must pass the fast check's fallback."""
    big = torch.full((3, 4), 3e38, dtype=torch.float32)
    assert torch.isinf(big.sum(dim=1)).all()
    check_finite(big, "logits")
    assert torch.isfinite(MaxLogit()(big)).all()


def test_float16_overflowing_row_sum_is_accepted():
    logits = torch.full((2, 8), 60000.0, dtype=torch.float16)
    assert MaxLogit()(logits).tolist() == [60000.0, 60000.0]


@pytest.mark.parametrize(
    ("logits", "match"),
    [
        (
            torch.zeros(2, 2, dtype=torch.bool),
            r"`logits` to hold real numbers .* got dtype torch.bool",
        ),
        (torch.zeros(2, 2, dtype=torch.complex64), r"got dtype torch.complex64"),
        (np.array([["a", "b"]]), r"got dtype <U1"),
        (np.array([[1, 2]], dtype=object), r"got dtype object"),
        ([[1.0, 2.0]], r"`logits` to be a torch.Tensor or a numpy.ndarray, got list"),
    ],
)
def test_wrong_type_or_dtype(logits, match):
    with pytest.raises(TypeError, match=match):
        Energy()(logits)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (
            lambda: MSP(temperature=0),
            r"`temperature` to be a finite number in \[1e-06, 1000000\], got 0",
        ),
        (lambda: Energy(temperature=-1.0), r"got -1.0"),
        (lambda: Energy(temperature=float("nan")), r"got nan"),
        (lambda: Energy(temperature=float("inf")), r"got inf"),
        (lambda: Energy(temperature="2"), r"got '2'"),
        (lambda: Energy(temperature=True), r"got True"),
        (lambda: JointEnergy(top_k=0), r"`top_k` to be an integer >= 1, got 0"),
        (lambda: JointEnergy(top_k=2.5), r"`top_k` to be an integer >= 1, got 2.5"),
        (lambda: GEN(gamma=1.5), r"`gamma` to be a finite number in \(0, 1\), got 1.5"),
        (lambda: GEN(gamma=0), r"`gamma` to be a finite number in \(0, 1\), got 0"),
        (lambda: GEN(top_m=0), r"`top_m` to be an integer >= 1, got 0"),
    ],
)
def test_bad_hyper_parameters(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_top_k_larger_than_num_labels():
    with pytest.raises(
        ValueError, match=r"`top_k` to be at most the number of labels C = 3, got top_k=4"
    ):
        JointEnergy(top_k=4)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="top_k=4"):
        JointEnergy(top_k=4)(torch.zeros(0, 3))


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        Energy(2.0)  # type: ignore[misc]


def test_numpy_integer_input_is_accepted():
    assert MaxLogit()(np.array([[1, 5, 2]])).tolist() == [5.0]


def test_big_endian_and_read_only_numpy_arrays_are_accepted(rng):
    logits = rng.normal(size=(5, 3))
    expected = Energy()(logits)
    swapped = logits.astype(">f8")
    np.testing.assert_array_equal(Energy()(swapped), expected)
    read_only = logits.copy()
    read_only.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(Energy()(read_only), expected)
        broadcast = np.broadcast_to(logits[:1], (4, 3))
        np.testing.assert_array_equal(Energy()(broadcast), np.repeat(expected[:1], 4))


def test_a_zero_d_array_is_named_zero_d() -> None:
    """NumPy's ascontiguousarray makes a 0-d array 1-D; the message once said 1-D."""
    import numpy as np

    from oodscore import MSP

    with pytest.raises(ValueError, match=r"got 0-D shape \(\)"):
        MSP()(np.array(3.0))
