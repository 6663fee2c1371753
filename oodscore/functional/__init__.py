"""The functional layer: every formula of oodscore once, as a pure torch function.

Scorers, regularizers and heads are thin classes that validate their inputs and call these.
The functions do no input checks; they take floating tensors in the compute dtype
(`oodscore._arrays.compute_dtype`: float16/bfloat16 as float32), which the classes provide.
"""

from oodscore.functional.conformal import (
    conformal_p_values,
    conformal_rank,
    conformal_threshold,
    group_counts,
    group_p_values,
    group_ranks,
    group_thresholds,
    grouped_calibration,
    min_calibration_size,
)
from oodscore.functional.edge import (
    GapTerms,
    edge_gap_loss,
    edge_gap_terms,
    singular_value_distance,
    top_singular_values,
)
from oodscore.functional.energy import energy_score, free_energy, joint_energy_score
from oodscore.functional.energy_losses import (
    EnergyLossTerms,
    HingeTerms,
    balanced_energy_loss,
    balanced_energy_terms,
    class_influence,
    energy_margin_loss,
    energy_margin_terms,
    hinge_total,
    prior_weights,
    squared_hinge_terms,
    squared_hinges,
)
from oodscore.functional.gradnorm import gradnorm_score
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
from oodscore.functional.kl_matching import kl_log_templates, kl_matching_score
from oodscore.functional.knn import knn_score, kth_nearest, unit_rows
from oodscore.functional.logit import max_logit_score, sum_logit_score
from oodscore.functional.mahalanobis import (
    class_means,
    gaussian_model,
    squared_mahalanobis,
    tied_covariance,
    whitening,
)
from oodscore.functional.odin import (
    odin_perturb,
    odin_sigmoid_loss,
    odin_sigmoid_score,
    odin_sign,
    odin_softmax_loss,
)
from oodscore.functional.outlier_exposure import OutlierTarget, outlier_exposure_loss
from oodscore.functional.outlier_models import (
    isolation_forest,
    local_outlier_factor,
    outlier_model_scores,
)
from oodscore.functional.shaping import (
    ash_binarize,
    ash_prune,
    ash_sharpen,
    dice_mask,
    feature_mean,
    head_scores,
    kept_count,
    linear_percentile,
    react_clip,
    scale_exponent,
    sharpening_exponent,
)
from oodscore.functional.sigmoid import max_sigmoid_score, sum_sigmoid_score
from oodscore.functional.softmax import entropy_score, gen_score, msp_score
from oodscore.functional.sparsity import active_fraction, sparsity_penalty
from oodscore.functional.vim import (
    centred_covariance,
    null_space,
    principal_dimension,
    residual_norm,
    vim_alpha,
    vim_origin,
    vim_score,
)

__all__ = [
    "EnergyLossTerms",
    "GapTerms",
    "HingeTerms",
    "OutlierTarget",
    "active_fraction",
    "ash_binarize",
    "ash_prune",
    "ash_sharpen",
    "balanced_energy_loss",
    "balanced_energy_terms",
    "centred_covariance",
    "class_influence",
    "class_means",
    "conformal_p_values",
    "conformal_rank",
    "conformal_threshold",
    "dice_mask",
    "edge_gap_loss",
    "edge_gap_terms",
    "energy_margin_loss",
    "energy_margin_terms",
    "energy_score",
    "entropy_score",
    "feature_mean",
    "free_energy",
    "gaussian_model",
    "gen_score",
    "gradnorm_score",
    "group_class_log_probability",
    "group_counts",
    "group_log_softmax",
    "group_others_log_probability",
    "group_p_values",
    "group_ranks",
    "group_softmax_loss",
    "group_softmax_predict",
    "group_softmax_targets",
    "group_thresholds",
    "grouped_calibration",
    "head_scores",
    "hinge_total",
    "isolation_forest",
    "joint_energy_score",
    "kept_count",
    "kl_log_templates",
    "kl_matching_score",
    "knn_score",
    "kth_nearest",
    "linear_percentile",
    "local_outlier_factor",
    "max_logit_score",
    "max_sigmoid_score",
    "min_calibration_size",
    "mos_score",
    "msp_score",
    "null_space",
    "odin_perturb",
    "odin_sigmoid_loss",
    "odin_sigmoid_score",
    "odin_sign",
    "odin_softmax_loss",
    "outlier_exposure_loss",
    "outlier_model_scores",
    "principal_dimension",
    "prior_weights",
    "react_clip",
    "residual_norm",
    "scale_exponent",
    "sharpening_exponent",
    "singular_value_distance",
    "sparsity_penalty",
    "squared_hinge_terms",
    "squared_hinges",
    "squared_mahalanobis",
    "sum_logit_score",
    "sum_sigmoid_score",
    "tied_covariance",
    "top_singular_values",
    "unit_rows",
    "uses_padding",
    "vim_alpha",
    "vim_origin",
    "vim_score",
    "whitening",
]
