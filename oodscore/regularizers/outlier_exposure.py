r"""Outlier exposure: teach the classifier to be uncertain on auxiliary outliers."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._validation import check_float_matrix, check_non_negative
from oodscore.regularizers.base import Regularizer, register_regularizer

OutlierTarget = Literal["uniform", "zeros"]
_TARGETS = ("uniform", "zeros")


def outlier_exposure_loss(logits_out: Tensor, *, target: OutlierTarget = "uniform") -> Tensor:
    r"""Unweighted outlier-exposure loss of outlier logits (M, C), M >= 1.

    ``"uniform"`` (softmax classifiers): the cross-entropy from the softmax to the uniform
    distribution, $\frac{1}{M}\sum_j \big(\log\sum_c e^{f_{jc}} - \frac{1}{C}\sum_c
    f_{jc}\big)$. ``"zeros"`` (multi-label, sigmoid classifiers): binary cross-entropy
    toward all-zero labels, averaged over outliers and labels,
    $\frac{1}{MC}\sum_{j,c} \log(1 + e^{f_{jc}})$ (softplus, exact for any logit).
    """
    if target == "zeros":
        return F.softplus(logits_out).mean()
    return (torch.logsumexp(logits_out, dim=1) - logits_out.mean(dim=1)).mean()


@register_regularizer("outlier_exposure")
class OutlierExposureLoss(Regularizer):
    r"""Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019).

    $$ \mathcal{L}_{\text{OE}} = \lambda \, \mathbb{E}_{\tilde x \sim \text{outliers}}
       \Big[ \log \sum_{c=1}^{C} e^{f_c(\tilde x)} - \frac{1}{C} \sum_{c=1}^{C} f_c(\tilde x)
       \Big] $$

    the cross-entropy from the uniform distribution to the softmax on an auxiliary
    outlier; it is smallest, $\log C$, when all logits of the outlier are equal.
    Added to the ID task loss: ``loss = F.cross_entropy(logits_in, y) + reg(logits_out)``.

    Official code ``hendrycks/outlier-exposure`` (``CIFAR/oe_tune.py``) and
    ``wetliu/energy_ood`` (``CIFAR/train.py``, ``--score OE``):
    ``0.5 * -(x[len(in):].mean(1) - torch.logsumexp(x[len(in):], dim=1)).mean()``, hence
    ``weight`` 0.5 (the paper's $\lambda = 0.5$ for vision).

    ``target="zeros"`` is the multi-label form used with sigmoid (BCE-trained) heads: the
    binary cross-entropy of every label of an outlier toward 0, averaged over outliers
    and labels, as EDGE's ``L_conf`` (``Yuchen-Sunflower/EDGE``, ``weg.py``:
    ``-torch.log(1 - torch.sigmoid(out)).mean()``, here computed as ``softplus`` so that
    large logits do not overflow).

    Args:
        weight: $\lambda \ge 0$ (official 0.5).
        target: ``"uniform"`` (softmax, the paper) or ``"zeros"`` (multi-label BCE).

    Example:
        >>> import torch
        >>> from oodscore import OutlierExposureLoss
        >>> reg = OutlierExposureLoss(weight=1.0)
        >>> reg(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))  # (log 2 + (2.1269 - 1)) / 2
        tensor(0.9101)
        >>> OutlierExposureLoss(target="zeros", weight=1.0)(torch.tensor([[0.0, 0.0]]))
        tensor(0.6931)
    """

    def __init__(self, *, weight: float = 0.5, target: OutlierTarget = "uniform") -> None:
        super().__init__()
        self.weight = check_non_negative(weight, "weight")
        if target not in _TARGETS:
            raise ValueError(
                f"Expected `target` to be one of {', '.join(map(repr, _TARGETS))}, got {target!r}."
            )
        self.target: OutlierTarget = target

    def forward(self, logits_out: Tensor) -> Tensor:
        """The weighted loss of the outlier batch's logits (M, C), M >= 1.

        Raises:
            ValueError: If ``logits_out`` is empty, not 2-D or not finite.
            TypeError: If it is not a floating-point torch tensor.
        """
        check_float_matrix(logits_out, "logits_out", columns="C")
        if logits_out.dtype in (torch.float16, torch.bfloat16):
            logits_out = logits_out.float()
        return self.weight * outlier_exposure_loss(logits_out, target=self.target)
