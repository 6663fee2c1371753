from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from oodscore import (
    SpectralNormWrapper,
    remove_spectral_normalization,
    spectral_normalize,
    spectral_norms,
)
from oodscore.nn import (
    BatchNormBound,
    bound_batch_norm,
    load_unnormalized_state_dict,
    output_head,
)
from tests.reference import spectral as ref

# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: thread start-up would dominate on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer_map(layer: nn.Module):
    """The layer's own forward as a map, for the dense-matrix reference."""
    return lambda x: layer(x)


def _plain_copy(layer: nn.Module) -> nn.Module:
    """A plain copy of a layer (before normalization)."""
    return copy.deepcopy(layer)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.shortcut = nn.Conv2d(1, 6, 1, stride=2)
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
        out = out.mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(out)))


def _train(model: nn.Module, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8, generator=generator, dtype=_dtype(model))
        y = torch.randint(0, 3, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


# ---------------------------------------------------------------------------------------------
# analytic cases


def _diagonal_linear(values: list[float]) -> nn.Linear:
    layer = nn.Linear(len(values), len(values), bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor(values, dtype=torch.float64)))
    return layer


@pytest.mark.parametrize(
    ("coeff", "expected"),
    [(None, [1.0, 0.5, 0.25]), (2.0, [2.0, 1.0, 0.5]), (8.0, [4.0, 2.0, 1.0])],
)
def test_diagonal_weight_analytic(coeff: float | None, expected: list[float]) -> None:
    layer = _diagonal_linear([4.0, -2.0, 1.0])
    spectral_normalize(layer, coeff=coeff, normalize_head=True)
    signs = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        torch.diagonal(layer.weight.detach()), signs * torch.tensor(expected, dtype=torch.float64)
    )
    assert spectral_norms(layer) == {"": pytest.approx(4.0, rel=1e-12)}


def test_operator_mode_tridiagonal_analytic() -> None:
    # Kernel [1, 1, 1] with zero padding 1 on length n is the tridiagonal all-ones matrix.
    n = 9
    conv = nn.Conv1d(1, 1, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    spectral_normalize(
        conv,
        mode="operator",
        normalize_head=True,
        warmup_iterations=300,
        example_input=torch.zeros(1, 1, n, dtype=torch.float64),
    )
    expected = ref.tridiagonal_ones_norm(n)
    assert spectral_norms(conv)[""] == pytest.approx(expected, rel=1e-8)
    # The reshape norm of the same kernel is sqrt(3), clearly different.
    assert abs(math.sqrt(3) - expected) > 0.5


def test_operator_mode_circular_padding_analytic() -> None:
    n = 8
    kernel = [1.0, -2.0, 0.5]
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular", bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(kernel).view(1, 1, 3))
    spectral_normalize(
        conv,
        mode="operator",
        normalize_head=True,
        warmup_iterations=300,
        example_input=torch.zeros(1, 1, n, dtype=torch.float64),
    )
    assert spectral_norms(conv)[""] == pytest.approx(ref.circulant_norm(kernel, n), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# reshape mode against svdvals


@pytest.mark.parametrize(
    ("make_layer", "dim"),
    [
        (lambda: nn.Linear(7, 5), 0),
        (lambda: nn.Conv1d(3, 4, 3), 0),
        (lambda: nn.Conv2d(3, 5, 3, groups=1), 0),
        (lambda: nn.Conv3d(2, 3, 2), 0),
        (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), 1),
    ],
)
@pytest.mark.parametrize("coeff", [None, 0.5, 100.0])
def test_reshape_mode_bound_against_svdvals(make_layer, dim: int, coeff: float | None) -> None:
    torch.manual_seed(3)
    layer = make_layer().double()
    with torch.no_grad():
        layer.weight.mul_(5.0)
    sigma = ref.matrix_spectral_norm(layer.weight.detach().numpy(), dim)
    spectral_normalize(layer, coeff=coeff, normalize_head=True, warmup_iterations=300)
    weight = layer.weight.detach().numpy()
    normalized_sigma = ref.matrix_spectral_norm(weight, dim)
    bound = 1.0 if coeff is None else coeff
    assert normalized_sigma <= bound * (1 + 1e-6)
    expected = (
        ref.hard_normalize(layer.parametrizations.weight.original.detach().numpy(), sigma)
        if coeff is None
        else ref.soft_normalize(
            layer.parametrizations.weight.original.detach().numpy(), sigma, coeff
        )
    )
    np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-12)
    assert spectral_norms(layer)[""] == pytest.approx(sigma, rel=1e-8)


def test_reshape_mode_converges_by_training_iterations() -> None:
    # One power iteration per training forward: σ of the normalized weight approaches 1.
    torch.manual_seed(5)
    layer = nn.Linear(20, 30).double()
    spectral_normalize(layer, normalize_head=True, warmup_iterations=0)
    x = torch.randn(4, 20, dtype=torch.float64)
    for _ in range(200):
        layer(x)
    sigma = ref.matrix_spectral_norm(layer.weight.detach().numpy())
    assert sigma == pytest.approx(1.0, rel=1e-6)


def test_extreme_weights() -> None:
    # Huge and tiny scales: the normalized weight has σ = 1 either way.
    for scale in (1e30, 1e-8):
        torch.manual_seed(0)
        layer = nn.Linear(6, 6).double()
        with torch.no_grad():
            layer.weight.mul_(scale)
        spectral_normalize(layer, normalize_head=True, warmup_iterations=200)
        assert ref.matrix_spectral_norm(layer.weight.detach().numpy()) == pytest.approx(1.0)
    # A zero weight stays zero with the soft bound.
    zero = nn.Linear(3, 3)
    with torch.no_grad():
        zero.weight.zero_()
    spectral_normalize(zero, coeff=1.0, normalize_head=True)
    assert torch.equal(zero.weight.detach(), torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------
# operator mode against the dense matrix


OPERATOR_CASES = [
    (lambda: nn.Conv2d(3, 4, 3), (3, 6, 5)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 6)),
    (lambda: nn.Conv2d(2, 4, 3, stride=3, padding=2, dilation=2), (2, 8, 7)),
    (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=2), (4, 5, 5)),
    (lambda: nn.Conv2d(2, 3, 2, padding="same"), (2, 5, 6)),
    (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 5)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=2, padding_mode="replicate"), (2, 6, 5)),
    (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 5, 4)),
    (lambda: nn.Conv1d(3, 4, 5, stride=2, padding=2), (3, 11)),
    (lambda: nn.Conv3d(2, 2, 2, stride=(1, 2, 1), padding=1), (2, 3, 4, 3)),
    (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (3, 3, 4)),
    (lambda: nn.ConvTranspose1d(2, 4, 4, stride=2, groups=2), (2, 5)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize(("make_layer", "input_shape"), OPERATOR_CASES)
@pytest.mark.parametrize("coeff", [None, 0.5])
def test_operator_mode_against_dense_matrix(make_layer, input_shape, coeff) -> None:
    torch.manual_seed(10)  # a seed whose σ₂/σ₁ ≤ 0.986 in every case, for convergence
    layer = make_layer().double()
    plain = _plain_copy(layer)
    sigma = ref.operator_norm(_layer_map(plain), input_shape)
    spectral_normalize(
        layer,
        coeff=coeff,
        mode="operator",
        normalize_head=True,
        warmup_iterations=500,
        example_input=torch.zeros(2, *input_shape, dtype=torch.float64),
    )
    assert spectral_norms(layer)[""] == pytest.approx(sigma, rel=1e-4)
    layer.eval()
    normalized = ref.operator_norm(_layer_map(layer), input_shape)
    bound = 1.0 if coeff is None else coeff
    assert normalized <= bound * (1 + 1e-4)
    assert normalized == pytest.approx(min(bound, sigma) if coeff else 1.0, rel=1e-4)


def test_operator_mode_differs_from_reshape_mode() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    reshape_sigma = ref.matrix_spectral_norm(conv.weight.detach().numpy())
    operator_sigma = ref.operator_norm(_layer_map(_plain_copy(conv)), (2, 6, 6))
    assert abs(operator_sigma - reshape_sigma) / reshape_sigma > 0.05


def test_operator_mode_unbatched_input_and_buffer_shapes() -> None:
    conv = nn.Conv2d(2, 3, 3, stride=2)
    spectral_normalize(conv, mode="operator", normalize_head=True)
    wrapper = conv.parametrizations.weight[0]
    assert not wrapper.is_initialized
    assert math.isnan(spectral_norms(conv)[""])
    conv(torch.randn(2, 9, 7))  # unbatched (C, H, W)
    assert tuple(wrapper._v.shape) == (1, 2, 9, 7)
    assert tuple(wrapper._u.shape) == (1, 3, 4, 3)


def test_operator_mode_weight_before_first_forward_raises() -> None:
    conv = spectral_normalize(nn.Conv2d(1, 2, 3), mode="operator", normalize_head=True)
    with pytest.raises(RuntimeError, match="input shape"):
        _ = conv.weight
    with pytest.raises(RuntimeError, match="input shape"):
        remove_spectral_normalization(conv)


def test_operator_mode_input_shape_argument() -> None:
    conv = nn.Conv2d(2, 3, 3, bias=False).double()
    plain = _plain_copy(conv)
    wrapper = SpectralNormWrapper(
        conv.weight, mode="operator", layer=conv, input_shape=(2, 5, 5), warmup_iterations=500
    )
    parametrize.register_parametrization(conv, "weight", wrapper)
    expected = ref.operator_norm(_layer_map(plain), (2, 5, 5))
    original = conv.parametrizations.weight.original
    assert float(wrapper.estimate(original)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="input_shape"):
        SpectralNormWrapper(original, mode="operator", layer=conv, input_shape=(5, 5))


def test_linear_in_operator_mode_is_reshape() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(5, 4), nn.Linear(5, 4)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    spectral_normalize(a, mode="reshape", normalize_head=True)
    torch.manual_seed(1)
    spectral_normalize(b, mode="operator", normalize_head=True)
    assert torch.equal(a.weight, b.weight)


# ---------------------------------------------------------------------------------------------
# equality with torch.nn.utils.parametrizations.spectral_norm on SNoJoE's layers (SNoJoE's own,
# legacy function: tests/test_spectral_norm_legacy.py)


def _snojoe_pair(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    base = SmallCNN()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(seed + 1)
    for module in theirs.modules():
        if isinstance(module, nn.Conv2d):
            torch_spectral_norm(module)
    torch.manual_seed(seed + 1)
    spectral_normalize(ours, include=nn.Conv2d)
    return ours, theirs


def test_snojoe_layers_equal_torch_parametrizations_spectral_norm() -> None:
    ours, theirs = _snojoe_pair(0)
    normalized = {name for name, m in ours.named_modules() if parametrize.is_parametrized(m)}
    assert normalized == {"conv1", "conv2", "shortcut"}
    x = torch.randn(5, 1, 8, 8)
    for _ in range(3):
        _train(ours, steps=4)
        _train(theirs, steps=4)
        ours.train()
        theirs.train()
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
        ours.eval()
        theirs.eval()
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    # The same state dict keys as the parametrization, so checkpoints are interchangeable.
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())


# ---------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize(
    ("coeff", "mode"), [(None, "reshape"), (0.1, "reshape"), (None, "operator"), (0.1, "operator")]
)
def test_gradcheck(coeff: float | None, mode: str) -> None:
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False).double()
    wrapper = SpectralNormWrapper(
        conv.weight, coeff=coeff, mode=mode, layer=conv, input_shape=(2, 4, 4)
    ).eval()
    weight = conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(wrapper, (weight,))
    # and through a whole normalized layer
    layer = spectral_normalize(nn.Linear(4, 3).double(), coeff=coeff, normalize_head=True).eval()
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradient_of_sigma_is_outer_product_of_singular_vectors() -> None:
    # With converged u, v: dσ/dW = u vᵀ, so d(sum(W/σ) )/dW matches the closed form.
    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64)
    layer = nn.Linear(3, 4, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    spectral_normalize(layer, normalize_head=True, warmup_iterations=500)
    layer.eval()
    layer.weight.sum().backward()
    u_svd, s, vh = np.linalg.svd(w.numpy())
    u, v, sigma = u_svd[:, 0], vh[0], s[0]
    expected = np.ones_like(w.numpy()) / sigma - w.numpy().sum() / sigma**2 * np.outer(u, v)
    np.testing.assert_allclose(
        layer.parametrizations.weight.original.grad.numpy(), expected, rtol=1e-8
    )


# ---------------------------------------------------------------------------------------------
# train / eval, state dicts, removal, copies


def test_u_v_frozen_in_eval_and_updated_in_training() -> None:
    model = spectral_normalize(SmallCNN(), mode="operator")
    x = torch.randn(3, 1, 8, 8)
    model(x)
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("_u", "_v"))}
    assert len(buffers) == 8
    first = model(x)
    second = model(x)
    assert torch.equal(first, second)
    for key, value in model.state_dict().items():
        if key in buffers:
            assert torch.equal(value, buffers[key])
    model.train()
    model(x)
    changed = [
        k for k, v in model.state_dict().items() if k in buffers and not torch.equal(v, buffers[k])
    ]
    assert changed


def test_exact_state_dict_keys() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2)
    )
    spectral_normalize(model)
    assert list(model.state_dict()) == [
        "0.bias",
        "0.parametrizations.weight.original",
        "0.parametrizations.weight.0._u",
        "0.parametrizations.weight.0._v",
        "3.bias",
        "3.parametrizations.weight.original",
        "3.parametrizations.weight.0._u",
        "3.parametrizations.weight.0._v",
        "4.weight",
        "4.bias",
    ]


@pytest.mark.parametrize("mode", ["reshape", "operator"])
def test_state_dict_round_trip(mode: str) -> None:
    torch.manual_seed(0)
    trained = spectral_normalize(SmallCNN(), mode=mode, coeff=2.0)
    x = torch.randn(4, 1, 8, 8)
    _train(trained, steps=3)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = spectral_normalize(SmallCNN(), mode=mode, coeff=2.0)  # never ran a forward
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    trained.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    assert spectral_norms(fresh) == spectral_norms(trained)
    trained.train()
    fresh.train()
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)


def test_load_plain_weights_before_and_after_normalizing() -> None:
    torch.manual_seed(0)
    pretrained = SmallCNN()
    _train(pretrained, steps=2)
    plain_state = pretrained.state_dict()
    # before: load into the plain model, then normalize
    before = SmallCNN()
    before.load_state_dict(plain_state)
    spectral_normalize(before, warmup_iterations=500)
    # after: normalize, then load with the helper
    after = spectral_normalize(SmallCNN(), warmup_iterations=500)
    load_unnormalized_state_dict(after, plain_state)
    for name, sigma in spectral_norms(after).items():
        weight = pretrained.get_submodule(name).weight.detach().numpy()
        assert sigma == pytest.approx(ref.matrix_spectral_norm(weight), rel=1e-6)
        assert sigma == pytest.approx(spectral_norms(before)[name], rel=1e-6)
    x = torch.randn(3, 1, 8, 8)
    before.eval()
    after.eval()
    torch.testing.assert_close(after(x), before(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        load_unnormalized_state_dict(after, {**plain_state, "extra": torch.zeros(1)})
    result = load_unnormalized_state_dict(
        after, {**plain_state, "extra": torch.zeros(1)}, strict=False
    )
    assert result.unexpected_keys == ["extra"]


@pytest.mark.parametrize("mode", ["reshape", "operator"])
def test_removal_round_trip(mode: str) -> None:
    torch.manual_seed(0)
    model = spectral_normalize(SmallCNN(), mode=mode, coeff=0.5, batch_norm=True)
    _train(model, steps=3)
    parameters_before = {id(p) for p in model.parameters()}
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    expected = model(x)
    model.train()  # removal must not run a power iteration even in training mode
    remove_spectral_normalization(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert {id(p) for p in model.parameters()} == parameters_before
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert not any(k.endswith(("_u", "_v")) for k in model.state_dict())
    model.eval()
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-7)
    assert sorted(model.state_dict()) == sorted(SmallCNN().state_dict())
    with pytest.raises(ValueError, match="No spectrally normalized layer"):
        remove_spectral_normalization(model)


def test_deepcopy_and_to() -> None:
    model = spectral_normalize(SmallCNN(), mode="operator")
    clone = copy.deepcopy(model)  # before the first forward
    x = torch.randn(2, 1, 8, 8)
    clone(x)
    assert math.isnan(spectral_norms(model)["conv1"])
    assert not math.isnan(spectral_norms(clone)["conv1"])
    u_before = clone.conv1.parametrizations.weight[0]._u.clone()
    clone2 = copy.deepcopy(clone)
    clone2(x)  # a training forward on the copy leaves the original's buffers alone
    assert torch.equal(clone.conv1.parametrizations.weight[0]._u, u_before)
    double = copy.deepcopy(clone).to(torch.float64)
    assert double.conv1.parametrizations.weight[0]._u.dtype == torch.float64
    clone.eval()
    double.eval()
    torch.testing.assert_close(double(x.double()).float(), clone(x), rtol=1e-4, atol=1e-5)


def test_copies_keep_their_own_hooks_and_the_wrapper_pickles() -> None:
    model = spectral_normalize(SmallCNN(), mode="operator", batch_norm=True)
    user_hook = model.conv1.register_forward_pre_hook(lambda module, args: None)
    clone = copy.deepcopy(model)
    x = torch.randn(2, 1, 8, 8)
    clone(x)  # the clone's hook initializes the clone's buffers only
    assert math.isnan(spectral_norms(model)["conv1"])
    model(x)
    assert not math.isnan(spectral_norms(model)["conv1"])
    wrapper = model.conv2.parametrizations.weight[0]
    restored = pickle.loads(pickle.dumps(wrapper))
    assert restored.state_dict().keys() == wrapper.state_dict().keys()
    for key, value in wrapper.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    remove_spectral_normalization(clone)
    assert len(clone.conv1._forward_pre_hooks) == 1  # the user's hook stays
    assert not any(m._forward_pre_hooks for m in clone.modules() if m is not clone.conv1)
    assert len(model.conv1._forward_pre_hooks) == 2  # the original keeps its own
    assert len(model.bn1._forward_pre_hooks) == 1
    user_hook.remove()


@pytest.mark.xfail(
    strict=True,
    raises=AttributeError,
    reason="torch.nn.utils.parametrize: a deepcopy shares the injected Parametrized* class, "
    "so removing the parametrization from one copy deletes the weight property of both",
)
def test_removal_from_a_deepcopy_leaves_the_original_usable() -> None:
    model = spectral_normalize(SmallCNN())
    remove_spectral_normalization(copy.deepcopy(model))
    model(torch.randn(2, 1, 8, 8))


def test_torch_save_whole_model_is_not_supported_by_parametrize() -> None:
    # Documented: parametrized modules serialize through state_dict only.
    model = spectral_normalize(SmallCNN())
    with pytest.raises(RuntimeError, match="state_dict"):
        torch.save(model, io.BytesIO())


def test_example_input_initializes_without_side_effects() -> None:
    model = SmallCNN()
    model.fc.eval()  # mixed train/eval flags must survive
    stats = model.bn1.running_mean.clone()
    spectral_normalize(model, mode="operator", example_input=torch.randn(2, 1, 8, 8))
    assert model.training
    assert model.conv1.training
    assert not model.fc.training
    assert torch.equal(model.bn1.running_mean, stats)
    assert all(not math.isnan(s) for s in spectral_norms(model).values())


def test_two_forwards_backward_together() -> None:
    # u, v are cloned before use: a loss over two training forwards back-propagates.
    model = spectral_normalize(SmallCNN(), mode="operator")
    a, b = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    (model(a).sum() - model(b).sum()).backward()
    assert model.conv1.parametrizations.weight.original.grad is not None


# ---------------------------------------------------------------------------------------------
# selection


def test_default_selection_skips_the_output_head() -> None:
    model = spectral_normalize(SmallCNN())
    assert output_head(SmallCNN()) == "head"
    assert list(spectral_norms(model)) == ["conv1", "conv2", "shortcut", "fc"]
    assert not parametrize.is_parametrized(model.head)
    assert not parametrize.is_parametrized(model.bn1)
    with_head = spectral_normalize(SmallCNN(), normalize_head=True)
    assert list(spectral_norms(with_head)) == ["conv1", "conv2", "shortcut", "fc", "head"]


def test_include_exclude_by_type_pattern_and_predicate() -> None:
    by_pattern = spectral_normalize(SmallCNN(), include="conv*")
    assert list(spectral_norms(by_pattern)) == ["conv1", "conv2"]
    by_predicate = spectral_normalize(
        SmallCNN(), exclude=lambda name, module: getattr(module, "stride", (1,))[0] > 1
    )
    assert list(spectral_norms(by_predicate)) == ["conv1", "fc"]
    mixed = spectral_normalize(SmallCNN(), include=[nn.Linear, "shortcut"], exclude="fc")
    assert list(spectral_norms(mixed)) == ["shortcut"]
    none_head = spectral_normalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1)))
    assert list(spectral_norms(none_head)) == ["0", "1"]


def test_transposed_convolution_uses_dim_one() -> None:
    layer = spectral_normalize(nn.ConvTranspose2d(3, 5, 2), normalize_head=True)
    assert layer.parametrizations.weight[0].dim == 1
    assert layer.parametrizations.weight[0]._u.shape == (5,)


def test_batch_norm_bound() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([3.0, -0.1, 0.2, 0.5]))
        model.bn1.running_var.copy_(torch.tensor([0.25, 1.0, 2.0, 0.5]))
    spectral_normalize(model, coeff=2.0, batch_norm=True)
    bound = model.bn1.parametrizations.weight[0]
    assert isinstance(bound, BatchNormBound)
    lipschitz = ref.batch_norm_lipschitz(
        [3.0, -0.1, 0.2, 0.5], [0.25, 1.0, 2.0, 0.5], model.bn1.eps
    )
    assert spectral_norms(model)["bn1"] == pytest.approx(lipschitz)
    model.eval()
    gamma = model.bn1.weight.detach().numpy()
    # L = 3 / sqrt(0.25) = 6 > 2: every γ is divided by 6 / 2 = 3
    np.testing.assert_allclose(gamma, [1.0, -0.1 / 3, 0.2 / 3, 0.5 / 3], rtol=1e-4)
    bounded = ref.batch_norm_lipschitz(gamma, model.bn1.running_var.numpy(), model.bn1.eps)
    assert bounded == pytest.approx(2.0)
    # the eval output is the plain batch norm with the bounded weight
    x = torch.randn(3, 4, 5, 5)
    plain = nn.BatchNorm2d(4).eval()
    plain.load_state_dict(
        {
            **{k: v for k, v in model.bn1.state_dict().items() if "parametrizations" not in k},
            "weight": torch.tensor(gamma),
        }
    )
    torch.testing.assert_close(model.bn1(x), plain(x))


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_power_iterations": 0}, "n_power_iterations"),
        ({"n_power_iterations": 1.5}, "n_power_iterations"),
        ({"coeff": 0.0}, "coeff"),
        ({"coeff": -1.0}, "coeff"),
        ({"coeff": float("nan")}, "coeff"),
        ({"coeff": float("inf")}, "coeff"),
        ({"mode": "exact"}, "mode"),
        ({"warmup_iterations": -1}, "warmup_iterations"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spectral_normalize(SmallCNN(), **kwargs)
    with pytest.raises(ValueError, match=match):
        SpectralNormWrapper(nn.Linear(2, 2).weight, **kwargs)


def test_no_matching_layer() -> None:
    with pytest.raises(ValueError, match="No layer to normalize"):
        spectral_normalize(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match=r"output head '' is excluded"):
        spectral_normalize(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="No layer to normalize"):
        spectral_normalize(SmallCNN(), include="nothing*")


def test_normalizing_twice_raises() -> None:
    model = spectral_normalize(SmallCNN())
    with pytest.raises(ValueError, match=r"'conv1' .* already spectrally normalized"):
        spectral_normalize(model)
    torch_normalized = SmallCNN()
    torch_spectral_norm(torch_normalized.conv1)
    with pytest.raises(ValueError, match="already spectrally normalized"):
        spectral_normalize(torch_normalized)
    lazy = spectral_normalize(SmallCNN(), mode="operator")  # no forward yet
    with pytest.raises(ValueError, match="already spectrally normalized"):
        spectral_normalize(lazy)
    u_before = torch_normalized.conv1.parametrizations.weight[0]._u.clone()
    with pytest.raises(ValueError, match="already spectrally normalized"):
        spectral_normalize(torch_normalized)
    assert torch.equal(torch_normalized.conv1.parametrizations.weight[0]._u, u_before)
    bounded = spectral_normalize(SmallCNN(), batch_norm=True)
    with pytest.raises(ValueError, match="already"):
        spectral_normalize(bounded, include="nothing", batch_norm=True)


def test_non_finite_weight() -> None:
    model = SmallCNN()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'conv2' \(Conv2d\) to be finite"):
        spectral_normalize(model)
    with pytest.raises(ValueError, match="finite"):
        SpectralNormWrapper(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="include"):
        spectral_normalize(SmallCNN(), include=[3])
    with pytest.raises(TypeError, match="model"):
        spectral_normalize("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        SpectralNormWrapper(torch.ones(3))
    with pytest.raises(ValueError, match="weight"):
        SpectralNormWrapper(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="dim"):
        SpectralNormWrapper(torch.ones(3, 3), dim=2)
    with pytest.raises(ValueError, match="layer"):
        SpectralNormWrapper(torch.ones(3, 3, 3, 3), mode="operator")
    with pytest.raises(ValueError, match="lazy"):
        spectral_normalize(nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="affine"):
        bound_batch_norm(nn.BatchNorm1d(3, affine=False), coeff=1.0)


# ---------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    eager = spectral_normalize(SmallCNN(), mode="operator", example_input=torch.randn(1, 1, 8, 8))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager")
    x = torch.randn(4, 1, 8, 8)
    for _ in range(2):
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        compiled_model.conv1.parametrizations.weight[0]._u,
        eager.conv1.parametrizations.weight[0]._u,
    )
