"""oodscore: out-of-distribution detection for any PyTorch model that returns logits.

Every score follows one convention: **higher = more in-distribution**.

Example:
    >>> import torch
    >>> from oodscore import JointEnergy
    >>> JointEnergy()(torch.tensor([[4.0, -3.0, 2.5], [-5.0, -4.0, -6.0]]))
    tensor([6.6456, 0.0273])
"""

from oodscore.evaluation import evaluate, evaluate_logits
from oodscore.groups import GroupSpec, group_at_random, group_by_kmeans, group_by_taxonomy
from oodscore.metrics import OODMetrics, ood_metrics
from oodscore.nn import (
    FeatureCapture,
    GroupSoftmax,
    SpectralNormWrapper,
    attach_group_softmax,
    remove_spectral_normalization,
    spectral_normalize,
    spectral_norms,
)
from oodscore.regularizers import (
    BalancedEnergyLoss,
    EDGELoss,
    EnergyMarginLoss,
    OutlierExposureLoss,
    Regularizer,
    SparsityLoss,
    calibrate_margins,
    dilation_distance,
    estimate_class_prior,
    get_regularizer,
    list_regularizers,
    rank_outlier_sets,
    register_regularizer,
    unregister_regularizer,
)
from oodscore.report import Report
from oodscore.scorers import (
    GEN,
    MOS,
    MSP,
    Energy,
    Entropy,
    FittedScorer,
    JointEnergy,
    Mahalanobis,
    MaxLogit,
    ModelScorer,
    NotFittedError,
    RelativeMahalanobis,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    unregister_scorer,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "GEN",
    "MOS",
    "MSP",
    "BalancedEnergyLoss",
    "EDGELoss",
    "Energy",
    "EnergyMarginLoss",
    "Entropy",
    "FeatureCapture",
    "FittedScorer",
    "GroupSoftmax",
    "GroupSpec",
    "JointEnergy",
    "Mahalanobis",
    "MaxLogit",
    "ModelScorer",
    "NotFittedError",
    "OODMetrics",
    "OutlierExposureLoss",
    "Regularizer",
    "RelativeMahalanobis",
    "Report",
    "Scorer",
    "SparsityLoss",
    "SpectralNormWrapper",
    "__version__",
    "attach_group_softmax",
    "calibrate_margins",
    "dilation_distance",
    "estimate_class_prior",
    "evaluate",
    "evaluate_logits",
    "get_regularizer",
    "get_scorer",
    "group_at_random",
    "group_by_kmeans",
    "group_by_taxonomy",
    "list_regularizers",
    "list_scorers",
    "ood_metrics",
    "rank_outlier_sets",
    "register_regularizer",
    "register_scorer",
    "remove_spectral_normalization",
    "spectral_normalize",
    "spectral_norms",
    "unregister_regularizer",
    "unregister_scorer",
]
