r"""The share of a labelled set that a detector rejects, with a Clopper–Pearson interval.

On OOD validation data it is the OOD detection rate (recall of OOD) at the calibrated
threshold; on fresh ID data, the ID rejection rate that calibration bounds by alpha.
Neither is guaranteed by calibration alone for OOD data: the interval says how well a
finite validation set pins the rate down, for inputs like those validated on.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest
from torch import Tensor

from oodscore._validation import UNIT_OPEN


@dataclass(frozen=True)
class RejectionRate:
    r"""Rejected inputs of a set: the count, the rate, and its exact (Clopper–Pearson) interval.

    The interval holds the true rate with probability at least ``confidence`` for inputs
    drawn independently from the validated distribution:
    ``scipy.stats.binomtest(rejected, total).proportion_ci(confidence, method="exact")``.

    Attributes:
        rejected: Inputs rejected.
        total: Inputs in the set.
        low: Lower end of the interval.
        high: Upper end of the interval.
        confidence: The interval's confidence level.
        label: What the rate is, for ``repr`` (``"OOD detection rate"``, ``"ID rejection
            rate"``).

    Examples:
        >>> import torch
        >>> from oodscore.detection import RejectionRate
        >>> RejectionRate.of(torch.tensor([True] * 90 + [False] * 10), label="OOD detection rate")
        OOD detection rate: 90 of 100 = 0.9000 (95% Clopper-Pearson interval 0.8238 to 0.9510)
    """

    rejected: int
    total: int
    low: float
    high: float
    confidence: float = 0.95
    label: str = "rejection rate"

    @classmethod
    def of(
        cls, reject: Tensor, *, confidence: float = 0.95, label: str = "rejection rate"
    ) -> RejectionRate:
        """The rate of a boolean mask of rejections (N,), N >= 1.

        Raises:
            ValueError: On an empty mask or ``confidence`` outside (0, 1).
        """
        level = UNIT_OPEN.check(confidence, "confidence")
        total = int(reject.numel())
        if total == 0:
            raise ValueError("Expected at least one input to measure a rejection rate, got none.")
        rejected = int(reject.sum())
        interval = binomtest(rejected, total).proportion_ci(confidence_level=level, method="exact")
        return cls(rejected, total, float(interval.low), float(interval.high), level, label)

    @property
    def rate(self) -> float:
        """``rejected / total``."""
        return self.rejected / self.total

    def __repr__(self) -> str:
        percent = f"{100 * self.confidence:g}%"
        return (
            f"{self.label}: {self.rejected} of {self.total} = {self.rate:.4f} ({percent} "
            f"Clopper-Pearson interval {self.low:.4f} to {self.high:.4f})"
        )
