"""ODIN: temperature scaling and a signed input-gradient step, then the confidence."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from oodscore._validation import POSITIVE, TEMPERATURE, check_non_negative, check_positive
from oodscore.functional.odin import (
    Aggregation,
    odin_perturb,
    odin_sigmoid_loss,
    odin_sigmoid_score,
    odin_softmax_loss,
)
from oodscore.functional.softmax import msp_score
from oodscore.scorers.base import register_scorer
from oodscore.scorers.model_scorer import LogitsFn, ModelScorer, input_gradient

Activation = Literal["softmax", "sigmoid"]
Std = float | tuple[float, ...]


@register_scorer("odin")
class ODIN(ModelScorer):
    r"""ODIN: the tempered confidence of an input moved one signed gradient step.

    $$ \tilde x = x - \epsilon\, \frac{\operatorname{sign}\big(\nabla_x
       \mathcal{L}(x)\big)}{\sigma}, \qquad
       S(x) = \max_c \operatorname{softmax}\big(f(\tilde x)/T\big)_c $$

    with $\mathcal{L}(x) = -\log \operatorname{softmax}(f(x)/T)_{\hat y}$,
    $\hat y = \arg\max_c f_c(x)$, and $\operatorname{sign}(0) = +1$ as in the official code.
    The step raises the confidence of the predicted class, more for ID inputs than OOD ones.
    ``activation="sigmoid"`` is the multi-label form of the JointEnergy paper's code: the
    loss is the binary cross-entropy of $f(x)$ (untempered) against the labels
    $\mathbb{1}[f_c(x) \ge 0]$, of the most probable label (``"max"``) or summed over labels
    (``"sum"``), and the score $\max_c \sigma(f_c(\tilde x)/T)$ or $\sum_c \sigma(f_c(\tilde
    x)/T)$. Called as ``scorer(model, inputs)`` on one floating tensor of inputs (images, not
    token ids): a forward and a backward pass, then a second forward pass (one pass when
    $\epsilon = 0$).

    Args:
        temperature: $T \in [10^{-6}, 10^6]$ (default 1000, the paper's).
        epsilon: Step size $\epsilon \ge 0$ (default 0.0014, the official default); 0 skips
            the gradient.
        std: $\sigma$: ``None`` (default) leaves the sign step as it is; a number divides it
            everywhere; a sequence divides channel $c$ (dim 1 of the inputs) by ``std[c]``,
            so that $\epsilon$ is in the units of the unnormalised input, e.g.
            ``(63.0/255, 62.1/255, 66.7/255)`` for the original CIFAR models.
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (multi-label).
        aggregation: ``"max"`` (default) or ``"sum"`` (sigmoid only).

    Examples:
        >>> import torch
        >>> from oodscore.scorers.odin import ODIN
        >>> model = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
        ...     _ = model.bias.zero_()
        >>> ODIN(temperature=1.0, epsilon=0.1)(model, torch.tensor([[1.0, 0.0], [0.1, 0.0]]))
        tensor([0.9168, 0.6457])
        >>> ODIN(temperature=1.0, epsilon=0.0)(model, torch.tensor([[1.0, 0.0], [0.1, 0.0]]))
        tensor([0.8808, 0.5498])

    Source: Liang, Li & Srikant, ICLR 2018; ``facebookresearch/odin``.
    """

    multilabel: ClassVar[bool] = True

    def __init__(
        self,
        *,
        temperature: float = 1000.0,
        epsilon: float = 0.0014,
        std: float | Sequence[float] | None = None,
        activation: Activation = "softmax",
        aggregation: Aggregation = "max",
    ) -> None:
        self.temperature = TEMPERATURE.check(temperature, "temperature")
        self.epsilon = check_non_negative(epsilon, "epsilon")
        self.std: Std | None = _check_std(std)
        if activation not in get_args(Activation):
            raise ValueError(
                f"Expected `activation` to be 'softmax' or 'sigmoid', got {activation!r}."
            )
        if aggregation not in get_args(Aggregation):
            raise ValueError(f"Expected `aggregation` to be 'max' or 'sum', got {aggregation!r}.")
        if aggregation == "sum" and activation == "softmax":
            raise ValueError(
                "Expected `aggregation` to be 'max' with activation='softmax', got 'sum': the "
                "sum over labels is the multi-label form, pass activation='sigmoid'."
            )
        self.activation: Activation = activation
        self.aggregation: Aggregation = aggregation

    def score_model(self, logits_fn: LogitsFn, inputs: Tensor) -> Tensor:
        """ODIN scores (N,) of checked ``inputs``: perturb, then score the perturbed logits."""
        std = self._std_for(inputs)
        perturbed = inputs
        if self.epsilon > 0:
            gradient = input_gradient(logits_fn, inputs, self._loss)
            perturbed = odin_perturb(inputs, gradient, self.epsilon, std)
        with torch.no_grad():
            logits = logits_fn(perturbed)
        if self.activation == "sigmoid":
            return odin_sigmoid_score(logits, self.temperature, self.aggregation)
        return msp_score(logits, self.temperature)

    def _loss(self, logits: Tensor) -> Tensor:
        if self.activation == "sigmoid":
            return odin_sigmoid_loss(logits, self.aggregation)
        return odin_softmax_loss(logits, self.temperature)

    def _std_for(self, inputs: Tensor) -> Tensor | float | None:
        """``std`` as `odin_perturb` takes it, checked against the channels of ``inputs``."""
        if not isinstance(self.std, tuple):
            return self.std
        channels = inputs.shape[1] if inputs.ndim >= 2 else None
        if channels != len(self.std):
            raise ValueError(
                f"Expected `std` to have one value per channel of `inputs` (dim 1), got "
                f"{len(self.std)} values for inputs of shape {tuple(inputs.shape)}."
            )
        return torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device)


def _check_std(std: object) -> Std | None:
    """``None``, a positive number, or a non-empty tuple of positive numbers."""
    if std is None:
        return None
    if isinstance(std, Real) and not isinstance(std, bool):
        return check_positive(std, "std")
    if isinstance(std, Tensor | np.ndarray) and std.ndim == 1:
        std = std.tolist()
    if isinstance(std, Sequence) and not isinstance(std, str):
        values = tuple(std)
        if values and all(value in POSITIVE for value in values):
            return tuple(float(value) for value in values)
        raise ValueError(
            f"Expected `std` to be a non-empty sequence of finite numbers > 0, got {std!r}."
        )
    raise TypeError(
        "Expected `std` to be None, a number or a sequence of per-channel numbers, got "
        f"{type(std).__name__}."
    )
