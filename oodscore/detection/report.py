r"""What calibration gave, per group: sizes, ranks, thresholds and rejection rates.

For each calibration group $g$ (one group without Mondrian calibration): its $n_g$
calibration scores, the rank $k_g = \lfloor \alpha (n_g + 1) \rfloor$, the threshold
$t_g$ (the $k_g$-th smallest score), the share of its own calibration scores below $t_g$,
and $k_g / (n_g + 1) \le \alpha$, the expected rejection rate of a fresh ID input of the
group (the mean of its Beta$(k_g, n_g + 1 - k_g)$ law for continuous scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from oodscore.detection.mondrian import REST
from oodscore.functional.conformal import group_counts


@dataclass(frozen=True)
class GroupCalibration:
    r"""One calibration group's line of a `CalibrationReport`.

    Attributes:
        name: The group's name (``"all"`` without grouping, ``"rest"`` for pooled groups).
        members: The rule's groups it holds (itself, or those pooled into ``"rest"``).
        size: $n_g$, its calibration scores.
        rank: $k_g = \\lfloor \\alpha (n_g + 1) \\rfloor$.
        threshold: $t_g$: scores below it are rejected.
        calibration_rate: The share of its calibration scores below $t_g$, $\\le (k_g-1)/n_g$.
        expected_rate: $k_g / (n_g + 1)$, the expected rejection rate of a fresh ID input.
    """

    name: str
    members: tuple[str, ...]
    size: int
    rank: int
    threshold: float
    calibration_rate: float
    expected_rate: float


@dataclass(frozen=True)
class CalibrationReport:
    """The calibration of an `oodscore.detection.OODDetector`, one line per group.

    Attributes:
        alpha: The level.
        scorer: The scorer, as ``repr`` shows it.
        groups: One `GroupCalibration` per calibration group.

    Examples:
        >>> import torch
        >>> from oodscore.detection import OODDetector
        >>> logits = torch.randn(199, 3, generator=torch.Generator().manual_seed(0))
        >>> print(OODDetector("msp").calibrate(logits=logits, alpha=0.05).report)
        Calibrated MSP(temperature=1.0) at alpha = 0.05 (reject when p <= alpha):
        | group | n | k | threshold | rejected (calibration) | expected k/(n+1) |
        |---|---:|---:|---:|---:|---:|
        | all | 199 | 10 | 0.39601 | 0.0452 | 0.0500 |
    """

    alpha: float
    scorer: str
    groups: tuple[GroupCalibration, ...]

    @property
    def num_calibration(self) -> int:
        """All calibration scores, over every group."""
        return sum(group.size for group in self.groups)

    def __str__(self) -> str:
        lines = [
            f"Calibrated {self.scorer} at alpha = {self.alpha:g} (reject when p <= alpha):",
            "| group | n | k | threshold | rejected (calibration) | expected k/(n+1) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for g in self.groups:
            name = g.name if g.members == (g.name,) else f"{g.name} ({', '.join(g.members)})"
            lines.append(
                f"| {name} | {g.size} | {g.rank} | {g.threshold:.5g} | "
                f"{g.calibration_rate:.4f} | {g.expected_rate:.4f} |"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()


def build_report(
    alpha: float, scorer: str, buffers: dict[str, Tensor], rule_names: list[str]
) -> CalibrationReport:
    """The report of calibrated buffers (see `oodscore.detection.decision.BUFFERS`).

    Args:
        alpha: The level.
        scorer: The scorer's ``repr``.
        buffers: The calibrated tensors.
        rule_names: The names of the rule's groups (``["all"]`` without a rule).
    """
    sizes, ranks, thresholds = buffers["sizes"], buffers["ranks"], buffers["thresholds"]
    group_of = buffers["group_of"].tolist()
    count = len(sizes)
    # scores strictly below t_g are those at or below the float just below it
    below = torch.nextafter(thresholds, torch.full_like(thresholds, -math.inf))
    rejected = group_counts(
        buffers["calibration_scores"],
        buffers["keys"],
        buffers["offsets"],
        below,
        torch.arange(count, dtype=torch.int64),
    )
    groups = []
    for k in range(count):
        members = tuple(rule_names[g] for g, target in enumerate(group_of) if target == k)
        size, rank = int(sizes[k]), int(ranks[k])
        groups.append(
            GroupCalibration(
                name=members[0] if len(members) == 1 else REST,
                members=members,
                size=size,
                rank=rank,
                threshold=float(thresholds[k]),
                calibration_rate=int(rejected[k]) / size,
                expected_rate=rank / (size + 1),
            )
        )
    return CalibrationReport(alpha, scorer, tuple(groups))
