r"""Outlier exposure: the loss that makes a classifier uncertain on auxiliary outliers."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._arrays import finite_sum, saturate

OutlierTarget = Literal["uniform", "zeros"]


def outlier_exposure_loss(logits_out: Tensor, *, target: OutlierTarget = "uniform") -> Tensor:
    r"""Unweighted outlier-exposure loss of outlier logits (M, C), M >= 1.

    ``"uniform"`` (softmax classifiers): the cross-entropy from the softmax to the uniform
    distribution, $\frac{1}{M}\sum_j \big(\log\sum_c e^{f_{jc}} - \frac{1}{C}\sum_c
    f_{jc}\big)$. ``"zeros"`` (multi-label, sigmoid classifiers): binary cross-entropy
    toward all-zero labels, averaged over outliers and labels,
    $\frac{1}{MC}\sum_{j,c} -\log(1 - \sigma(f_{jc})) = \frac{1}{MC}\sum_{j,c}
    \operatorname{softplus}(f_{jc})$ (exact for any logit).

    Each row's term is taken as $\log \sum_c e^{f_c - m} + \frac{1}{C}\sum_c (m - f_c)$
    with $m = \max_c f_c$: two non-negative parts, so nothing cancels (the direct
    difference loses the term's digits when the logits are large and nearly equal), and
    with the halves $m/2 - f_c/2$ (exact) no difference overflows. The means never
    overflow (`oodscore._arrays.finite_sum`); a loss whose exact value lies beyond the
    dtype saturates at its largest finite value.
    """
    if target == "zeros":
        return finite_sum(F.softplus(logits_out), mean=True)
    top = logits_out.detach().amax(dim=1, keepdim=True)
    log_sum = torch.logsumexp(logits_out - top, dim=1)  # in [0, log C]
    half_gap = finite_sum(top / 2 - logits_out / 2, dim=1, mean=True)  # mean(m - f) / 2
    half_terms = log_sum / 2 + half_gap
    return saturate(2 * finite_sum(half_terms, mean=True))
