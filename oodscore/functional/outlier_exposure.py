r"""Outlier exposure: the loss that makes a classifier uncertain on auxiliary outliers."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

OutlierTarget = Literal["uniform", "zeros"]


def outlier_exposure_loss(logits_out: Tensor, *, target: OutlierTarget = "uniform") -> Tensor:
    r"""Unweighted outlier-exposure loss of outlier logits (M, C), M >= 1.

    ``"uniform"`` (softmax classifiers): the cross-entropy from the softmax to the uniform
    distribution, $\frac{1}{M}\sum_j \big(\log\sum_c e^{f_{jc}} - \frac{1}{C}\sum_c
    f_{jc}\big)$. ``"zeros"`` (multi-label, sigmoid classifiers): binary cross-entropy
    toward all-zero labels, averaged over outliers and labels,
    $\frac{1}{MC}\sum_{j,c} -\log(1 - \sigma(f_{jc})) = \frac{1}{MC}\sum_{j,c}
    \operatorname{softplus}(f_{jc})$ (exact for any logit).
    """
    if target == "zeros":
        return F.softplus(logits_out).mean()
    return (torch.logsumexp(logits_out, dim=1) - logits_out.mean(dim=1)).mean()
