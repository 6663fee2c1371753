"""`Detection`: what an `oodscore.detection.OODDetector` says about a batch."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from oodscore.detection.fdr import select_ood


@dataclass(frozen=True)
class Detection:
    r"""Scores, conformal p-values and decisions of a batch of N inputs (tensors).

    Attributes:
        scores: The scorer's scores (N,), higher = more in-distribution.
        p_values: Conformal p-values (N,), float64, in $[1/(n_g + 1), 1]$.
        reject: ``True`` where the input is rejected as OOD, $p \le \alpha$ (N,), bool.
        groups: The calibration group of each input (N,), int64: an index into
            ``group_names``.
        alpha: The level the detector was calibrated at.
        group_names: The calibration groups' names (``("all",)`` without grouping).

    Examples:
        >>> import torch
        >>> from oodscore.detection import OODDetector
        >>> g = torch.Generator().manual_seed(0)
        >>> detector = OODDetector("max_logit").calibrate(
        ...     logits=torch.randn(999, 4, generator=g), alpha=0.01)
        >>> result = detector(torch.tensor([[4.0, 0.0, 0.0, 0.0], [-3.0, -3.0, -3.0, -3.0]]))
        >>> result.reject, result.p_values
        (tensor([False,  True]), tensor([0.9990, 0.0010], dtype=torch.float64))
        >>> result.select_ood(fdr=0.1)
        tensor([False,  True])
    """

    scores: Tensor
    p_values: Tensor
    reject: Tensor
    groups: Tensor
    alpha: float
    group_names: tuple[str, ...]

    @property
    def accept(self) -> Tensor:
        """``~reject``: the inputs accepted as in-distribution (N,), bool."""
        return ~self.reject

    def select_ood(self, *, fdr: float) -> Tensor:
        """The inputs Benjamini–Hochberg selects as OOD at false discovery rate ``fdr``.

        See `oodscore.detection.select_ood` for the rule and its assumptions.
        """
        result: Tensor = select_ood(self.p_values, fdr=fdr)
        return result

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        rejected = int(self.reject.sum())
        return f"Detection({len(self)} inputs, {rejected} rejected at alpha = {self.alpha:g})"
