r"""ODIN's input pre-processing: the losses it descends, its sign step, its final scores.

The softmax form (Liang et al.) and the multi-label (sigmoid) form of the JointEnergy
paper's code share the step $\tilde x = x - \epsilon \operatorname{sign}(\nabla_x
\mathcal{L}) / \sigma$; they differ in the loss and the final score. The softmax score is
`oodscore.functional.msp_score` at the same temperature.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore.functional.sigmoid import max_sigmoid_score, sum_sigmoid_score

Aggregation = Literal["max", "sum"]


def odin_softmax_loss(logits: Tensor, temperature: float) -> Tensor:
    r"""Cross-entropy of $f/T$ against the predicted class, summed over the batch.

    $$ \mathcal{L} = \sum_i -\log \operatorname{softmax}(f(x_i)/T)_{\hat y_i}, \qquad
       \hat y_i = \arg\max_c f_c(x_i) $$

    Summed (not averaged) so that each sample's input gradient is the one it would get
    alone; ties in the argmax go to the first class.
    """
    predicted = logits.detach().argmax(dim=1)
    return F.cross_entropy(logits / temperature, predicted, reduction="sum")


def odin_sigmoid_loss(logits: Tensor, aggregation: Aggregation) -> Tensor:
    r"""Binary cross-entropy of the untempered logits against their own labels, summed.

    $$ \mathcal{L} = \sum_i \ell_{i,\hat c_i} \ (\text{max}) \quad\text{or}\quad
       \sum_i \sum_c \ell_{ic} \ (\text{sum}), \qquad
       \ell_{ic} = \operatorname{BCE}\big(f_c(x_i), \mathbb{1}[f_c(x_i) \ge 0]\big) $$

    with $\hat c_i = \arg\max_c f_c(x_i)$, the class of the largest sigmoid (first on ties).
    The temperature does not enter: the pseudo-labels $\sigma(f/T) \ge 1/2$ are $f \ge 0$
    for every $T > 0$.
    """
    labels = (logits.detach() >= 0).to(logits.dtype)
    terms = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if aggregation == "max":
        top = logits.detach().argmax(dim=1, keepdim=True)
        return terms.gather(1, top).sum()
    return terms.sum()


def odin_sign(gradient: Tensor) -> Tensor:
    r"""$+1$ where the gradient is $\ge 0$ (zero included), $-1$ elsewhere, in its dtype.

    The official ``torch.ge(g, 0)`` mapped to $\{-1, +1\}$; ``torch.sign`` would give 0
    at 0.
    """
    one = torch.ones((), dtype=gradient.dtype, device=gradient.device)
    return torch.where(gradient >= 0, one, -one)


def odin_perturb(
    inputs: Tensor, gradient: Tensor, epsilon: float, std: Tensor | float | None = None
) -> Tensor:
    r"""The perturbed inputs $\tilde x = x - \epsilon\, \operatorname{sign}(g) / \sigma$.

    Args:
        inputs: Model inputs (N, ...).
        gradient: $g = \nabla_x \mathcal{L}$, the shape of ``inputs``.
        epsilon: Step size $\epsilon \ge 0$.
        std: $\sigma$: ``None`` (no division), one number, or a tensor of per-channel
            standard deviations (length ``inputs.shape[1]``), applied along dim 1.
    """
    step = odin_sign(gradient)
    if isinstance(std, Tensor):
        step = step / std.to(step).reshape(-1, *([1] * (step.ndim - 2)))
    elif std is not None:
        step = step / std
    return inputs.detach().add(step, alpha=-epsilon)


def odin_sigmoid_score(logits: Tensor, temperature: float, aggregation: Aggregation) -> Tensor:
    r"""$\max_c \sigma(f_c/T)$ (``"max"``) or $\sum_c \sigma(f_c/T)$ (``"sum"``), per row.

    The sigmoid scores of `oodscore.functional.max_sigmoid_score` and
    `oodscore.functional.sum_sigmoid_score` (float64, rounded once) of the tempered logits.
    """
    tempered = logits / temperature
    if aggregation == "max":
        return max_sigmoid_score(tempered)
    return sum_sigmoid_score(tempered)
