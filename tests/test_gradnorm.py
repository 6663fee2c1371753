"""GradNorm's closed form against the official backward pass, a NumPy reference and pytorch-ood.

The official procedure (``deeplearning-wisc/gradnorm_ood``, ``test_ood.py``) is re-done here
with plain autograd on an ``nn.Linear`` head in float64: one sample at a time, all-ones
targets, ``loss = mean_batch sum_c -log_softmax(z / T)_c``, ``loss.backward()`` and the L1
norm of the weight's gradient only. `tests.reference.gradnorm` forms the gradient matrix
entry by entry in NumPy. pytorch-ood 0.4.0 averages the loss over the classes (its
``-log_softmax(...).mean()``), so its outlier score is minus 1/C times the official one:
ours = -C * theirs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from oodscore import evaluate
from oodscore.functional.gradnorm import gradnorm_score
from oodscore.scorers.base import get_scorer
from oodscore.scorers.gradnorm import GradNorm
from tests.peers import pytorch_ood_module
from tests.reference import gradnorm as ref
from tests.test_evaluate_models import loaders, make_data, make_net


def head(features: int, classes: int, *, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(features, classes, bias=bias).double()


def official_gradnorm(linear: nn.Linear, features: Tensor, temperature: float) -> Tensor:
    """The official loop: batch size 1, ones targets, backward, L1 norm of the weight grad."""
    model = copy.deepcopy(linear)
    num_classes = model.out_features
    scores = []
    for row in features:
        inputs = row[None].clone().requires_grad_(True)
        model.zero_grad()
        outputs = model(inputs) / temperature
        targets = torch.ones((1, num_classes), dtype=features.dtype)
        loss = torch.mean(torch.sum(-targets * torch.log_softmax(outputs, dim=-1), dim=-1))
        loss.backward()
        assert model.weight.grad is not None
        scores.append(model.weight.grad.abs().sum())
    return torch.stack(scores)


def random_features(rows: int, dim: int, seed: int = 1, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, dim, generator=g, dtype=torch.float64)


CASES = [
    # (rows, D, C, feature scale, temperature, bias)
    (20, 8, 5, 1.0, 1.0, True),
    (20, 8, 5, 1.0, 3.0, True),
    (20, 8, 5, 1.0, 0.1, False),
    (7, 1, 4, 2.0, 1.0, True),  # D = 1
    (9, 6, 2, 1.0, 1000.0, True),  # huge T: near-uniform softmax
    (5, 6, 3, 1e6, 1.0, True),  # huge features: saturated softmax
    (5, 6, 3, 1e-4, 1.0, False),  # tiny features, no bias: near-uniform softmax
    (1, 4, 1000, 3.0, 1.0, True),  # one row, many classes
]


@pytest.mark.parametrize(("rows", "dim", "classes", "scale", "temperature", "bias"), CASES)
def test_equals_the_official_backward_pass_and_the_reference(
    rows: int, dim: int, classes: int, scale: float, temperature: float, bias: bool
) -> None:
    linear = head(dim, classes, bias=bias)
    x = random_features(rows, dim, scale=scale)
    scores = GradNorm(temperature=temperature, head=linear)(x)
    official = official_gradnorm(linear, x, temperature)
    b = None if linear.bias is None else linear.bias.detach().numpy()
    want = ref.gradnorm(linear.weight.detach().numpy(), b, x.numpy(), temperature)
    torch.testing.assert_close(scores, official, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-10, atol=1e-300)
    assert scores.dtype == torch.float64
    assert linear.weight.grad is None  # no backward pass here


def test_zero_features_and_a_single_class_score_zero() -> None:
    linear = head(4, 3)
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    torch.testing.assert_close(GradNorm(head=linear)(zeros), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(official_gradnorm(linear, zeros, 1.0), torch.zeros(3).double())
    one_class = head(4, 1)
    x = random_features(5, 4)
    torch.testing.assert_close(GradNorm(head=one_class)(x), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(
        official_gradnorm(one_class, x, 1.0), torch.zeros(5, dtype=torch.float64)
    )


def test_the_factors_of_the_closed_form() -> None:
    """(C/T) ||softmax(z/T) - 1/C||_1 ||h||_1, each factor checked by hand on one row."""
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    features = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    want = 3 * np.abs(p - 1 / 3).sum() * 3.0
    np.testing.assert_allclose(gradnorm_score(logits, features).numpy(), [want], rtol=1e-14)
    p2 = np.exp([1.0, 0.0, -0.5]) / np.exp([1.0, 0.0, -0.5]).sum()
    want2 = 3 / 2 * np.abs(p2 - 1 / 3).sum() * 3.0
    np.testing.assert_allclose(gradnorm_score(logits, features, 2.0).numpy(), [want2], rtol=1e-14)


def test_the_batch_quirk_it_removes() -> None:
    """Official code on a batch of 2 gives a batch quantity; the closed form is per sample."""
    linear = head(6, 4)
    x = random_features(2, 6)
    model = copy.deepcopy(linear)
    loss = torch.mean(torch.sum(-torch.log_softmax(model(x), dim=-1), dim=-1))
    loss.backward()
    assert model.weight.grad is not None
    batch_norm = float(model.weight.grad.abs().sum())
    per_sample = GradNorm(head=linear)(x)
    assert not np.isclose(batch_norm, float(per_sample.mean()), rtol=1e-6)
    torch.testing.assert_close(per_sample, official_gradnorm(linear, x, 1.0), rtol=1e-12, atol=0)


def test_float32_features_match_float64_closely() -> None:
    linear = head(16, 10)
    x = random_features(50, 16, scale=3.0)
    want = GradNorm(head=linear)(x)
    got = GradNorm(weight=linear.weight.float(), bias=linear.bias.float())(x.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-6)


def test_matches_pytorch_ood_times_the_class_count() -> None:
    """pytorch-ood 0.4 GradNorm on the head weight alone: ours = -C * theirs."""
    gradnorm_module = pytorch_ood_module("gradnorm")
    for classes, temperature in [(5, 1.0), (7, 2.5), (2, 1000.0)]:
        linear = head(8, classes)
        x = random_features(12, 8)
        theirs = gradnorm_module.GradNorm(
            linear, param_filter=lambda name: name == "weight", temperature=temperature
        ).predict(x)
        ours = GradNorm(temperature=temperature, head=linear)(x)
        torch.testing.assert_close(ours, -classes * theirs, rtol=1e-10, atol=0)
        assert linear.weight.grad is None


def test_in_evaluate_uses_the_models_head_on_its_input() -> None:
    net = make_net()
    data = make_data()
    parts = loaders(data, "tuple")
    scorer = GradNorm()
    report = evaluate(net, parts["id"], parts["ood"], {"gradnorm": scorer}, progress=False)
    assert scorer.head is None  # the model's head was lent for the call only
    net.eval()
    for name, x in [("ID", data["x_id"]), ("far", data["far"])]:
        scores = report.id_scores if name == "ID" else report.ood_scores[name]
        with torch.no_grad():
            features = net.body(x)
        want = official_gradnorm(net.head.double(), features.double(), 1.0)
        net.head.float()
        np.testing.assert_allclose(np.asarray(scores["gradnorm"]), want.numpy(), rtol=1e-5)


def test_hyper_parameters_registry_and_repr() -> None:
    with pytest.raises(
        ValueError, match=r"`temperature` to be a finite number in \[1e-06, 1000000\], got 0"
    ):
        GradNorm(temperature=0)
    with pytest.raises(ValueError, match=r"`temperature`.*got nan"):
        GradNorm(temperature=float("nan"))
    scorer = get_scorer("gradnorm", temperature=2.0)
    assert isinstance(scorer, GradNorm)
    assert scorer.get_params() == {"temperature": 2.0, "head": None, "weight": None, "bias": None}
    assert repr(GradNorm()) == "GradNorm(temperature=1.0, head=None, weight=None, bias=None)"
    assert GradNorm.input_kind == "features"
    assert GradNorm.needs_head
    assert not GradNorm.requires_fit
    assert not GradNorm.multilabel


@pytest.mark.parametrize("temperature", [1e-300, 1e300, 0.0])
def test_temperature_outside_its_range_is_refused(temperature: float) -> None:
    """The shared temperature range of the softmax scorers: outside it, NaN or inf."""
    from oodscore import ODIN

    with pytest.raises(ValueError, match=r"`temperature` to be a finite number in \[1e-06, 1"):
        GradNorm(temperature=temperature)
    with pytest.raises(ValueError, match=r"`temperature` to be a finite number in \[1e-06, 1"):
        ODIN(temperature=temperature)
