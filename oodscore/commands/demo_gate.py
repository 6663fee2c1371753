"""The conformal-gate section of ``oodscore demo``: calibrate on held-out ID digits, measure.

Imported with `oodscore.commands.demo_tasks` when the demo runs.
"""

from __future__ import annotations

import torch

from oodscore.commands.demo_tasks import TaskResult
from oodscore.detection import OODDetector

GATE_SCORER = "energy"
"""The score the demo's conformal gate thresholds."""

GATE_ALPHA = 0.05
"""The gate's level: the promised bound on the ID rejection rate."""

GATE_SPLITS = 200
"""Random calibration/fresh splits the demo averages the ID rejection rate over."""


def decide(result: TaskResult, *, seed: int = 0) -> str:
    """The conformal-gate section: calibrate on held-out ID data, measure on fresh ID data.

    The single-label model's ID test digits are split at random into a calibration half and
    a fresh half, `GATE_SPLITS` times. Each split calibrates an `oodscore.OODDetector` at
    `GATE_ALPHA`; its rejection rate on the fresh half is the quantity the guarantee bounds
    on average over splits (by k/(n+1) <= alpha). The OOD detection rates of the last split
    are measured, not promised.
    """
    model = result.models["plain"]
    sets = result.sets
    with torch.no_grad():
        id_logits = model(sets.x_test)
        ood_logits = {name: model(x) for name, x in sets.ood.items()}
    n = len(id_logits) // 2
    rates = []
    detector = None
    fresh = id_logits
    for split in range(GATE_SPLITS):
        generator = torch.Generator().manual_seed(seed * GATE_SPLITS + split)
        order = torch.randperm(len(id_logits), generator=generator)
        calibration, fresh = id_logits[order[:n]], id_logits[order[n:]]
        detector = OODDetector(GATE_SCORER).calibrate(logits=calibration, alpha=GATE_ALPHA)
        rates.append(float(detector(fresh).reject.double().mean()))
    assert detector is not None
    k = detector.report.groups[0].rank
    mean = sum(rates) / len(rates)
    spread = (sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)) ** 0.5
    lines = [
        f"## From scores to decisions: a conformal gate ({GATE_SCORER}, alpha = {GATE_ALPHA})",
        "",
        f"The single-label model's {len(id_logits)} ID test digits, never trained on, are split "
        f"at random: {n} calibrate the gate, {len(fresh)} are fresh ID inputs. An input is "
        f"rejected when its conformal p-value is <= alpha, i.e. its score is below the "
        f"k = floor(alpha (n + 1)) = {k}-th lowest calibration score. Promise: a fresh ID "
        f"input is rejected with probability at most k/(n+1) = {k / (n + 1):.4f} <= alpha "
        "(over calibration sets; exchangeable ID data).",
        "",
        "Last split:",
        "",
        str(detector.report),
        "",
        f"- fresh ID digits: {detector.id_rejection_rate(logits=fresh)}",
        *(
            f"- {name}: {detector.ood_detection_rate(logits=logits)} (measured, not promised)"
            for name, logits in ood_logits.items()
        ),
        "",
        f"Over {GATE_SPLITS} random splits, the fresh ID rejection rate averages {mean:.4f} "
        f"(± {spread / len(rates) ** 0.5:.4f} standard error; one split's rate spreads by "
        f"{spread:.4f}) against the promised {k / (n + 1):.4f} <= alpha = {GATE_ALPHA}.",
    ]
    return "\n".join(lines)
