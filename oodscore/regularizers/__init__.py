"""Train-time OOD losses; each returns its weighted term: ``loss = task_loss + reg(...)``.

The classes validate and weight; the unweighted formulas are the pure functions of
`oodscore.functional`, re-exported here.
"""

from oodscore.functional import (
    balanced_energy_loss,
    class_influence,
    edge_gap_loss,
    energy_margin_loss,
    free_energy,
    outlier_exposure_loss,
    prior_weights,
    sparsity_penalty,
    squared_hinges,
)
from oodscore.regularizers.balanced_energy import BalancedEnergyLoss, estimate_class_prior
from oodscore.regularizers.base import (
    Regularizer,
    get_regularizer,
    list_regularizers,
    register_regularizer,
    unregister_regularizer,
)
from oodscore.regularizers.calibration import EnergyMargins, calibrate_margins
from oodscore.regularizers.edge import EDGELoss
from oodscore.regularizers.energy import EnergyMarginLoss
from oodscore.regularizers.outlier_exposure import OutlierExposureLoss
from oodscore.regularizers.outlier_selection import dilation_distance, rank_outlier_sets
from oodscore.regularizers.sparsity import SparsityLoss

__all__ = [
    "BalancedEnergyLoss",
    "EDGELoss",
    "EnergyMarginLoss",
    "EnergyMargins",
    "OutlierExposureLoss",
    "Regularizer",
    "SparsityLoss",
    "balanced_energy_loss",
    "calibrate_margins",
    "class_influence",
    "dilation_distance",
    "edge_gap_loss",
    "energy_margin_loss",
    "estimate_class_prior",
    "free_energy",
    "get_regularizer",
    "list_regularizers",
    "outlier_exposure_loss",
    "prior_weights",
    "rank_outlier_sets",
    "register_regularizer",
    "sparsity_penalty",
    "squared_hinges",
    "unregister_regularizer",
]
