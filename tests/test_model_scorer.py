"""The `ModelScorer` contract: run the model, gradients only for the inputs, state left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from oodscore import ModelScorer
from oodscore.scorers.model_scorer import LogitsFn, input_gradient


class InputGradientNorm(ModelScorer):
    """A test scorer: minus the L2 norm of the input gradient of logsumexp(f(x))."""

    def score_model(self, logits_fn: LogitsFn, inputs: Tensor) -> Tensor:
        gradient = input_gradient(logits_fn, inputs, lambda z: z.logsumexp(dim=1).sum())
        return -gradient.flatten(1).norm(dim=1)


def reference(weight: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Float64: grad_x logsumexp(Wx + b) = W^T softmax(Wx + b), written from the chain rule."""
    z = x @ weight.T + bias
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return -np.linalg.norm(p @ weight, axis=1)


class Net(nn.Module):
    """A classifier with a batch norm (mode matters) and a dropout, returning a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.head(self.drop(self.norm(x)))}


def test_matches_the_chain_rule_reference():
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    x = torch.randn(7, 5, dtype=torch.float64) * 3
    scores = InputGradientNorm()(model, x)
    want = reference(model.weight.detach().numpy(), model.bias.detach().numpy(), x.numpy())
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-12)
    assert scores.dtype == torch.float64
    assert not scores.requires_grad


def test_eval_mode_inside_and_every_flag_restored_after():
    torch.manual_seed(0)
    model = Net()
    model.train()
    model.norm.eval()  # a frozen submodule stays frozen
    model.head.bias.requires_grad_(False)
    model.head.weight.grad = torch.full_like(model.head.weight, 7.0)
    stats = model.norm.running_mean.clone()
    x = torch.randn(6, 4)
    first = InputGradientNorm()(model, x)
    second = InputGradientNorm()(model, x)
    torch.testing.assert_close(first, second)  # dropout off: deterministic
    assert model.training
    assert not model.norm.training
    assert model.drop.training
    assert model.head.weight.requires_grad
    assert not model.head.bias.requires_grad
    assert model.norm.weight.requires_grad
    torch.testing.assert_close(model.head.weight.grad, torch.full_like(model.head.weight, 7.0))
    assert model.head.bias.grad is None
    assert model.norm.weight.grad is None
    torch.testing.assert_close(model.norm.running_mean, stats)  # eval: statistics untouched


def test_works_under_no_grad_and_returns_detached_scores():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    with torch.no_grad():
        scores = InputGradientNorm()(model, x)
    assert scores.shape == (4,)
    assert not scores.requires_grad
    assert x.grad is None


def test_state_restored_when_the_scorer_raises():
    model = nn.Linear(3, 2)
    model.train()

    def bad_forward(module: nn.Module, x: Tensor) -> Tensor:
        return module(x)[:, 0]  # 1-D: not logits

    with pytest.raises(ValueError, match=r"\(N, C\) logits with N = 4, got shape \(4,\)"):
        InputGradientNorm()(model, torch.randn(4, 3), forward=bad_forward)
    assert model.training
    assert model.weight.requires_grad
    assert model.bias.requires_grad


def test_forward_hook_and_output_forms():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    plain = InputGradientNorm()(model, x)
    as_tuple = InputGradientNorm()(model, x, forward=lambda m, inputs: (m(inputs), inputs))
    as_keyword = InputGradientNorm()(
        model, x, forward=lambda m, inputs: {"logits": m(input=inputs)}
    )
    torch.testing.assert_close(as_tuple, plain)
    torch.testing.assert_close(as_keyword, plain)


def test_half_precision_model_scores_in_float32():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(torch.bfloat16)
    scores = InputGradientNorm()(model, torch.randn(4, 3).to(torch.bfloat16))
    assert scores.dtype == torch.float32


def test_empty_batch_does_not_run_the_model():
    def never(module: nn.Module, x: Tensor) -> Tensor:
        raise AssertionError("the model ran")

    scores = InputGradientNorm()(nn.Linear(3, 2), torch.empty(0, 3), forward=never)
    assert scores.shape == (0,)
    assert scores.dtype == torch.float32


@pytest.mark.parametrize(
    ("model", "inputs", "error", "match"),
    [
        ("not a model", torch.zeros(2, 3), TypeError, "`model` to be a torch.nn.Module, got str"),
        (nn.Linear(3, 2), np.zeros((2, 3)), TypeError, "`inputs` to be a torch.Tensor.*ndarray"),
        (nn.Linear(3, 2), torch.zeros(2, 3, dtype=torch.long), TypeError, "dtype torch.int64"),
        (nn.Linear(3, 2), torch.tensor(1.0), TypeError, r"shape \(\)"),
        (nn.Linear(3, 2), torch.tensor([[0.0, float("nan"), 0.0]]), ValueError, "`inputs`.*NaN"),
    ],
)
def test_bad_input(model, inputs, error, match):
    with pytest.raises(error, match=match):
        InputGradientNorm()(model, inputs)


def test_bad_forward():
    with pytest.raises(TypeError, match="`forward` to be a function"):
        InputGradientNorm()(nn.Linear(3, 2), torch.zeros(2, 3), forward=3)


def test_called_on_logits_says_how_to_call_it():
    with pytest.raises(TypeError, match=r"scorer\(model, inputs\)"):
        InputGradientNorm().score(torch.zeros(2, 3))


def test_works_under_inference_mode():
    """Inputs made under torch.inference_mode cannot join a graph; the call copies them."""
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    want = InputGradientNorm()(model, x)
    with torch.inference_mode():
        inside = torch.randn(6, 5, dtype=torch.float64).copy_(x)
        got = InputGradientNorm()(model, inside)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
