r"""Sparsity regularization (SR) of penultimate features; with outlier exposure, SROE."""

from __future__ import annotations

import torch
from torch import Tensor

from oodscore._arrays import promote
from oodscore._validation import check_float_matrix, check_non_negative
from oodscore.functional.sparsity import active_fraction, sparsity_penalty
from oodscore.regularizers.base import Regularizer, check_pair, register_regularizer


@register_regularizer("sparsity")
class SparsityLoss(Regularizer):
    r"""Sparsity regularization: the mean L1 norm of penultimate features.

    $$ \mathcal{L}_{\text{SR}} = \alpha \cdot \frac{1}{N} \sum_{i=1}^{N} \lVert h(x_i) \rVert_1 $$

    with $h(x)$ the penultimate, pooled features (the input of the linear head; capture them
    with `oodscore.nn.FeatureCapture`). Detection then uses `oodscore.Energy`. **SROE** adds
    outlier exposure: ``SparsityLoss()(features_in=h_in, features_out=h_out) +
    OutlierExposureLoss()(logits_out=f_out)``; with ``features_out`` the mean runs over the
    N + M rows together, as in the official SROE recipe.

    After each call, `last_terms` holds ``l1_norm`` (the mean L1 norm, unweighted),
    ``active_features`` (the share of non-zero feature entries, `active_fraction`) and
    ``weight``.

    Args:
        weight: $\alpha \ge 0$ (official 0.02).
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import SparsityLoss
        >>> SparsityLoss()(features_in=torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        tensor(0.0600)
        >>> SparsityLoss(weight=1.0)(features_in=torch.tensor([[1.0, -2.0]]),
        ...                          features_out=torch.tensor([[0.0, 3.0]]))
        tensor(3.)

    Source: Chen et al., Scientific Reports 2024; ``kuan-li/SparsityRegularization``.
    """

    term_names = ("l1_norm", "active_features", "weight")

    def __init__(self, *, weight: float = 0.02, validate_args: bool = True) -> None:
        super().__init__(validate_args=validate_args)
        self.weight = check_non_negative(weight, "weight")

    def forward(self, *, features_in: Tensor, features_out: Tensor | None = None) -> Tensor:
        """The weighted L1 penalty.

        Args:
            features_in: Penultimate features of the ID batch (N, D), N >= 1.
            features_out: Penultimate features of auxiliary outliers (M, D), or ``None``.
                When given, the mean runs over the N + M rows together (SROE's recipe).

        Raises:
            ValueError: If a batch is empty, not 2-D, not finite, or the feature sizes differ.
            TypeError: If an input is not a floating-point tensor.
        """
        if features_out is None:
            features = promote(
                check_float_matrix(features_in, "features_in", finite=self.validate_args)
            )
        else:
            rows_in, rows_out = check_pair(
                features_in,
                features_out,
                ("features_in", "features_out"),
                columns="D",
                finite=self.validate_args,
            )
            features = torch.cat([rows_in, rows_out])
        penalty = sparsity_penalty(features)
        loss = self.weight * penalty
        terms = {"l1_norm": penalty, "active_features": active_fraction(features)}
        self._store_terms(loss, {**terms, "weight": self.weight})
        return loss
