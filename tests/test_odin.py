"""ODIN against float64 references: the chain rule on linear models, the official loop, pytorch-ood.

The references: `tests.reference.odin` (NumPy, analytic input gradients of linear models), a
re-implementation of the official per-image loop of ``facebookresearch/odin`` (and of the
multi-label ``get_odin_scores`` of ``deeplearning-wisc/multi-label-ood``) written here with
plain autograd, batch size 1 and ``loss.backward()`` on a copy of the model, and pytorch-ood
0.4.0's ``ODIN`` (an outlier score: ours = -theirs).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from oodscore import evaluate
from oodscore.functional.odin import odin_perturb, odin_sign
from oodscore.functional.softmax import msp_score
from oodscore.scorers.base import get_scorer
from oodscore.scorers.odin import ODIN
from tests.peers import pytorch_ood_module
from tests.reference import odin as ref
from tests.test_evaluate_models import loaders, make_data, make_net

CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
IMAGENET_STD = (0.229, 0.224, 0.225)


def linear_model(features: int, classes: int, seed: int = 0) -> nn.Sequential:
    """``z = W vec(x) + b``, float64."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes)).double()


def parameters(model: nn.Sequential) -> tuple[np.ndarray, np.ndarray]:
    layer = model[1]
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


def images(rows: int = 9, seed: int = 1, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, 3, 2, 2, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- linear models, analytic


@pytest.mark.parametrize("temperature", [1.0, 1000.0, 1e6])
@pytest.mark.parametrize("epsilon", [0.0, 0.0014, 0.3])
@pytest.mark.parametrize("std", [None, 0.5, CIFAR_STD])
def test_softmax_form_on_a_linear_model(temperature: float, epsilon: float, std: Any) -> None:
    model = linear_model(12, 5)
    x = images()
    scores = ODIN(temperature=temperature, epsilon=epsilon, std=std)(model, x)
    weight, bias = parameters(model)
    want = ref.odin(weight, bias, x.numpy(), temperature=temperature, epsilon=epsilon, std=std)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-12, atol=0)
    assert scores.dtype == torch.float64


@pytest.mark.parametrize("aggregation", ["max", "sum"])
@pytest.mark.parametrize("temperature", [1.0, 10.0, 1000.0])
@pytest.mark.parametrize("std", [None, IMAGENET_STD])
def test_sigmoid_form_on_a_linear_model(aggregation: str, temperature: float, std: Any) -> None:
    model = linear_model(12, 6)
    x = images(scale=2.0)
    scorer = ODIN(
        temperature=temperature,
        epsilon=0.05,
        std=std,
        activation="sigmoid",
        aggregation=aggregation,
    )
    weight, bias = parameters(model)
    want = ref.odin(
        weight,
        bias,
        x.numpy(),
        temperature=temperature,
        epsilon=0.05,
        std=std,
        activation="sigmoid",
        aggregation=aggregation,
    )
    np.testing.assert_allclose(scorer(model, x).numpy(), want, rtol=1e-12, atol=0)


def test_the_step_changes_the_score_as_the_reference_says() -> None:
    """Not a no-op: with eps > 0 the scores move away from MSP at T, by the reference's amount."""
    model = linear_model(12, 5)
    x = images()
    plain = ODIN(temperature=2.0, epsilon=0.0)(model, x)
    stepped = ODIN(temperature=2.0, epsilon=0.2)(model, x)
    torch.testing.assert_close(plain, msp_score(model(x).detach(), 2.0), rtol=1e-12, atol=0)
    assert bool((stepped > plain).all())  # the step raises the predicted class's probability
    weight, bias = parameters(model)
    want = ref.odin(weight, bias, x.numpy(), temperature=2.0, epsilon=0.2)
    np.testing.assert_allclose(stepped.numpy(), want, rtol=1e-12)


def test_extreme_inputs_and_a_single_row() -> None:
    model = linear_model(12, 4)
    weight, bias = parameters(model)
    for x in (
        images(scale=1e3),
        images(scale=1e-8),
        images(rows=1),
        torch.zeros(2, 3, 2, 2).double(),
    ):
        for temperature in (1.0, 1000.0):
            got = ODIN(temperature=temperature, epsilon=0.01)(model, x).numpy()
            want = ref.odin(weight, bias, x.numpy(), temperature=temperature, epsilon=0.01)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


class HalfFrozen(nn.Module):
    """Logits that depend on the last channel without a gradient: its input gradient is 0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.seen = nn.Linear(8, 4).double()
        self.unseen = nn.Linear(4, 4, bias=False).double()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        out: Tensor = self.seen(flat[:, :8]) + self.unseen(flat[:, 8:].detach())
        return out


def test_a_zero_gradient_steps_as_plus_one() -> None:
    """The official sign is +1 at a zero gradient: the frozen channel moves by -eps/std."""
    model = HalfFrozen()
    x = images(rows=6)
    epsilon, std = 0.2, CIFAR_STD
    weight = torch.cat([model.seen.weight, model.unseen.weight], dim=1).detach().numpy()
    bias = model.seen.bias.detach().numpy()
    gradient = ref.softmax_gradient(weight, bias, x.numpy(), 1.0)
    gradient[:, 2] = 0.0  # the detached channel
    perturbed = ref.perturb(x.numpy(), gradient, epsilon, std)
    z = ref.logits(weight, bias, perturbed)
    want = ref.softmax(z).max(axis=1)
    got = ODIN(temperature=1.0, epsilon=epsilon, std=std)(model, x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # torch.sign would leave that channel in place: a different score
    sign_zero = ref.perturb(x.numpy(), gradient, epsilon, std)
    sign_zero[:, 2] = x.numpy()[:, 2]
    assert not np.allclose(ref.softmax(ref.logits(weight, bias, sign_zero)).max(axis=1), got)


def test_sign_and_perturbation_functions() -> None:
    gradient = torch.tensor([[[-2.0, 0.0], [0.0, 3.0]], [[-0.0, 1e-300], [-1e-300, 5.0]]]).double()
    torch.testing.assert_close(odin_sign(gradient), torch.from_numpy(ref.sign_ge(gradient.numpy())))
    assert odin_sign(gradient)[1, 0, 0] == 1.0  # -0.0 >= 0
    x = torch.arange(8.0, dtype=torch.float64).reshape(2, 2, 2)
    for std in (None, 0.25, torch.tensor([0.5, 2.0])):
        ref_std = tuple(std.tolist()) if isinstance(std, Tensor) else std
        got = odin_perturb(x, gradient, 0.1, std)
        want = ref.perturb(x.numpy(), gradient.numpy(), 0.1, ref_std)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-15)


def test_ties_in_the_argmax_take_the_first_class() -> None:
    """z_0 = z_1 exactly: the loss of class 0 is descended, as numpy's and torch's argmax."""
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    x = torch.tensor([[0.5, 1.0], [0.25, 0.5], [2.0, -1.0]], dtype=torch.float64)
    weight, bias = model.weight.detach().numpy(), model.bias.detach().numpy()
    for activation in ("softmax", "sigmoid"):
        got = ODIN(temperature=1.0, epsilon=0.1, activation=activation)(model, x).numpy()  # type: ignore[arg-type]
        want = ref.odin(
            weight, bias, x.numpy(), temperature=1.0, epsilon=0.1, activation=activation
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # the choice matters: descending the loss of class 1 instead gives another score
    z = ref.logits(weight, bias, x.numpy()[:1])
    dz = ref.softmax(z) - np.array([[0.0, 1.0, 0.0]])
    other = ref.perturb(x.numpy()[:1], dz @ weight, 0.1, None)
    first = ODIN(temperature=1.0, epsilon=0.1)(model, x).numpy()[0]
    assert not np.isclose(ref.softmax(ref.logits(weight, bias, other)).max(), first, rtol=1e-6)


# ------------------------------------------------------ nonlinear models, the official loop


def official_odin(
    model: nn.Module,
    x: Tensor,
    *,
    temperature: float,
    epsilon: float,
    std: tuple[float, ...] | None,
    activation: str = "softmax",
    aggregation: str = "max",
) -> Tensor:
    """The official loop: one image at a time, ``loss.backward()`` on a copy of the model."""
    net = copy.deepcopy(model).eval()
    scores = []
    for i in range(len(x)):
        inputs = x[i : i + 1].clone().requires_grad_(True)
        outputs = net(inputs)
        if activation == "softmax":
            label = outputs.detach().softmax(dim=1).argmax(dim=1)
            loss = nn.CrossEntropyLoss()(outputs / temperature, label)
        else:
            preds = torch.sigmoid(outputs / temperature)
            labels = (preds >= 0.5).to(outputs.dtype)
            terms = nn.BCEWithLogitsLoss(reduction="none")(outputs, labels)
            if aggregation == "max":
                loss = terms.gather(1, preds.argmax(dim=1, keepdim=True)).mean()
            else:
                loss = terms.sum(dim=1).mean()
        loss.backward()
        assert inputs.grad is not None
        gradient = (torch.ge(inputs.grad, 0).to(x.dtype) - 0.5) * 2
        if std is not None:
            for channel, value in enumerate(std):
                gradient[0][channel] = gradient[0][channel] / value
        moved = torch.add(inputs.detach(), gradient, alpha=-epsilon)
        with torch.no_grad():
            out = net(moved) / temperature
        if activation == "softmax":
            p = torch.exp(out - out.max())
            scores.append((p / p.sum()).max())
        else:
            q = torch.sigmoid(out)
            scores.append(q.max() if aggregation == "max" else q.sum())
    return torch.stack(scores)


def mlp() -> nn.Module:
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Linear(3, 16),
        nn.BatchNorm1d(16),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.Linear(16, 5),
    ).double()
    with torch.no_grad():  # non-trivial running statistics
        net(torch.randn(64, 3, dtype=torch.float64) * 2 + 1)
    return net


def conv_net() -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).double()


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize(
    ("activation", "aggregation", "temperature", "epsilon"),
    [
        ("softmax", "max", 1000.0, 0.0014),
        ("softmax", "max", 1.0, 0.05),
        ("sigmoid", "max", 10.0, 0.002),
        ("sigmoid", "sum", 1.0, 0.05),
    ],
)
@pytest.mark.parametrize("std", [None, CIFAR_STD])
def test_nonlinear_models_match_the_official_loop(
    net: str, activation: str, aggregation: str, temperature: float, epsilon: float, std: Any
) -> None:
    model = mlp() if net == "mlp" else conv_net()
    g = torch.Generator().manual_seed(2)
    shape = (12, 3) if net == "mlp" else (12, 3, 5, 5)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    model.train()
    scorer = ODIN(
        temperature=temperature,
        epsilon=epsilon,
        std=std,
        activation=activation,  # type: ignore[arg-type]
        aggregation=aggregation,  # type: ignore[arg-type]
    )
    got = scorer(model, x)
    want = official_odin(
        model,
        x,
        temperature=temperature,
        epsilon=epsilon,
        std=std,
        activation=activation,
        aggregation=aggregation,
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert model.training


def test_batch_invariance() -> None:
    model = conv_net()
    x = torch.randn(10, 3, 5, 5, dtype=torch.float64)
    scorer = ODIN(epsilon=0.01, std=CIFAR_STD)
    whole = scorer(model, x)
    pieces = torch.cat([scorer(model, x[i : i + 3]) for i in range(0, 10, 3)])
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=0)


def test_matches_pytorch_ood() -> None:
    """pytorch-ood 0.4.0 ODIN with ``norm_std``: ours = -theirs where no gradient is exactly 0."""
    odin_module = pytorch_ood_module("odin")
    model = mlp().eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    std = [0.5, 0.25, 2.0]
    inputs = x.clone().requires_grad_(True)
    logits = model(inputs) / 1000.0
    (gradient,) = torch.autograd.grad(
        nn.functional.cross_entropy(logits, logits.argmax(dim=1)), inputs
    )
    assert bool((gradient != 0).all())  # torch.sign and the official sign agree here
    for temperature, epsilon in [(1000.0, 0.0014), (1.0, 0.05), (10.0, 0.0)]:
        theirs = odin_module.ODIN(model, eps=epsilon, temperature=temperature, norm_std=std)
        ours = ODIN(temperature=temperature, epsilon=epsilon, std=std)(model, x)
        torch.testing.assert_close(ours, -theirs.predict(x), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- the contract


class DictNet(nn.Module):
    """Returns a mapping with "logits" (as Hugging Face models), with a batch norm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = mlp()
        self.calls = 0

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.calls += 1
        return {"hidden": x, "logits": self.inner(x)}


def test_model_left_as_found() -> None:
    model = DictNet()
    model.train()
    model.inner[1].eval()  # a frozen submodule stays frozen
    model.inner[0].bias.requires_grad_(False)
    model.inner[4].weight.grad = torch.full_like(model.inner[4].weight, 7.0)
    stats = model.inner[1].running_mean.clone()
    x = torch.randn(6, 3, dtype=torch.float64)
    first = ODIN(epsilon=0.01)(model, x)
    second = ODIN(epsilon=0.01)(model, x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # dropout off inside
    assert model.training
    assert model.inner[3].training
    assert not model.inner[1].training
    assert model.inner[0].weight.requires_grad
    assert not model.inner[0].bias.requires_grad
    torch.testing.assert_close(model.inner[4].weight.grad, torch.full((5, 16), 7.0).double())
    assert all(p.grad is None for name, p in model.named_parameters() if name != "inner.4.weight")
    torch.testing.assert_close(model.inner[1].running_mean, stats)


def test_dict_output_equals_tensor_output_and_counts_passes() -> None:
    model = DictNet()
    x = torch.randn(5, 3, dtype=torch.float64)
    with_dict = ODIN(epsilon=0.01)(model, x)
    assert model.calls == 2  # forward + backward, then the perturbed forward
    torch.testing.assert_close(with_dict, ODIN(epsilon=0.01)(model.inner, x), rtol=0, atol=0)
    model.calls = 0
    ODIN(epsilon=0.0)(model, x)
    assert model.calls == 1  # epsilon = 0: no gradient, one pass


def test_works_under_no_grad_and_inference_inputs() -> None:
    model = mlp()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    want = ODIN(epsilon=0.01)(model, x.detach())
    with torch.no_grad():
        got = ODIN(epsilon=0.01)(model, x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not got.requires_grad
    assert x.grad is None


def test_half_precision_model_scores_in_float32() -> None:
    model = linear_model(12, 4).to(torch.bfloat16)
    scores = ODIN(epsilon=0.01)(model, images().to(torch.bfloat16))
    assert scores.dtype == torch.float32
    assert bool(torch.isfinite(scores).all())


def test_inputs_must_be_one_floating_tensor() -> None:
    model = linear_model(12, 4)
    with pytest.raises(TypeError, match=r"`inputs` to be a torch\.Tensor.*ndarray"):
        ODIN()(model, images().numpy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"floating tensor.*torch\.int64"):
        ODIN()(nn.Embedding(10, 4), torch.zeros(2, 3, dtype=torch.long))


def test_std_of_another_length_is_a_clear_error() -> None:
    model = linear_model(12, 4)
    with pytest.raises(
        ValueError, match=r"`std` to have one value per channel.*2 values.*shape \(9, 3, 2, 2\)"
    ):
        ODIN(std=(0.5, 0.5))(model, images())
    with pytest.raises(ValueError, match=r"2 values for inputs of shape \(4,\)"):
        ODIN(std=[0.5, 0.5])(nn.Identity(), torch.ones(4))


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (
            {"temperature": 0},
            ValueError,
            r"`temperature` to be a finite number in \[1e-06, 1000000\], got 0",
        ),
        ({"temperature": float("inf")}, ValueError, r"`temperature`.*got inf"),
        ({"epsilon": -0.1}, ValueError, r"`epsilon` to be a finite number >= 0, got -0.1"),
        ({"epsilon": True}, ValueError, r"`epsilon`.*got True"),
        ({"std": 0.0}, ValueError, r"`std` to be a finite number > 0, got 0.0"),
        ({"std": (0.5, -1.0)}, ValueError, r"`std` to be a non-empty sequence.*\(0.5, -1.0\)"),
        ({"std": ()}, ValueError, r"`std` to be a non-empty sequence"),
        ({"std": [0.5, float("nan")]}, ValueError, r"`std`.*nan"),
        ({"std": "0.5"}, TypeError, r"`std` to be None, a number or a sequence.*str"),
        (
            {"activation": "tanh"},
            ValueError,
            r"`activation` to be 'softmax' or 'sigmoid', got 'tanh'",
        ),
        ({"aggregation": "mean"}, ValueError, r"`aggregation` to be 'max' or 'sum', got 'mean'"),
        ({"aggregation": "sum"}, ValueError, r"'max' with activation='softmax', got 'sum'"),
    ],
)
def test_bad_hyper_parameters(params: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ODIN(**params)


def test_registry_repr_and_std_forms() -> None:
    scorer = get_scorer("odin", std=np.array([0.5, 0.25]))
    assert isinstance(scorer, ODIN)
    assert scorer.std == (0.5, 0.25)
    assert repr(ODIN()) == (
        "ODIN(temperature=1000.0, epsilon=0.0014, std=None, activation='softmax', "
        "aggregation='max')"
    )
    assert ODIN(std=torch.tensor([1.0, 2.0])).std == (1.0, 2.0)
    assert ODIN(std=2).std == 2.0
    assert ODIN.multilabel
    assert ODIN.input_kind == "model"


def test_called_on_logits_says_how_to_call_it() -> None:
    with pytest.raises(TypeError, match=r"scorer\(model, inputs\)"):
        ODIN().score(torch.zeros(2, 3))


# ----------------------------------------------------------------------------- evaluate


def test_in_evaluate_equals_calling_it_on_the_whole_set() -> None:
    net = make_net().double()
    data = {k: v.double() if v.is_floating_point() else v for k, v in make_data().items()}
    parts = loaders(data, "tuple")
    scorers = {"odin": ODIN(temperature=10.0, epsilon=0.05), "msp": "msp"}
    report = evaluate(net, parts["id"], parts["ood"], scorers, progress=False)  # type: ignore[arg-type]
    direct = ODIN(temperature=10.0, epsilon=0.05)
    for name, x in [("ID", data["x_id"]), ("near", data["near"]), ("far", data["far"])]:
        scores = report.id_scores if name == "ID" else report.ood_scores[name]
        want = direct(net, x)
        np.testing.assert_allclose(np.asarray(scores["odin"]), want.numpy(), rtol=1e-12)
        # the step did something: not the plain tempered MSP of the same inputs
        with torch.no_grad():
            plain = msp_score(net.eval()(x), 10.0)
        assert not np.allclose(np.asarray(scores["odin"]), plain.numpy(), rtol=1e-9)


@pytest.mark.parametrize(("aggregation", "name"), [("max", "max_sigmoid"), ("sum", "sum_sigmoid")])
def test_sigmoid_form_without_a_step_is_the_sigmoid_score(aggregation: str, name: str) -> None:
    """T = 1 and epsilon = 0 leave the sigmoid scores, to the last bit (no extra ties near 1)."""
    from oodscore import get_scorer

    model = nn.Linear(6, 5)
    x = torch.randn(64, 6) * 8
    odin = ODIN(temperature=1.0, epsilon=0.0, activation="sigmoid", aggregation=aggregation)  # type: ignore[arg-type]
    with torch.no_grad():
        want = get_scorer(name)(model(x))
    torch.testing.assert_close(odin(model, x), want, rtol=0, atol=0)
    assert ODIN.differentiable is False  # its scores come back detached
