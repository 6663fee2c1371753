"""scikit-learn's estimator conventions for every registered scorer and regularizer.

``get_params(deep=True)``, ``set_params(**params)`` (re-validated by the constructor) and
``sklearn.base.clone`` (a new, unfitted object with the same parameters).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

import tests.scorer_cases as cases
from oodscore import (
    KNN,
    Energy,
    EnergyMarginLoss,
    FittedScorer,
    JointEnergy,
    Mahalanobis,
    NotFittedError,
    ReAct,
    Scorer,
    get_regularizer,
    list_regularizers,
    list_scorers,
)
from oodscore.regularizers.base import REGULARIZERS, Regularizer
from oodscore.scorers.base import SCORERS

SCORER_NAMES = list_scorers()
REGULARIZER_NAMES = list_regularizers()
FITTED_NAMES = [n for n in SCORER_NAMES if SCORERS.get_class(n).requires_fit]
REQUIRED: dict[str, dict[str, Any]] = {
    "mos": {"groups": [2, 2, 2]},
    "balanced_energy": {"class_prior": torch.tensor([0.4, 0.3, 0.2, 0.1])},
}
"""Constructor arguments without a default, by registry name."""


def scorer(name: str, **overrides: Any) -> Scorer:
    return cases.build(name, **{**REQUIRED.get(name, {}), **overrides})


def regularizer(name: str, **overrides: Any) -> Regularizer:
    return get_regularizer(name, **{**REQUIRED.get(name, {}), **overrides})


def component(name: str) -> Scorer | Regularizer:
    kind, _, key = name.partition(":")
    return scorer(key) if kind == "scorer" else regularizer(key)


ALL = [f"scorer:{n}" for n in SCORER_NAMES] + [f"regularizer:{n}" for n in REGULARIZER_NAMES]


def assert_same_value(got: object, want: object, name: str) -> None:
    """Equal values; tensors and arrays element-wise, modules by identity (shared)."""
    if isinstance(want, nn.Module):
        assert got is want, f"`{name}`: the module should be shared"
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), name
        assert got is not want, f"`{name}`: a tensor parameter should be copied"
        assert got.dtype == want.dtype, name
        assert torch.equal(got.cpu(), want.cpu()), name
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), name
        assert got is not want, name
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, (Scorer, Regularizer)):
        assert got is not want, name
        assert type(got) is type(want), name
        assert_same_params(got, want)
    else:
        assert got == want, f"`{name}`: {got!r} != {want!r}"


def assert_same_params(got: Scorer | Regularizer, want: Scorer | Regularizer) -> None:
    got_params, want_params = got.get_params(deep=False), want.get_params(deep=False)
    assert list(got_params) == list(want_params)
    for name, value in want_params.items():
        assert_same_value(got_params[name], value, name)


# --- get_params -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_get_params_lists_the_constructor_arguments(name: str) -> None:
    obj = component(name)
    init = inspect.signature(type(obj).__init__).parameters.values()
    named = [p.name for p in init if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert list(obj.get_params(deep=False)) == [n for n in named if n != "self"]
    assert obj.get_params() == obj.get_params(deep=True)
    rebuilt = type(obj)(**obj.get_params(deep=False))
    assert_same_params(clone(rebuilt), obj)


def test_deep_params_name_the_nested_scorer() -> None:
    inner = Energy(temperature=2.0)
    react = ReAct(percentile=80.0, scorer=inner)
    deep = react.get_params(deep=True)
    assert deep["scorer"] is inner
    assert deep["scorer__temperature"] == 2.0
    assert set(deep) - set(react.get_params(deep=False)) == {"scorer__temperature"}
    # A scorer named by its registry key has no nested parameters.
    assert "scorer__temperature" not in ReAct(scorer="energy").get_params(deep=True)


@pytest.mark.parametrize("name", ALL)
def test_set_params_round_trips_get_params(name: str) -> None:
    obj = component(name)
    before = clone(obj)
    assert obj.set_params(**obj.get_params(deep=True)) is obj
    assert_same_params(clone(obj), before)
    assert obj.set_params() is obj


# --- set_params -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_set_params_refuses_an_unknown_name(name: str) -> None:
    obj = component(name)
    before = repr(obj)
    valid = sorted(obj.get_params(deep=True))
    with pytest.raises(ValueError, match="Invalid parameter 'tempreature'") as error:
        obj.set_params(tempreature=1.0)
    assert str(valid) in str(error.value)
    assert repr(obj) == before


@pytest.mark.parametrize("name", ALL)
def test_set_params_revalidates_every_parameter(name: str) -> None:
    """A value of the wrong kind is refused by the constructor's own check, naming it."""
    obj = component(name)
    before = repr(obj)
    for key in obj.get_params(deep=False):
        with pytest.raises((TypeError, ValueError), match=f"`{key}`|{key}"):
            obj.set_params(**{key: object()})
        assert repr(obj) == before, f"a refused `{key}` changed {name}"


@pytest.mark.parametrize(
    ("obj", "key", "value"),
    [
        (Energy(), "temperature", -1),
        (Energy(), "temperature", float("nan")),
        (JointEnergy(), "top_k", 0),
        (KNN(), "k", 0),
        (Mahalanobis(), "aggregation", "mean"),
        (ReAct(), "percentile", 101.0),
        (EnergyMarginLoss(), "margin_in", 0.0),  # must stay below margin_out = -7
        (EnergyMarginLoss(), "weight", -0.1),
    ],
)
def test_set_params_refuses_a_bad_value_and_changes_nothing(obj: Any, key: str, value: Any) -> None:
    before = repr(obj)
    with pytest.raises(ValueError, match=key) as error:
        obj.set_params(**{key: value})
    assert repr(value) in str(error.value) or str(value) in str(error.value)
    assert repr(obj) == before


def test_energy_set_params_names_temperature_and_the_value() -> None:
    energy = Energy(temperature=2.0)
    with pytest.raises(ValueError, match=r"`temperature`.*got -1\."):
        energy.set_params(temperature=-1)
    assert energy.temperature == 2.0
    assert energy.set_params(temperature=0.5).temperature == 0.5


def test_nested_set_params_changes_the_nested_scorer_in_place() -> None:
    features, targets = cases.features(seed=3)
    inner = Energy(temperature=2.0)
    weight, bias = cases.head_tensors()
    react = ReAct(scorer=inner, weight=weight, bias=bias).fit(features, targets)
    react.set_params(scorer__temperature=3.0, percentile=80.0)
    assert inner.temperature == 3.0
    assert react.scorer is inner
    want = ReAct(percentile=80.0, scorer=Energy(temperature=3.0), weight=weight, bias=bias)
    want.fit(features, targets)
    react.fit(features, targets)
    torch.testing.assert_close(react(features), want(features), rtol=0, atol=0)


def test_nested_params_of_a_scorer_given_by_name_are_refused() -> None:
    react = ReAct(scorer="energy")
    with pytest.raises(ValueError, match=r"'scorer__temperature'.*`scorer` is 'energy'"):
        react.set_params(scorer__temperature=2.0)
    assert react.scorer == "energy"


@pytest.mark.parametrize("name", FITTED_NAMES)
def test_set_params_unfits_a_fitted_scorer(name: str) -> None:
    fitted = cases.fitted(name)
    x, _ = cases.inputs(name)
    params = fitted.get_params(deep=False)
    fitted.set_params(**params)
    fresh = cases.build(name)
    assert fitted.is_fitted is fresh.is_fitted  # ReAct with a fixed threshold stays usable
    if not fresh.is_fitted:
        with pytest.raises(NotFittedError, match=type(fitted).__name__):
            fitted(x)


def test_set_params_on_a_fitted_scorer_then_fit_matches_a_new_one() -> None:
    x, targets = cases.features(seed=1)
    knn = KNN(k=5).fit(x, targets)
    knn.set_params(k=7).fit(x, targets)
    torch.testing.assert_close(knn(x), KNN(k=7).fit(x, targets)(x), rtol=0, atol=0)


def test_regularizer_set_params_keeps_the_module() -> None:
    loss = EnergyMarginLoss(weight=0.1).double().eval()
    calls: list[int] = []
    loss.register_forward_hook(lambda *_: calls.append(1))
    logits_in = 10 * torch.randn(5, 4, dtype=torch.float64)
    logits_out = 10 * torch.randn(7, 4, dtype=torch.float64)
    base = loss(logits_in=logits_in, logits_out=logits_out)
    assert loss.set_params(weight=0.3) is loss
    assert not loss.training
    torch.testing.assert_close(loss(logits_in=logits_in, logits_out=logits_out), 3 * base)
    assert calls == [1, 1]


def test_regularizer_set_params_keeps_buffers_on_their_dtype() -> None:
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1])
    loss = regularizer("balanced_energy", class_prior=prior).double()
    loss.set_params(alpha=5.0)
    assert loss.alpha == 5.0
    assert loss.class_prior.dtype == torch.float64
    torch.testing.assert_close(loss.class_prior, prior.double())
    assert [name for name, _ in loss.named_buffers()] == ["class_prior"]
    new_prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    loss.set_params(class_prior=new_prior)
    torch.testing.assert_close(loss.class_prior, new_prior.double())
    with pytest.raises(ValueError, match="class_prior"):
        loss.set_params(class_prior=torch.tensor([0.5, float("nan"), 0.2, 0.3]))
    torch.testing.assert_close(loss.class_prior, new_prior.double())


# --- clone ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_clone_has_the_same_params(name: str) -> None:
    obj = component(name)
    copy = clone(obj)
    assert type(copy) is type(obj)
    assert copy is not obj
    assert_same_params(copy, obj)
    assert repr(copy) == repr(obj)


@pytest.mark.parametrize("name", FITTED_NAMES)
def test_clone_of_a_fitted_scorer_is_unfitted_with_the_same_params(name: str) -> None:
    fitted = cases.fitted(name)
    copy = clone(fitted)
    assert isinstance(copy, FittedScorer)
    assert_same_params(copy, fitted)
    fresh = cases.build(name)
    assert copy.is_fitted is fresh.is_fitted
    x, targets = cases.inputs(name)
    if not copy.is_fitted:
        with pytest.raises(NotFittedError, match=type(copy).__name__):
            copy(x)
    assert fitted.is_fitted  # the original keeps its state
    copy.fit(x, targets)
    torch.testing.assert_close(copy(x), fitted(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", cases.names(input_kind="features", head=True))
def test_clone_copies_head_tensors_and_shares_a_head_module(name: str) -> None:
    weight, bias = cases.head_tensors()
    with_tensors = scorer(name, weight=weight, bias=bias)
    copy = clone(with_tensors)
    assert copy.weight is not weight
    assert torch.equal(copy.weight, weight)
    assert copy.bias is not bias
    assert torch.equal(copy.bias, bias)
    head = nn.Linear(cases.D, cases.C).double()
    with_module = cases.build(name, head=head, weight=None, bias=None)
    assert clone(with_module).head is head  # read at each call: follows the model


def test_clone_copies_numpy_head_arrays() -> None:
    weight, bias = (t.numpy() for t in cases.head_tensors())
    copy = clone(ReAct(weight=weight, bias=bias))
    assert isinstance(copy.weight, np.ndarray)
    assert copy.weight is not weight
    np.testing.assert_array_equal(copy.weight, weight)


def test_clone_clones_a_nested_scorer() -> None:
    inner = Energy(temperature=2.0)
    copy = clone(ReAct(scorer=inner))
    assert copy.scorer is not inner
    assert copy.scorer.temperature == 2.0
    assert clone(ReAct(scorer="joint_energy")).scorer == "joint_energy"


def test_clone_of_a_regularizer_is_a_fresh_module() -> None:
    loss = regularizer("balanced_energy").double().eval()
    copy = clone(loss)
    assert copy.training  # a new module, in nn.Module's default mode
    assert copy.class_prior is not loss.class_prior
    torch.testing.assert_close(copy.class_prior, loss.class_prior)
    assert REGULARIZERS.get_class("balanced_energy") is type(copy)
