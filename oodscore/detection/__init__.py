"""From scores to decisions: calibrated OOD detection with a finite-sample guarantee.

- `detector`: `OODDetector`, split-conformal p-values and rejections for any scorer.
- `decision`: the calibrated decision path as an ``nn.Module`` (``torch.export``-able).
- `grouping`: group rules for Mondrian calibration (predicted class, class groups, label
  count); `mondrian`: refusing or pooling the groups too small for alpha.
- `fdr`: Benjamini–Hochberg selection of a batch's OOD inputs (`select_ood`).
- `rates`: rejection rates with Clopper–Pearson intervals (`RejectionRate`).
- `calibration`: fitting the scorer and turning ID scores into the calibrated tensors.
- `report`, `result`, `state`, `inputs`, `detector_file`: the calibration report, a batch's
  `Detection`, the tensor-only state, what a detector reads, and detector files.
"""

from oodscore.detection.decision import ConformalDecision
from oodscore.detection.detector import OODDetector
from oodscore.detection.detector_file import load_detector, save_detector
from oodscore.detection.fdr import select_ood
from oodscore.detection.grouping import (
    ByClassGroups,
    ByLabelCount,
    ByPredictedClass,
    Grouping,
    GroupingSpec,
    as_grouping,
)
from oodscore.detection.rates import RejectionRate
from oodscore.detection.report import CalibrationReport, GroupCalibration
from oodscore.detection.result import Detection

__all__ = [
    "ByClassGroups",
    "ByLabelCount",
    "ByPredictedClass",
    "CalibrationReport",
    "ConformalDecision",
    "Detection",
    "GroupCalibration",
    "Grouping",
    "GroupingSpec",
    "OODDetector",
    "RejectionRate",
    "as_grouping",
    "load_detector",
    "save_detector",
    "select_ood",
]
