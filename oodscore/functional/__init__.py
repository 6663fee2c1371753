"""The functional layer: every formula of oodscore once, as a pure torch function.

Scorers, regularizers and heads are thin classes that validate their inputs and call these.
The functions do no input checks; they take floating tensors in the compute dtype
(`oodscore._arrays.compute_dtype`: float16/bfloat16 as float32), which the classes provide.
"""

from oodscore.functional.edge import edge_gap_loss, singular_value_distance, top_singular_values
from oodscore.functional.energy import energy_score, free_energy, joint_energy_score
from oodscore.functional.energy_losses import (
    balanced_energy_loss,
    class_influence,
    energy_margin_loss,
    prior_weights,
    squared_hinges,
)
from oodscore.functional.group_softmax import (
    group_class_log_probability,
    group_log_softmax,
    group_others_log_probability,
    group_softmax_loss,
    group_softmax_predict,
    group_softmax_targets,
    mos_score,
    uses_padding,
)
from oodscore.functional.logit import max_logit_score
from oodscore.functional.mahalanobis import (
    class_means,
    gaussian_model,
    squared_mahalanobis,
    tied_covariance,
    whitening,
)
from oodscore.functional.outlier_exposure import OutlierTarget, outlier_exposure_loss
from oodscore.functional.softmax import entropy_score, gen_score, msp_score
from oodscore.functional.sparsity import sparsity_penalty

__all__ = [
    "OutlierTarget",
    "balanced_energy_loss",
    "class_influence",
    "class_means",
    "edge_gap_loss",
    "energy_margin_loss",
    "energy_score",
    "entropy_score",
    "free_energy",
    "gaussian_model",
    "gen_score",
    "group_class_log_probability",
    "group_log_softmax",
    "group_others_log_probability",
    "group_softmax_loss",
    "group_softmax_predict",
    "group_softmax_targets",
    "joint_energy_score",
    "max_logit_score",
    "mos_score",
    "msp_score",
    "outlier_exposure_loss",
    "prior_weights",
    "singular_value_distance",
    "sparsity_penalty",
    "squared_hinges",
    "squared_mahalanobis",
    "tied_covariance",
    "top_singular_values",
    "uses_padding",
    "whitening",
]
