"""The contract of feature scorers that need no fit and of every scorer that applies the head.

Feature scorers without a fit (ASH, SCALE, GradNorm) get the checks the logit contract gives
logit scorers: shape, batch invariance, NumPy/torch parity, dtypes, gradients, the sign.
Every scorer that applies the classifier head (`needs_head`) gets the head's contract: an
``nn.Linear`` and its tensors give the same scores, NumPy weights equal torch ones, a
missing head or one of another width is a clear error, ``set_head`` installs one. The data
and each scorer's set-up are in `tests/scorer_cases.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from oodscore import FittedScorer, Scorer
from oodscore.scorers.base import SCORERS
from tests.scorer_cases import C, D, build, features, head_tensors, id_and_far, inputs, names

UNFITTED = names(input_kind="features", fitted=False)
HEAD = names(input_kind="features", head=True)


def ready(name: str, **overrides: object) -> Scorer:
    """`build`, fitted on the test data when the scorer needs it."""
    scorer = build(name, **overrides)
    if isinstance(scorer, FittedScorer):
        x, targets = inputs(name)
        scorer.fit(x, targets)
    return scorer


def queries(seed: int = 1, rows: int = 40) -> torch.Tensor:
    """Non-negative features (post-ReLU, as the shaping methods assume)."""
    return features(seed, rows)[0].abs()


def fit_then_score(scorer: Scorer, x: torch.Tensor, targets: torch.Tensor) -> None:
    """Fit ``scorer`` when it needs it, then score ``x``."""
    if isinstance(scorer, FittedScorer):
        scorer.fit(x, targets)
    scorer(x)


@pytest.fixture(params=UNFITTED)
def unfitted(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=HEAD)
def head_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_families_are_registered() -> None:
    assert {"ash", "scale", "gradnorm"} <= set(UNFITTED)
    assert {"react", "ash", "dice", "scale", "vim", "gradnorm"} <= set(HEAD)


# ----------------------------------------------------------- feature scorers without a fit


def test_shape_sign_and_empty(unfitted: str) -> None:
    scorer = ready(unfitted)
    assert scorer(queries()).shape == (40,)
    at_class, far = id_and_far(unfitted)
    assert bool((scorer(at_class) > scorer(far)).all())
    assert scorer(queries()[:0]).shape == (0,)
    empty = scorer(np.zeros((0, D), dtype=np.float32))
    assert isinstance(empty, np.ndarray)
    assert empty.shape == (0,)


def test_batch_invariance(unfitted: str) -> None:
    scorer = ready(unfitted)
    x = queries()
    whole = scorer(x)
    pieces = torch.cat([scorer(x[i : i + 7]) for i in range(0, len(x), 7)])
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=1e-12)
    permutation = torch.randperm(len(x))
    torch.testing.assert_close(scorer(x[permutation]), whole[permutation])


def test_numpy_and_torch_agree(unfitted: str) -> None:
    scorer = ready(unfitted)
    x = queries()
    from_numpy = scorer(x.numpy())
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_allclose(from_numpy, scorer(x).numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "out"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_dtypes(unfitted: str, dtype: torch.dtype, out: torch.dtype) -> None:
    scorer = ready(unfitted)
    x = queries().to(dtype)
    scores = scorer(x)
    assert scores.dtype == out
    torch.testing.assert_close(scores.double(), scorer(x.double()), rtol=1e-5, atol=1e-5)


def test_gradient_flows(unfitted: str) -> None:
    scorer = ready(unfitted)
    assert SCORERS.get_class(unfitted).differentiable
    x = queries().requires_grad_(True)
    scorer(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_repr_and_docstring(unfitted: str) -> None:
    scorer = build(unfitted)
    assert repr(scorer).startswith(type(scorer).__name__ + "(")
    doc = type(scorer).__doc__ or ""
    assert "\n    Examples:\n" in doc
    assert "\n    Source: " in doc


# ------------------------------------------------------------------- the head's contract


def test_linear_head_equals_its_tensors(head_name: str) -> None:
    weight, bias = head_tensors()
    linear = nn.Linear(D, C).double()
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    x = queries()
    by_tensors = ready(head_name)(x)
    by_module = ready(head_name, weight=None, bias=None, head=linear)(x)
    by_numpy = ready(head_name, weight=weight.numpy(), bias=bias.numpy())(x)
    torch.testing.assert_close(by_module, by_tensors, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(by_numpy, by_tensors, rtol=1e-12, atol=1e-12)


def test_set_head_installs_a_head(head_name: str) -> None:
    weight, bias = head_tensors()
    linear = nn.Linear(D, C).double()
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    scorer = build(head_name, weight=None, bias=None)
    assert scorer.has_head is False  # type: ignore[attr-defined]
    scorer.set_head(linear)  # type: ignore[attr-defined]
    if isinstance(scorer, FittedScorer):
        x, targets = inputs(head_name)
        scorer.fit(x, targets)
    torch.testing.assert_close(scorer(queries()), ready(head_name)(queries()), rtol=1e-12, atol=0)


def test_no_head_is_a_clear_error(head_name: str) -> None:
    scorer = build(head_name, weight=None, bias=None)
    cls = type(scorer).__name__
    x, targets = inputs(head_name)
    with pytest.raises(ValueError, match=rf"{cls} applies the classifier head and has none"):
        fit_then_score(scorer, x, targets)


def test_head_of_another_width_is_a_clear_error(head_name: str) -> None:
    weight, _ = head_tensors()
    scorer = build(head_name, weight=torch.cat([weight, weight], dim=1))
    x, targets = inputs(head_name)
    with pytest.raises(ValueError, match=rf"D = {2 * D} columns.*got shape \({len(x)}, {D}\)"):
        fit_then_score(scorer, x, targets)


def test_bad_head_arguments(head_name: str) -> None:
    weight, bias = head_tensors()
    with pytest.raises(ValueError, match="either `head` or `weight`/`bias`"):
        build(head_name, head=nn.Linear(D, C))
    with pytest.raises(ValueError, match=r"`bias` of shape \(C,\) = \(3,\)"):
        build(head_name, bias=bias[:2])
    with pytest.raises(ValueError, match=r"`weight` to be a \(C, D\) matrix"):
        build(head_name, weight=weight[0])
    with pytest.raises(ValueError, match="`weight` to be finite"):
        build(head_name, weight=torch.full((C, D), float("nan")))
    with pytest.raises(ValueError, match="`weight` with `bias`"):
        build(head_name, weight=None)
    with pytest.raises(TypeError, match=r"torch\.nn\.Linear"):
        build(head_name, weight=None, bias=None, head=nn.Conv1d(D, C, 1))


def test_head_without_bias(head_name: str) -> None:
    weight, _ = head_tensors()
    scorer = ready(head_name, bias=None)
    assert torch.isfinite(scorer(queries())).all()
    assert scorer.get_params()["bias"] is None
    assert "weight=<Tensor of shape (3, 5)>" in repr(scorer) or weight.numel() <= 16
