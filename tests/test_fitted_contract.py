"""The contract of fitted scorers, checked for every registered one (new ones for free).

Feature scorers (Mahalanobis, KNN, ReAct, ...) and fitted logit scorers (KL matching, LOF,
...) alike get: fit returns the scorer; NotFittedError before fit; state_dict holds tensors
only and round-trips through torch.save / torch.load(weights_only=True); NumPy in -> NumPy
out, torch in -> torch out on the same device; float16 computed in float32, float64 kept;
batch invariance; a wrong width is an error; points at the ID data score above far ones.
The data and each scorer's set-up are in `tests/scorer_cases.py`.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from oodscore import NotFittedError
from oodscore.scorers.base import SCORERS
from tests.scorer_cases import C, D, build, fitted, id_and_far, inputs, kind, names

FITTED = names(input_kind="features", fitted=True) + names(input_kind="logits", fitted=True)


@pytest.fixture(params=FITTED)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def width(name: str) -> tuple[str, int]:
    """The symbol and size of the scored width: C logits or D features."""
    return ("C", C) if kind(name) == "logits" else ("D", D)


def test_there_are_fitted_scorers() -> None:
    assert {"mahalanobis", "relative_mahalanobis"} <= set(FITTED)


def test_flags(name: str) -> None:
    cls = SCORERS.get_class(name)
    assert cls.requires_fit is True
    assert cls.higher_is_id is True
    assert cls.state_names


def test_scoring_before_fit_names_the_class_and_the_fix(name: str) -> None:
    scorer = build(name)
    with pytest.raises(NotFittedError, match=rf"This {type(scorer).__name__} .*Call 'fit'"):
        scorer(torch.zeros(2, width(name)[1]))
    with pytest.raises(NotFittedError):
        scorer.state_dict()


def test_higher_is_in_distribution(name: str) -> None:
    scorer = fitted(name)
    at_class, far = id_and_far(name)
    assert bool((scorer(at_class) > scorer(far)).all())


def test_state_round_trip_is_weights_only_safe(name: str) -> None:
    scorer = fitted(name)
    state = scorer.state_dict()
    assert list(state) == list(scorer.state_names)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = build(name).load_state_dict(loaded)
    queries = inputs(name, seed=1)[0]
    torch.testing.assert_close(fresh(queries), scorer(queries), rtol=0, atol=0)


def test_bad_state_is_refused(name: str) -> None:
    scorer = fitted(name)
    state = scorer.state_dict()
    fresh = build(name)
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict({k: v for k, v in list(state.items())[1:]})
    with pytest.raises(ValueError, match="unexpected"):
        fresh.load_state_dict({**state, "extra": torch.zeros(1)})
    first = scorer.state_names[0]
    with pytest.raises(ValueError, match="finite"):
        fresh.load_state_dict({**state, first: torch.full_like(state[first], float("nan"))})


def test_numpy_in_numpy_out_torch_in_torch_out(name: str) -> None:
    scorer = fitted(name)
    queries = inputs(name, seed=2)[0]
    from_torch = scorer(queries)
    from_numpy = scorer(queries.numpy())
    assert isinstance(from_torch, torch.Tensor)
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_allclose(from_numpy, from_torch.numpy(), rtol=1e-12)


def test_fit_on_numpy_equals_fit_on_torch(name: str) -> None:
    x, targets = inputs(name)
    a = build(name).fit(x, targets)
    b = build(name).fit(x.numpy(), targets.numpy())
    queries = inputs(name, seed=3)[0]
    torch.testing.assert_close(a(queries), b(queries), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("dtype", "out"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_dtypes(name: str, dtype: torch.dtype, out: torch.dtype) -> None:
    scorer = fitted(name)
    queries = inputs(name, seed=4)[0]
    scores = scorer(queries.to(dtype))
    assert scores.dtype == out
    torch.testing.assert_close(
        scores.double(), scorer(queries.to(dtype).double()), rtol=1e-5, atol=1e-5
    )


def test_batch_invariance_and_device(name: str) -> None:
    scorer = fitted(name)
    queries = inputs(name, seed=5)[0]
    whole = scorer(queries)
    pieces = torch.cat([scorer(queries[i : i + 7]) for i in range(0, len(queries), 7)])
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=1e-12)
    assert whole.device == queries.device
    assert scorer(queries[:0]).shape == (0,)


def test_wrong_width_and_bad_inputs(name: str) -> None:
    scorer = fitted(name)
    symbol, size = width(name)
    argument = kind(name)
    with pytest.raises(
        ValueError, match=rf"{symbol} = {size} columns.*got shape \(2, {size + 1}\)"
    ):
        scorer(torch.zeros(2, size + 1))
    with pytest.raises(ValueError, match=f"`{argument}` to be finite"):
        scorer(torch.full((2, size), float("inf")))
    with pytest.raises(ValueError, match=f"`{argument}` to be 2-D"):
        scorer(torch.zeros(size))
    fresh = build(name)
    with pytest.raises(ValueError, match="at least 1 row"):
        fresh.fit(torch.zeros(0, size))
    with pytest.raises(ValueError, match=f"`{argument}` to be finite"):
        fresh.fit(torch.full((4, size), float("nan")))


def test_repr_and_params(name: str) -> None:
    scorer = build(name)
    assert repr(scorer).startswith(type(scorer).__name__ + "(")
    for key, value in scorer.get_params().items():
        if isinstance(value, (torch.Tensor, np.ndarray)) and math.prod(value.shape) > 16:
            continue
        assert f"{key}={value!r}" in repr(scorer)


def test_docstring(name: str) -> None:
    doc = SCORERS.get_class(name).__doc__ or ""
    assert "\n    Examples:\n" in doc
    assert "\n    Source: " in doc
