"""Train-time OOD losses; each returns its weighted term: ``loss = task_loss + reg(...)``."""

from oodscore.regularizers.balanced_energy import BalancedEnergyLoss, estimate_class_prior
from oodscore.regularizers.base import (
    Regularizer,
    get_regularizer,
    list_regularizers,
    register_regularizer,
    unregister_regularizer,
)
from oodscore.regularizers.calibration import EnergyMargins, calibrate_margins
from oodscore.regularizers.edge import EDGELoss, dilation_distance, rank_outlier_sets
from oodscore.regularizers.energy import EnergyMarginLoss
from oodscore.regularizers.outlier_exposure import OutlierExposureLoss
from oodscore.regularizers.sparsity import SparsityLoss

__all__ = [
    "BalancedEnergyLoss",
    "EDGELoss",
    "EnergyMarginLoss",
    "EnergyMargins",
    "OutlierExposureLoss",
    "Regularizer",
    "SparsityLoss",
    "calibrate_margins",
    "dilation_distance",
    "estimate_class_prior",
    "get_regularizer",
    "list_regularizers",
    "rank_outlier_sets",
    "register_regularizer",
    "unregister_regularizer",
]
