"""The eval-mode cache of spectral normalization: identical outputs, and every invalidation.

A model normalized with the default ``eval_cache=True`` is compared, bit for bit, with a twin
normalized with ``eval_cache=False`` in the same state (the uncached computation), and its
weights with W / (uᵀWv) in float64 from the buffers (tests/reference/spectral.py).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from oodscore import remove_spectral_normalization, spectral_normalize
from oodscore.nn import load_unnormalized_state_dict
from tests.reference import spectral as ref


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.conv2(out)).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(out)))


SETTINGS = [
    {},
    {"coeff": 2.0},
    {"mode": "operator", "example_input": torch.zeros(1, 1, 8, 8)},
    {"legacy": True},
]
IDS = ["hard", "soft", "operator", "legacy"]


def _pair(**settings) -> tuple[nn.Module, nn.Module]:
    """A cached and an uncached model in the same state, trained a few steps, in eval mode."""
    torch.manual_seed(0)
    cached = spectral_normalize(SmallCNN(), **settings)
    _train(cached, steps=3)
    torch.manual_seed(0)
    uncached = spectral_normalize(SmallCNN(), eval_cache=False, **settings)
    uncached.load_state_dict(cached.state_dict())
    return cached.eval(), uncached.eval()


def _train(model: nn.Module, steps: int) -> None:
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=generator)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (8,), generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _inputs() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def _same(cached: nn.Module, uncached: nn.Module) -> None:
    """Bit-identical eval outputs, twice (the second from the cache)."""
    x = _inputs()
    expected = uncached(x)
    assert torch.equal(cached(x), expected)
    assert torch.equal(cached(x), expected)


def _served(layer: nn.Module) -> bool:
    """Whether reading the weight twice gives the same tensor: the cached one."""
    return layer.weight is layer.weight


def _check_against_reference(model: nn.Module, coeff: float | None = None) -> None:
    """Each reshape-mode weight equals W / (uᵀWv) (or the soft bound) in float64."""
    for layer in (model.conv1, model.conv2, model.fc):
        wrapper = layer.parametrizations.weight[0]
        original = layer.parametrizations.weight.original.detach().double().numpy()
        u, v = wrapper._u.double().numpy(), wrapper._v.double().numpy()
        sigma = float(u @ original.reshape(original.shape[0], -1) @ v)
        expected = (
            ref.hard_normalize(original, sigma)
            if coeff is None
            else ref.soft_normalize(original, sigma, coeff)
        )
        np.testing.assert_allclose(layer.weight.detach().double().numpy(), expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# identical outputs, state dict, training unchanged


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_eval_outputs_are_those_of_the_uncached_computation(settings) -> None:
    cached, uncached = _pair(**settings)
    with torch.no_grad():
        _same(cached, uncached)
        assert _served(cached.conv1)
        assert _served(cached.fc)
        assert not _served(uncached.conv1)
    with torch.inference_mode():
        _same(cached, uncached)
    _same(cached, uncached)  # grad enabled: recomputed, the same numbers
    if "mode" not in settings:
        with torch.no_grad():
            _check_against_reference(cached, settings.get("coeff"))


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_state_dict_and_training_are_unchanged(settings) -> None:
    cached, uncached = _pair(**settings)
    with torch.no_grad():
        cached(_inputs())
    assert list(cached.state_dict()) == list(uncached.state_dict())
    for key, value in cached.state_dict().items():
        assert torch.equal(value, uncached.state_dict()[key]), key
    _train(cached, steps=2)  # the cache holds nothing over training steps
    _train(uncached, steps=2)
    for key, value in cached.state_dict().items():
        assert torch.equal(value, uncached.state_dict()[key]), key
    cached.eval()
    uncached.eval()
    with torch.no_grad():
        _same(cached, uncached)


# ---------------------------------------------------------------------------------------------
# invalidation


def _edit_in_place(model: nn.Module) -> None:
    with torch.no_grad():
        original = model.conv1.parametrizations.weight.original
        original.add_(torch.randn(original.shape, generator=torch.Generator().manual_seed(3)))


def test_weight_edited_in_place_under_no_grad() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        before = cached(_inputs())
        _edit_in_place(cached)
        _edit_in_place(uncached)
        _same(cached, uncached)
        assert not torch.equal(cached(_inputs()), before)
        _check_against_reference(cached)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=True),
        lambda p: torch.optim.Adam(p, lr=0.01),
        lambda p: torch.optim.Adam(p, lr=0.01, fused=True),  # no version bump: see the docs
    ],
    ids=["sgd", "sgd-foreach", "adam", "adam-fused"],
)
def test_optimizer_steps_in_eval_mode(make_optimizer) -> None:
    """Fine-tuning in eval mode: the forward with gradients drops the cache."""
    cached, uncached = _pair()
    x = _inputs()
    for model in (cached, uncached):
        optimizer = make_optimizer(model.parameters())
        with torch.no_grad():
            model(x)  # fills the cache
        for _ in range(2):
            loss = model(x).square().mean()  # eval mode, gradients w.r.t. the weights
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model(x)
    with torch.no_grad():
        _same(cached, uncached)
    assert not torch.equal(
        cached.conv1.parametrizations.weight.original,
        _pair()[0].conv1.parametrizations.weight.original,
    )


def test_gradients_in_eval_mode_are_those_of_the_uncached_model() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        cached(_inputs())  # a cached value exists and must not be used below
    grads = []
    for model in (cached, uncached):
        x = _inputs().requires_grad_(True)
        model.zero_grad()
        model(x).sum().backward()
        grads.append((x.grad, model.conv1.parametrizations.weight.original.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert grads[0][1] is not None
    assert torch.equal(grads[0][1], grads[1][1])


def test_input_gradients_of_a_frozen_model_use_the_cache() -> None:
    cached, uncached = _pair()
    for model in (cached, uncached):
        model.requires_grad_(False)
    with torch.inference_mode():
        cached(_inputs())  # an inference tensor: not served outside inference mode
    grads = []
    for model in (cached, uncached):
        x = _inputs().requires_grad_(True)
        model(x).square().sum().backward()
        grads.append(x.grad)
    assert _served(cached.conv1)
    assert torch.equal(grads[0], grads[1])


def test_load_state_dict_and_load_unnormalized_state_dict() -> None:
    cached, uncached = _pair()
    torch.manual_seed(5)
    other = spectral_normalize(SmallCNN())
    _train(other, steps=2)
    with torch.no_grad():
        cached(_inputs())
    cached.load_state_dict(other.state_dict())
    uncached.load_state_dict(other.state_dict())
    with torch.no_grad():
        _same(cached, uncached)
    plain = SmallCNN()
    load_unnormalized_state_dict(cached, plain.state_dict())
    load_unnormalized_state_dict(uncached, plain.state_dict())
    with torch.no_grad():
        _same(cached, uncached)
        _check_against_reference(cached)


def test_dtype_moves() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        cached(_inputs())
        for dtype in (torch.float64, torch.float32):
            cached.to(dtype)
            uncached.to(dtype)
            x = _inputs().to(dtype)
            out = cached(x)
            assert out.dtype == dtype
            assert cached.conv1.weight.dtype == dtype
            assert torch.equal(out, uncached(x))


def test_train_then_eval_uses_the_new_u_and_v() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        before = cached(_inputs())
    for model in (cached, uncached):
        model.train()
        with torch.no_grad():
            model(_inputs())  # a power iteration: u, v change, the weight does not
        model.eval()
    with torch.no_grad():
        _same(cached, uncached)
        assert not torch.equal(cached(_inputs()), before)


def test_setting_the_training_flag_by_hand_runs_the_power_iteration() -> None:
    cached, _ = _pair()
    with torch.no_grad():
        cached(_inputs())
    wrapper = cached.conv1.parametrizations.weight[0]
    u = wrapper._u.clone()
    wrapper.training = True  # not through train(): the cache must not answer
    with torch.no_grad():
        _ = cached.conv1.weight
    assert not torch.equal(wrapper._u, u)


def test_u_and_v_replaced_or_edited() -> None:
    cached, uncached = _pair()
    generator = torch.Generator().manual_seed(4)
    new_u = nn.functional.normalize(torch.randn(6, generator=generator), dim=0)
    new_v = nn.functional.normalize(torch.randn(6, generator=generator), dim=0)
    with torch.no_grad():
        cached(_inputs())
        for model in (cached, uncached):  # replaced by new tensors
            model.conv2.parametrizations.weight[0]._u = new_u.clone()
        _same(cached, uncached)
        for model in (cached, uncached):  # edited in place
            model.fc.parametrizations.weight[0]._v.copy_(new_v)
        _same(cached, uncached)
        _check_against_reference(cached)


def test_weight_replaced_through_data_assignment() -> None:
    """``.data = ...`` keeps the version counter: the storage address tells."""
    cached, uncached = _pair()
    new = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        cached(_inputs())
        for model in (cached, uncached):
            model.conv1.parametrizations.weight.original.data = new.clone()
        _same(cached, uncached)
        for model in (cached, uncached):
            model.conv1.weight = new * 2  # right_inverse: stored as the unnormalized weight
        _same(cached, uncached)


def test_the_served_tensor_edited_in_place_is_not_served_again() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        cached.conv1.weight.mul_(3)
        _same(cached, uncached)


def test_functional_call_uses_the_given_parameters() -> None:
    cached, uncached = _pair()
    params = {k: v + 0.1 for k, v in cached.named_parameters()}
    with torch.no_grad():
        cached(_inputs())
        result = torch.func.functional_call(cached, params, (_inputs(),))
        expected = torch.func.functional_call(uncached, params, (_inputs(),))
    assert torch.equal(result, expected)


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_another_parametrization_after_ours_is_applied() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        cached(_inputs())
    for model in (cached, uncached):
        parametrize.register_parametrization(model.conv1, "weight", Double())
    with torch.no_grad():
        _same(cached, uncached)
        with parametrize.cached():
            _same(cached, uncached)


def test_ours_after_another_parametrization() -> None:
    models = []
    for eval_cache in (True, False):
        torch.manual_seed(0)
        model = SmallCNN()
        parametrize.register_parametrization(model.conv1, "weight", Double())
        models.append(spectral_normalize(model, eval_cache=eval_cache).eval())
    with torch.no_grad():
        _same(*models)


def test_legacy_checkpoint_loaded_in_eval_mode() -> None:
    """Keys of torch.nn.utils.spectral_norm, loaded into a cached legacy-mode model."""
    torch.manual_seed(0)
    theirs = SmallCNN()
    for name in ("conv1", "conv2", "fc"):
        nn.utils.spectral_norm(theirs.get_submodule(name))
    ours = spectral_normalize(SmallCNN(), legacy=True).eval()
    with torch.no_grad():
        ours(_inputs())  # fills the cache with other weights
    for step in range(2):
        _train(theirs, steps=1 + step)
        theirs.eval()
        ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            assert torch.equal(ours(_inputs()), theirs(_inputs()))
            assert torch.equal(ours(_inputs()), theirs(_inputs()))


# ---------------------------------------------------------------------------------------------
# copies, removal, switches


def test_copies_pickles_and_removal() -> None:
    cached, uncached = _pair()
    with torch.no_grad():
        expected = uncached(_inputs())
        cached(_inputs())
        wrapper = cached.conv1.parametrizations.weight[0]
        restored = pickle.loads(pickle.dumps(wrapper))
        assert restored._cached is None
        clone = copy.deepcopy(cached)
        assert torch.equal(clone(_inputs()), expected)
        _edit_in_place(clone)  # the copy's edit leaves the original's cache valid
        assert torch.equal(cached(_inputs()), expected)
        remove_spectral_normalization(cached)
        assert torch.equal(cached(_inputs()), expected)


def test_eval_cache_false_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"`eval_cache` to be True or False, got 'yes'"):
        spectral_normalize(SmallCNN(), eval_cache="yes")
    model = spectral_normalize(SmallCNN(), eval_cache=False).eval()
    with torch.no_grad():
        model(_inputs())
        assert not _served(model.conv1)
        assert model.conv1.parametrizations.weight[0]._cached is None


@pytest.mark.slow
def test_torch_compile_in_eval_traces_the_computation_not_the_cache() -> None:
    pytest.importorskip("torch._inductor")
    cached, uncached = _pair()
    compiled = torch.compile(cached, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        cached(_inputs())
        assert torch.equal(compiled(_inputs()), uncached(_inputs()))
        _edit_in_place(cached)
        _edit_in_place(uncached)
        torch.testing.assert_close(compiled(_inputs()), uncached(_inputs()), rtol=0, atol=0)
