r"""The calibrated decision path as an ``nn.Module``: logits -> scores, p-values, decisions.

Everything the decision needs after calibration is a buffer (the sorted calibration
scores, the per-group keys, sizes and ranks), so the module moves with ``.to(device)``,
saves with its ``state_dict`` and, for logit scorers whose formula is torch code, exports
with ``torch.export.export`` and decides exactly as `oodscore.detection.OODDetector` does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from oodscore._arrays import promote
from oodscore.detection.grouping import Grouping
from oodscore.functional.conformal import group_counts, group_p_values
from oodscore.scorers.base import Scorer

BUFFERS = ("calibration_scores", "keys", "offsets", "sizes", "ranks", "thresholds", "group_of")
"""The calibrated tensors, in `state_dict` order."""


class ConformalDecision(nn.Module):
    r"""Scores, Mondrian conformal p-values and rejections from calibrated buffers.

    For a test score $s$ in calibration group $g$ (one group when no grouping is used):

    $$ c = \#\{i \in g : s_i \le s\}, \qquad p = \frac{1 + c}{n_g + 1}, \qquad
       \text{reject} \iff c < k_g \iff p \le \alpha \iff s < t_g $$

    Args:
        scorer: The scorer whose ``score`` turns logits into scores in `forward`
            (``None``: only `decide` is used, on scores computed elsewhere).
        grouping: The group rule (``None``: one group).
        buffers: The tensors of `BUFFERS`, from calibration.

    Examples:
        >>> import torch
        >>> from oodscore import Energy
        >>> from oodscore.detection import OODDetector
        >>> g = torch.Generator().manual_seed(0)
        >>> detector = OODDetector("energy").calibrate(
        ...     logits=torch.randn(99, 3, generator=g), alpha=0.1)
        >>> module = detector.decision_module()
        >>> scores, p_values, reject = module(torch.tensor([[9.0, 0.0, 0.0], [-9.0, -9.0, -9.0]]))
        >>> p_values.tolist(), reject.tolist()
        ([1.0, 0.01], [False, True])
    """

    calibration_scores: Tensor
    keys: Tensor
    offsets: Tensor
    sizes: Tensor
    ranks: Tensor
    thresholds: Tensor
    group_of: Tensor

    def __init__(
        self, scorer: Scorer | None, grouping: Grouping | None, buffers: Mapping[str, Tensor]
    ) -> None:
        super().__init__()
        self.scorer = scorer
        self.grouping = grouping
        for name in BUFFERS:
            self.register_buffer(name, buffers[name].clone())

    def rule_groups(self, logits: Tensor) -> Tensor:
        """The rule's group of each row of (N, C) logits, or zeros without a rule (N,)."""
        if self.grouping is None:
            return torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
        return self.grouping.assign(logits)

    def decide(self, scores: Tensor, rule_groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """P-values (float64), rejections (bool) and calibration groups (int64) of scores (N,).

        Args:
            scores: Test scores (N,), higher = more in-distribution.
            rule_groups: Their groups under the rule (N,), int64.
        """
        groups = self.group_of[rule_groups]
        counts = group_counts(
            self.calibration_scores, self.keys, self.offsets, scores.detach(), groups
        )
        p_values = group_p_values(counts, self.sizes, groups)
        return p_values, counts < self.ranks[groups], groups

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(scores, p_values, reject)`` of (N, C) logits, without input checks."""
        if self.scorer is None:
            raise TypeError("This decision module has no scorer; call decide(scores, groups).")
        logits = promote(logits)
        scores = self.scorer.score(logits)
        p_values, reject, _ = self.decide(scores, self.rule_groups(logits))
        return scores, p_values, reject
