"""``legacy=True`` against the legacy hook-based ``torch.nn.utils.spectral_norm`` itself.

SNoJoE's official ``train.py`` calls that function on every ``Conv2d``; these tests pin that
``spectral_normalize(..., legacy=True)`` gives the same buffers, weights, σ and outputs step
for step, and that checkpoints with its keys (``weight_orig``, ``weight_u``, ``weight_v``)
load into normalized models.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import remove_spectral_norm as legacy_remove_spectral_norm
from torch.nn.utils import spectral_norm as legacy_spectral_norm

from oodscore import (
    JointEnergy,
    SpectralNormWrapper,
    remove_spectral_normalization,
    spectral_normalize,
    spectral_norms,
)
from oodscore.nn import load_unnormalized_state_dict
from tests.reference import spectral as ref


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SnoJoeNet(nn.Module):
    """A small ResNet-like CNN: normalized convolutions, batch norms and a linear head."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6))
        self.downsample = nn.Conv2d(1, 6, 1, stride=2, bias=False)
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.layer(out) + self.downsample(x))
        return self.head(out.mean(dim=(2, 3)))


def _apply_legacy_to_conv(module: nn.Module) -> nn.Module:
    """SNoJoE's recursion: the legacy function on every Conv2d, children in order."""
    if isinstance(module, nn.Conv2d):
        return legacy_spectral_norm(module)
    for name, child in module.named_children():
        module.add_module(name, _apply_legacy_to_conv(child))
    return module


def _snojoe_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    base = SnoJoeNet()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(seed + 1)
    _apply_legacy_to_conv(theirs)
    torch.manual_seed(seed + 1)
    spectral_normalize(ours, include=nn.Conv2d, legacy=True)
    return ours, theirs


def _conv_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _ours_buffers(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    wrapper = layer.parametrizations.weight[0]
    return wrapper._u, wrapper._v


def _legacy_sigma(layer: nn.Module, dim: int = 0) -> float:
    weight = layer.weight_orig.detach().movedim(dim, 0).flatten(1)
    return float(torch.dot(layer.weight_u, torch.mv(weight, layer.weight_v)))


def _adam_step(model: nn.Module, optimizer: torch.optim.Optimizer, x, y) -> None:
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _batches(steps: int, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=generator)
        y = (torch.rand(8, 4, generator=generator) > 0.5).float()
        yield x, y


# ---------------------------------------------------------------------------------------------
# one layer, every kind the legacy function normalizes


LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (3, 7), 0),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 9), 0),
    "conv2d": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), (2, 3, 8, 8), 0),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), (2, 4, 5, 5), 1),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("n_power_iterations", [1, 3])
def test_one_layer_equals_the_legacy_function_step_for_step(
    kind: str, n_power_iterations: int
) -> None:
    make, input_shape, dim = LAYERS[kind]
    torch.manual_seed(0)
    base = make()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    legacy_spectral_norm(theirs, n_power_iterations=n_power_iterations)
    torch.manual_seed(1)
    spectral_normalize(
        ours, normalize_head=True, n_power_iterations=n_power_iterations, legacy=True
    )
    u, v = _ours_buffers(ours)
    # the same initialisation from the same seed: no warm-up
    assert torch.equal(u, theirs.weight_u)
    assert torch.equal(v, theirs.weight_v)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=0.05)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(2)
    for _ in range(12):
        x = torch.randn(input_shape, generator=generator)
        for model, optimizer in ((ours, opt_ours), (theirs, opt_theirs)):
            model.train()
            loss = model(x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert torch.equal(u, theirs.weight_u)
        assert torch.equal(v, theirs.weight_v)
        original = ours.parametrizations.weight.original
        assert torch.equal(original, theirs.weight_orig)
        assert spectral_norms(ours)[""] == _legacy_sigma(theirs, dim)
    # eval: the legacy function leaves u, v alone and so do we
    ours.eval()
    theirs.eval()
    x = torch.randn(input_shape, generator=generator)
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    assert torch.equal(u, theirs.weight_u)
    assert torch.equal(v, theirs.weight_v)


def test_copied_u_v_give_the_same_steps() -> None:
    # Another seed for ours, then the legacy layer's u, v (and weight) copied in.
    torch.manual_seed(0)
    theirs = legacy_spectral_norm(nn.Conv2d(2, 3, 3))
    torch.manual_seed(99)
    ours = spectral_normalize(nn.Conv2d(2, 3, 3), normalize_head=True, legacy=True)
    ours.load_state_dict(theirs.state_dict())
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        x = torch.randn(2, 2, 6, 6, generator=generator)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert torch.equal(_ours_buffers(ours)[0], theirs.weight_u)


@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    steps=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_legacy_iteration_matches_float64_reference(
    rows: int, cols: int, steps: int, seed: int
) -> None:
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=False).double()
    spectral_normalize(layer, normalize_head=True, legacy=True)
    u0, v0 = (t.clone().numpy() for t in _ours_buffers(layer))
    weight = layer.parametrizations.weight.original.detach().numpy().copy()
    layer.train()
    for _ in range(steps):
        normalized = layer.weight
    u, v, sigma = ref.legacy_power_iteration(weight, u0, v0, steps)
    np.testing.assert_allclose(_ours_buffers(layer)[0].numpy(), u, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_ours_buffers(layer)[1].numpy(), v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(normalized.detach().numpy(), weight / sigma, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# SNoJoE: every Conv2d, batch norm and head untouched, Adam, multi-label BCE


def test_snojoe_training_equals_the_official_function() -> None:
    ours, theirs = _snojoe_pair()
    assert _conv_names(ours) == ["conv1", "layer.0", "downsample"]
    for name in _conv_names(ours):
        u, v = _ours_buffers(ours.get_submodule(name))
        assert torch.equal(u, theirs.get_submodule(name).weight_u)
        assert torch.equal(v, theirs.get_submodule(name).weight_v)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-2)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    ours.train()
    theirs.train()
    for x, y in _batches(30):
        _adam_step(ours, opt_ours, x, y)
        _adam_step(theirs, opt_theirs, x, y)
    for name in _conv_names(ours):
        assert spectral_norms(ours)[name] == _legacy_sigma(theirs.get_submodule(name))
    x = next(_batches(1, seed=11))[0]
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        score_ours = JointEnergy()(ours(x))
        score_theirs = JointEnergy()(theirs(x))
    torch.testing.assert_close(score_ours, score_theirs, rtol=0, atol=0)


def test_the_default_is_the_parametrization_not_the_legacy_function() -> None:
    # Kept on purpose: the default follows torch.nn.utils.parametrizations.spectral_norm.
    torch.manual_seed(0)
    base = SnoJoeNet()
    torch.manual_seed(1)
    default = spectral_normalize(copy.deepcopy(base), include=nn.Conv2d)
    torch.manual_seed(1)
    legacy = spectral_normalize(copy.deepcopy(base), include=nn.Conv2d, legacy=True)
    assert default.conv1.parametrizations.weight[0].warmup_iterations == 15
    assert legacy.conv1.parametrizations.weight[0].warmup_iterations == 0
    assert spectral_norms(default) != spectral_norms(legacy)


# ---------------------------------------------------------------------------------------------
# checkpoints with the legacy keys


def _trained_legacy_checkpoint() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    theirs = _apply_legacy_to_conv(SnoJoeNet())
    optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    theirs.train()
    for x, y in _batches(4):
        _adam_step(theirs, optimizer, x, y)
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    buffer.seek(0)
    return theirs, torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("legacy", [True, False])
def test_legacy_checkpoint_loads_into_a_normalized_model(legacy: bool) -> None:
    theirs, checkpoint = _trained_legacy_checkpoint()
    assert "conv1.weight_orig" in checkpoint
    torch.manual_seed(7)
    ours = spectral_normalize(SnoJoeNet(), include=nn.Conv2d, legacy=legacy)
    result = ours.load_state_dict(checkpoint)
    assert not result.missing_keys
    assert not result.unexpected_keys
    assert "conv1.weight_orig" in checkpoint  # the caller's dict is left alone
    x = next(_batches(1, seed=11))[0]
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    for name in _conv_names(ours):
        assert spectral_norms(ours)[name] == _legacy_sigma(theirs.get_submodule(name))


def test_legacy_checkpoint_through_load_unnormalized_state_dict() -> None:
    theirs, checkpoint = _trained_legacy_checkpoint()
    torch.manual_seed(7)
    ours = spectral_normalize(SnoJoeNet(), include=nn.Conv2d)  # default: 15 warm-up steps
    load_unnormalized_state_dict(ours, checkpoint)
    # u, v come from the checkpoint: no warm-up is run on them
    for name in _conv_names(ours):
        u, v = _ours_buffers(ours.get_submodule(name))
        assert torch.equal(u, checkpoint[f"{name}.weight_u"])
        assert torch.equal(v, checkpoint[f"{name}.weight_v"])
    x = next(_batches(1, seed=11))[0]
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_training_continues_from_a_legacy_checkpoint_in_legacy_mode() -> None:
    theirs, checkpoint = _trained_legacy_checkpoint()
    ours = spectral_normalize(SnoJoeNet(), include=nn.Conv2d, legacy=True)
    ours.load_state_dict(checkpoint)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-2)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    ours.train()
    theirs.train()
    for x, y in _batches(5, seed=8):
        _adam_step(ours, opt_ours, x, y)
        _adam_step(theirs, opt_theirs, x, y)
    for name in _conv_names(ours):
        assert torch.equal(
            _ours_buffers(ours.get_submodule(name))[0], theirs.get_submodule(name).weight_u
        )


def test_bad_legacy_checkpoints_are_refused() -> None:
    _, checkpoint = _trained_legacy_checkpoint()
    ours = spectral_normalize(SnoJoeNet(), include=nn.Conv2d)
    partial = {k: v for k, v in checkpoint.items() if k != "conv1.weight_v"}
    with pytest.raises(RuntimeError, match=r"conv1\.weight_v"):
        ours.load_state_dict(partial)
    both = {**checkpoint, "conv1.parametrizations.weight.original": checkpoint["conv1.weight_orig"]}
    with pytest.raises(RuntimeError, match="both"):
        ours.load_state_dict(both)
    operator = spectral_normalize(SnoJoeNet(), include=nn.Conv2d, mode="operator")
    with pytest.raises(RuntimeError, match="operator"):
        operator.load_state_dict(checkpoint)
    second = SnoJoeNet()
    for name in _conv_names(second):
        parametrize.register_parametrization(second.get_submodule(name), "weight", _Scale())
    spectral_normalize(second, include=nn.Conv2d)
    with pytest.raises(RuntimeError, match="first parametrization"):
        second.load_state_dict(checkpoint)


class _Scale(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2.0 * weight


def test_our_checkpoint_keys_and_round_trip_in_legacy_mode() -> None:
    ours, _ = _snojoe_pair()
    keys = [k for k in ours.state_dict() if k.startswith("conv1.")]
    assert keys == [
        "conv1.bias",
        "conv1.parametrizations.weight.original",
        "conv1.parametrizations.weight.0._u",
        "conv1.parametrizations.weight.0._v",
    ]
    fresh = spectral_normalize(SnoJoeNet(), include=nn.Conv2d, legacy=True)
    fresh.load_state_dict(ours.state_dict())
    x = next(_batches(1, seed=11))[0]
    torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)  # train mode, one step each


# ---------------------------------------------------------------------------------------------
# settings, removal, copies


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coeff": 3.0}, "coeff"),
        ({"mode": "operator"}, "mode"),
        ({"legacy": "yes"}, "legacy"),
    ],
)
def test_legacy_settings_are_checked(kwargs: dict, match: str) -> None:
    kwargs = {"legacy": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        spectral_normalize(SnoJoeNet(), **kwargs)


def test_explicit_warmup_is_honoured_in_legacy_mode() -> None:
    layer = spectral_normalize(
        nn.Linear(4, 3), legacy=True, warmup_iterations=5, normalize_head=True
    )
    assert layer.parametrizations.weight[0].warmup_iterations == 5
    wrapper = SpectralNormWrapper(torch.randn(3, 4), legacy=True)
    assert wrapper.warmup_iterations == 0
    assert "legacy=True" in repr(wrapper)


def test_a_layer_with_the_legacy_hook_is_refused() -> None:
    model = _apply_legacy_to_conv(SnoJoeNet())
    with pytest.raises(ValueError, match=r"torch\.nn\.utils\.spectral_norm"):
        spectral_normalize(model, include=nn.Conv2d)


def test_removal_equals_the_legacy_removal() -> None:
    ours, theirs = _snojoe_pair()
    for x, _ in _batches(3):
        ours(x)
        theirs(x)
    hooks_before = {n: len(m._load_state_dict_pre_hooks) for n, m in ours.named_modules()}
    remove_spectral_normalization(ours)
    for name in _conv_names(theirs):
        legacy_remove_spectral_norm(theirs.get_submodule(name))
    for name in _conv_names(ours):
        layer = ours.get_submodule(name)
        assert not parametrize.is_parametrized(layer)
        assert torch.equal(layer.weight, theirs.get_submodule(name).weight)
        assert len(layer._load_state_dict_pre_hooks) == hooks_before[name] - 1
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_a_deepcopy_renames_into_itself() -> None:
    _, checkpoint = _trained_legacy_checkpoint()
    model = spectral_normalize(SnoJoeNet(), include=nn.Conv2d, legacy=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = copy.deepcopy(model)
    clone.load_state_dict(checkpoint)
    assert torch.equal(
        clone.conv1.parametrizations.weight.original, checkpoint["conv1.weight_orig"]
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
