"""The Regularizer contract, checked for every entry of the registry.

Inputs are built from each ``forward`` signature by parameter name (the shared vocabulary:
``logits_in``, ``logits_out``, ``features_in``, ``features_out``, ``targets``, ``epoch``)
and passed by keyword. Every data parameter must be keyword-only; all are built, optional
ones included (so ``features_out`` of SparsityLoss is exercised too), except the masks
(``mask_out``/``mask_in``) that select the dense form. An unknown name fails loudly: add a
builder for it here. Required constructor arguments
(data, not hyper-parameters, such as a class prior) get builders by name the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch

from oodscore import Regularizer, get_regularizer, list_regularizers
from oodscore.regularizers.base import REGULARIZERS

N, M, C, D = 5, 7, 4, 6

# Logits of scale 10 put energies around -10..-20: inside both the ID and the outlier
# hinges of the official energy margins (-25 / -7), so every input receives a gradient.
INPUT_BUILDERS: dict[str, Callable[[torch.dtype], Any]] = {
    "logits_in": lambda dtype: 10 * torch.randn(N, C, dtype=dtype),
    "logits_out": lambda dtype: 10 * torch.randn(M, C, dtype=dtype),
    "features_in": lambda dtype: torch.randn(N, D, dtype=dtype),
    "features_out": lambda dtype: torch.randn(M, D, dtype=dtype),
    "targets": lambda dtype: torch.randint(0, C, (N,)),
    "epoch": lambda dtype: 10_000,  # past every warm-up, so that scheduled terms are on
}

INIT_BUILDERS: dict[str, Callable[[], Any]] = {
    "class_prior": lambda: torch.tensor([0.4, 0.3, 0.2, 0.1]),
}

NAMES = list_regularizers()


def _forward_names(reg: Regularizer) -> list[str]:
    names = []
    for param in inspect.signature(reg.forward).parameters.values():
        if param.kind is not param.KEYWORD_ONLY:
            raise AssertionError(
                f"{type(reg).__name__}.forward takes {param.name!r} positionally; data "
                "arguments are keyword-only."
            )
        if param.name.startswith("mask_"):
            continue  # the dense form's masks select another mode
        if param.name not in INPUT_BUILDERS:
            raise AssertionError(
                f"{type(reg).__name__}.forward takes {param.name!r}, which the contract test "
                f"cannot build; add it to INPUT_BUILDERS (known: {sorted(INPUT_BUILDERS)})."
            )
        names.append(param.name)
    return names


def _make(name: str, **params: Any) -> Regularizer:
    cls = REGULARIZERS.get_class(name)
    required = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.default is not param.empty:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name not in INIT_BUILDERS:
            raise AssertionError(
                f"{cls.__name__}() requires {param.name!r}; add a builder to INIT_BUILDERS."
            )
        required[param.name] = INIT_BUILDERS[param.name]()
    return get_regularizer(name, **{**required, **params})


def _inputs(reg: Regularizer, dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    torch.manual_seed(0)
    return {name: INPUT_BUILDERS[name](dtype) for name in _forward_names(reg)}


def test_registry_holds_the_energy_family() -> None:
    assert {"energy_margin", "outlier_exposure", "balanced_energy"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_is_a_module_returning_a_scalar(name: str) -> None:
    reg = _make(name)
    assert isinstance(reg, Regularizer)
    assert isinstance(reg, torch.nn.Module)
    out = reg(**_inputs(reg))
    assert isinstance(out, torch.Tensor)
    assert out.ndim == 0
    assert torch.isfinite(out)


@pytest.mark.parametrize("name", NAMES)
def test_output_is_linear_in_the_weights(name: str) -> None:
    reg = _make(name)
    params = reg.get_params()
    missing = [w for w in reg.weight_names if w not in params]
    assert not missing, f"{type(reg).__name__}.weight_names lists {missing}, not constructor args"
    inputs = _inputs(reg)
    base = reg(**inputs)
    assert float(base) != 0.0, "the contract inputs should activate the term"
    doubled = _make(name, **{**params, **{w: 2 * params[w] for w in reg.weight_names}})
    torch.testing.assert_close(doubled(**inputs), 2 * base)
    zero = _make(name, **{**params, **{w: 0.0 for w in reg.weight_names}})
    assert float(zero(**inputs)) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_floating_input(name: str) -> None:
    reg = _make(name)
    inputs = _inputs(reg)
    floating = {k: v for k, v in inputs.items() if torch.is_tensor(v) and v.is_floating_point()}
    assert floating, "a regularizer without a differentiable input"
    for value in floating.values():
        value.requires_grad_(True)
    reg(**inputs).backward()
    for key, value in floating.items():
        assert value.grad is not None, f"no gradient reaches `{key}`"
        assert torch.isfinite(value.grad).all(), f"non-finite gradient on `{key}`"
        assert value.grad.abs().sum() > 0, f"zero gradient on `{key}`"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_preserved(name: str, dtype: torch.dtype) -> None:
    reg = _make(name)
    assert reg(**_inputs(reg, dtype)).dtype == dtype


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_last_terms_are_detached_scalars_named_by_term_names(name: str, dtype: torch.dtype) -> None:
    reg = _make(name)
    assert reg.term_names, f"{type(reg).__name__} declares no term_names"
    assert reg.last_terms == {}, "terms before the first call"
    inputs = _inputs(reg, dtype)
    for value in inputs.values():
        if torch.is_tensor(value) and value.is_floating_point():
            value.requires_grad_(True)
    out = reg(**inputs)
    terms = reg.last_terms
    assert list(terms) == list(reg.term_names)
    for key, value in terms.items():
        assert isinstance(value, torch.Tensor), key
        assert value.ndim == 0, key
        assert not value.requires_grad, f"term {key!r} is not detached"
        assert value.dtype == out.dtype, key
        assert value.device == out.device, key
        assert torch.isfinite(value), key
    # The weights used are logged under their constructor names (every term is on here).
    for weight in reg.weight_names:
        assert terms[weight] == torch.tensor(getattr(reg, weight), dtype=out.dtype)
    terms.clear()  # a copy: the next reader still sees them
    assert list(reg.last_terms) == list(reg.term_names)


@pytest.mark.parametrize("name", NAMES)
def test_repr_shows_every_hyper_parameter(name: str) -> None:
    reg = _make(name)
    text = repr(reg)
    assert text.startswith(type(reg).__name__ + "(")
    for key, value in reg.get_params().items():
        if not torch.is_tensor(value):
            assert f"{key}={value!r}" in text
        else:
            assert f"{key}=tensor(" in text


@pytest.mark.parametrize("name", NAMES)
def test_hyper_parameters_are_keyword_only_and_stored(name: str) -> None:
    cls = REGULARIZERS.get_class(name)
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.name in INIT_BUILDERS:
            continue
        assert param.kind is param.KEYWORD_ONLY, f"{cls.__name__}({param.name}) not keyword-only"
    reg = _make(name)
    assert set(reg.get_params()) >= set(reg.weight_names)


@pytest.mark.parametrize("name", NAMES)
def test_registry_round_trip(name: str) -> None:
    reg = _make(name)
    assert type(reg).name == name
    rebuilt = get_regularizer(name, **reg.get_params())
    assert type(rebuilt) is type(reg)
    for key, value in reg.get_params().items():
        if torch.is_tensor(value):
            torch.testing.assert_close(getattr(rebuilt, key), value)
        else:
            assert getattr(rebuilt, key) == value
    inputs = _inputs(reg)
    torch.testing.assert_close(rebuilt(**inputs), reg(**inputs))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_name_lists_close_matches(name: str) -> None:
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    with pytest.raises(
        ValueError, match=rf"Unknown regularizer '{typo}'\. Did you mean .*'{name}'"
    ):
        get_regularizer(typo)


def test_unknown_forward_argument_fails_loudly() -> None:
    class Odd(Regularizer):
        def forward(  # type: ignore[override]
            self, *, logits_in: torch.Tensor, temperature_map: torch.Tensor
        ) -> torch.Tensor:
            return logits_in.sum()

    with pytest.raises(AssertionError, match=r"'temperature_map'.*INPUT_BUILDERS"):
        _forward_names(Odd())


def test_positional_data_argument_fails_loudly() -> None:
    class Positional(Regularizer):
        def forward(self, logits_in: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return logits_in.sum()

    with pytest.raises(AssertionError, match=r"'logits_in' positionally; data arguments"):
        _forward_names(Positional())
