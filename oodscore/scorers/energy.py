"""Energy scores: the free energy of a softmax classifier and JointEnergy of a multi-label one."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._validation import check_int, check_positive
from oodscore.scorers.base import Scorer, register_scorer


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Negative free energy $T \cdot \operatorname{logsumexp}_c(f_c / T)$."""
    if temperature == 1.0:
        return torch.logsumexp(logits, dim=1)
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def joint_energy_score(logits: Tensor, top_k: int | None = None) -> Tensor:
    r"""JointEnergy $\sum_c \log(1 + e^{f_c})$, over the ``top_k`` largest terms if given.

    Uses ``softplus``, exact for logits of any size (``log(1 + exp(x))`` overflows in float32
    above x ≈ 88). Softplus is increasing, so the k largest terms are those of the k largest
    logits.
    """
    if top_k is not None and top_k < logits.shape[1]:
        logits = torch.topk(logits, top_k, dim=1, sorted=False).values
    return F.softplus(logits).sum(dim=1)


@register_scorer("energy")
class Energy(Scorer):
    r"""Energy score (Liu, Wang, Owens & Li, NeurIPS 2020), the negative free energy.

    $$ S(x) = -E(x; f) = T \cdot \log \sum_c e^{f_c(x)/T} $$

    Official code ``wetliu/energy_ood`` (``CIFAR/test.py``: ``T * logsumexp(output / T)``),
    default T = 1 as there. Always at least the maximum logit, and at most
    ``max logit + T log C``.

    Args:
        temperature: $T > 0$.

    Example:
        >>> import torch
        >>> from oodscore import Energy
        >>> Energy()(torch.tensor([[0.0, 0.0], [1e4, -1e4]]))
        tensor([6.9315e-01, 1.0000e+04])
    """

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = check_positive(temperature, "temperature")

    def score(self, logits: Tensor) -> Tensor:
        """Energy score of checked logits (N, C)."""
        return energy_score(logits, self.temperature)


@register_scorer("joint_energy")
class JointEnergy(Scorer):
    r"""JointEnergy for multi-label classifiers (Wang, Liu, Bocchieri & Li, NeurIPS 2021).

    $$ S(x) = \sum_{c=1}^{C} \log\left(1 + e^{f_c(x)}\right) $$

    the sum over labels of the negative free energy of each label's binary (sigmoid)
    classifier: an input that fires several labels confidently scores high. ``logits`` are
    the per-label logits of a model trained with binary cross-entropy. Official code
    ``deeplearning-wisc/multi-label-ood`` (``lib.py``, ``ood == "F"``): ``method="sum"`` is
    the default here; ``top_k=1`` is its ``method="max"`` variant, and ``top_k=k`` sums the k
    largest label energies. No temperature, as in the paper. SNoJoE (Mei et al., 2025)
    scores with this after training with `oodscore.spectral_normalize`.

    Args:
        top_k: Sum only the k largest per-label terms (``1 <= k``; ``k >= C`` sums all);
            ``None`` sums every label.

    Example:
        >>> import torch
        >>> from oodscore import JointEnergy
        >>> JointEnergy()(torch.tensor([[0.0, 0.0], [3.0, -20.0]]))
        tensor([1.3863, 3.0486])
        >>> JointEnergy(top_k=1)(torch.tensor([[3.0, 1.0]]))
        tensor([3.0486])
    """

    def __init__(self, *, top_k: int | None = None) -> None:
        self.top_k = None if top_k is None else check_int(top_k, "top_k")

    def check_input(self, logits: Tensor) -> None:
        """Check ``top_k <= C``."""
        if self.top_k is not None and self.top_k > logits.shape[1]:
            raise ValueError(
                f"Expected `top_k` to be at most the number of labels C = {logits.shape[1]}, "
                f"got top_k={self.top_k}."
            )

    def score(self, logits: Tensor) -> Tensor:
        """JointEnergy of checked per-label logits (N, C)."""
        return joint_energy_score(logits, self.top_k)
