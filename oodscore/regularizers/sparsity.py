r"""Sparsity regularization (SR) of penultimate features; with outlier exposure, SROE."""

from __future__ import annotations

import torch
from torch import Tensor

from oodscore._validation import check_float_matrix, check_non_negative
from oodscore.regularizers.base import Regularizer, register_regularizer


def sparsity_penalty(features: Tensor) -> Tensor:
    r"""Mean over rows of the L1 norm of each row: $\frac{1}{N}\sum_i \lVert h_i \rVert_1$.

    Args:
        features: Penultimate features (N, D), N >= 1.
    """
    return features.abs().sum(dim=1).mean()


@register_regularizer("sparsity")
class SparsityLoss(Regularizer):
    r"""Sparsity regularization of penultimate features (Chen et al., Scientific Reports 2024).

    $$ \mathcal{L}_{\text{SR}} = \alpha \cdot \frac{1}{N} \sum_{i=1}^{N} \lVert h(x_i) \rVert_1 $$

    where $h(x)$ is the penultimate, pooled feature vector (the input of the linear head).
    From "Exploring feature sparsity for out-of-distribution detection": sparser features
    of in-distribution data leave OOD inputs with lower energy; detection then uses the
    energy score (`oodscore.Energy`). Get $h$ of any model with
    `oodscore.nn.FeatureCapture`.

    Official code ``kuan-li/SparsityRegularization`` (``CIFAR/tune.py``, and
    ``chen-qichao/SROE``): ``torch.mean(torch.sum(abs(vector_feature), dim=1))`` on the
    WideResNet's average-pooled features (``wrn_prime.py`` returns them next to the
    logits), added to the cross-entropy with ``--alpha 0.02`` (the default ``weight``).
    There, SR fine-tunes a pretrained network for 10 epochs at learning rate 0.001.

    **SROE** is SR plus outlier exposure: ``train_oe`` in the same script adds
    ``--beta 0.5`` times the OE loss of the outliers' logits, i.e.
    ``SparsityLoss()(features_in, features_out) +
    get_regularizer("outlier_exposure", weight=0.5)(logits_out=...)``. In that recipe ID
    and outliers go through the network in one batch and the L1 mean runs over **all**
    rows, ID and outliers; pass ``features_out`` to reproduce it.

    Args:
        weight: $\alpha \ge 0$, the weight of the term (official default 0.02).

    Example:
        >>> import torch
        >>> from oodscore import SparsityLoss
        >>> SparsityLoss()(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        tensor(0.0600)
        >>> SparsityLoss(weight=1.0)(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 3.0]]))
        tensor(3.)
    """

    def __init__(self, *, weight: float = 0.02) -> None:
        super().__init__()
        self.weight = check_non_negative(weight, "weight")

    def forward(self, features_in: Tensor, features_out: Tensor | None = None) -> Tensor:
        """The weighted L1 penalty.

        Args:
            features_in: Penultimate features of the ID batch (N, D), N >= 1.
            features_out: Penultimate features of auxiliary outliers (M, D), or ``None``.
                When given, the mean runs over the N + M rows together (SROE's recipe).

        Raises:
            ValueError: If a batch is empty, not 2-D, not finite, or the feature sizes differ.
            TypeError: If an input is not a floating-point tensor.

        float16/bfloat16 features are summed in float32 (the result is float32).
        """
        check_float_matrix(features_in, "features_in")
        features = features_in
        if features_out is not None:
            check_float_matrix(features_out, "features_out")
            if features_out.shape[1] != features_in.shape[1]:
                raise ValueError(
                    f"Expected `features_out` to have the feature size of `features_in` "
                    f"(D = {features_in.shape[1]}), got shape {tuple(features_out.shape)}."
                )
            dtype = torch.promote_types(features_in.dtype, features_out.dtype)
            features = torch.cat([features_in.to(dtype), features_out.to(dtype)])
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()  # half-precision sums of |h| lose too much
        return self.weight * sparsity_penalty(features)
