"""The contract of fitted feature scorers, checked for every registered one (new ones for free).

Each gets: fit returns the scorer; NotFittedError before fit; state_dict holds tensors only
and round-trips through torch.save / torch.load(weights_only=True); NumPy in -> NumPy out,
torch in -> torch out on the same device; float16 computed in float32, float64 kept; batch
invariance; a wrong feature size is an error; points at the ID data score above far ones.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from oodscore import FittedScorer, NotFittedError, get_scorer, list_scorers
from oodscore.scorers.base import SCORERS

# Scorers whose construction needs more than defaults: name -> params.
SPECIAL: dict[str, dict[str, Any]] = {}
N, D, C = 300, 5, 3

FEATURE_SCORERS = [n for n in list_scorers() if SCORERS.get_class(n).input_kind == "features"]


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian classes in D = 5, float64."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(N) % C
    centres = 4.0 * torch.eye(C, D, dtype=torch.float64)
    features = centres[targets] + torch.randn(N, D, generator=g, dtype=torch.float64)
    return features, targets


def fitted(name: str) -> FittedScorer:
    scorer = get_scorer(name, **SPECIAL.get(name, {}))
    assert isinstance(scorer, FittedScorer)
    features, targets = data()
    assert scorer.fit(features, targets) is scorer
    return scorer


@pytest.fixture(params=FEATURE_SCORERS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_there_are_feature_scorers() -> None:
    assert {"mahalanobis", "relative_mahalanobis"} <= set(FEATURE_SCORERS)


def test_flags(name: str) -> None:
    cls = SCORERS.get_class(name)
    assert cls.requires_fit is True
    assert cls.higher_is_id is True
    assert cls.state_names


def test_scoring_before_fit_names_the_class_and_the_fix(name: str) -> None:
    scorer = get_scorer(name, **SPECIAL.get(name, {}))
    with pytest.raises(NotFittedError, match=rf"This {type(scorer).__name__} .*Call 'fit'"):
        scorer(torch.zeros(2, D))
    with pytest.raises(NotFittedError):
        scorer.state_dict()


def test_higher_is_in_distribution(name: str) -> None:
    scorer = fitted(name)
    at_class = 4.0 * torch.eye(C, D, dtype=torch.float64)
    far = at_class + 30.0
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
    fresh = get_scorer(name, **SPECIAL.get(name, {})).load_state_dict(loaded)
    queries = data(seed=1)[0]
    torch.testing.assert_close(fresh(queries), scorer(queries), rtol=0, atol=0)


def test_bad_state_is_refused(name: str) -> None:
    scorer = fitted(name)
    state = scorer.state_dict()
    fresh = get_scorer(name, **SPECIAL.get(name, {}))
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict({k: v for k, v in list(state.items())[1:]})
    with pytest.raises(ValueError, match="unexpected"):
        fresh.load_state_dict({**state, "extra": torch.zeros(1)})
    first = scorer.state_names[0]
    with pytest.raises(ValueError, match="finite"):
        fresh.load_state_dict({**state, first: torch.full_like(state[first], float("nan"))})


def test_numpy_in_numpy_out_torch_in_torch_out(name: str) -> None:
    scorer = fitted(name)
    queries = data(seed=2)[0]
    from_torch = scorer(queries)
    from_numpy = scorer(queries.numpy())
    assert isinstance(from_torch, torch.Tensor)
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_allclose(from_numpy, from_torch.numpy(), rtol=1e-12)


def test_fit_on_numpy_equals_fit_on_torch(name: str) -> None:
    features, targets = data()
    a = get_scorer(name, **SPECIAL.get(name, {})).fit(features, targets)
    b = get_scorer(name, **SPECIAL.get(name, {})).fit(features.numpy(), targets.numpy())
    queries = data(seed=3)[0]
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
    queries = data(seed=4)[0]
    scores = scorer(queries.to(dtype))
    assert scores.dtype == out
    torch.testing.assert_close(
        scores.double(), scorer(queries.to(dtype).double()), rtol=1e-5, atol=1e-5
    )


def test_batch_invariance_and_device(name: str) -> None:
    scorer = fitted(name)
    queries = data(seed=5)[0]
    whole = scorer(queries)
    pieces = torch.cat([scorer(queries[i : i + 7]) for i in range(0, len(queries), 7)])
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=1e-12)
    assert whole.device == queries.device
    assert scorer(queries[:0]).shape == (0,)


def test_wrong_feature_size_and_bad_features(name: str) -> None:
    scorer = fitted(name)
    with pytest.raises(ValueError, match=rf"D = {D} columns.*got shape \(2, {D + 1}\)"):
        scorer(torch.zeros(2, D + 1))
    with pytest.raises(ValueError, match="`features` to be finite"):
        scorer(torch.full((2, D), float("inf")))
    with pytest.raises(ValueError, match="`features` to be 2-D"):
        scorer(torch.zeros(D))
    fresh = get_scorer(name, **SPECIAL.get(name, {}))
    with pytest.raises(ValueError, match="at least 1 row"):
        fresh.fit(torch.zeros(0, D))
    with pytest.raises(ValueError, match="`features` to be finite"):
        fresh.fit(torch.full((4, D), float("nan")))


def test_repr_and_params(name: str) -> None:
    scorer = get_scorer(name, **SPECIAL.get(name, {}))
    assert repr(scorer).startswith(type(scorer).__name__ + "(")
    for key, value in scorer.get_params().items():
        assert f"{key}={value!r}" in repr(scorer)


def test_docstring(name: str) -> None:
    doc = SCORERS.get_class(name).__doc__ or ""
    assert "\n    Examples:\n" in doc
    assert "\n    Source: " in doc
