"""OOD detection metrics: exact functions and the streaming, distributed `OODMetrics`.

ID is the positive class and higher scores mean more in-distribution; see
`oodscore.metrics.functional` for the conventions shared by every metric here.
"""

from oodscore.metrics.functional import (
    FPR_RULES,
    FprRule,
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_tpr,
    fpr_key,
    ood_metrics,
    roc_curve,
)
from oodscore.metrics.streaming import OODMetrics

__all__ = [
    "FPR_RULES",
    "FprRule",
    "OODMetrics",
    "aupr_in",
    "aupr_out",
    "auroc",
    "fpr_at_tpr",
    "fpr_key",
    "ood_metrics",
    "roc_curve",
]
