"""Snapshot of the public surface: changes to it must be deliberate (edit this list with them)."""

from __future__ import annotations

import importlib

import pytest

import oodscore

PUBLIC = {
    "oodscore": [
        "BalancedEnergyLoss",
        "EDGELoss",
        "Energy",
        "EnergyMarginLoss",
        "Entropy",
        "FeatureCapture",
        "FittedScorer",
        "GEN",
        "GroupSoftmax",
        "GroupSpec",
        "JointEnergy",
        "MOS",
        "MSP",
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
    ],
    "oodscore.nn": [
        "BatchNormBound",
        "FeatureCapture",
        "GroupSoftmax",
        "SpectralNormWrapper",
        "attach_group_softmax",
        "bound_batch_norm",
        "load_unnormalized_state_dict",
        "output_head",
        "remove_spectral_normalization",
        "spectral_normalize",
        "spectral_norms",
    ],
    "oodscore.metrics": [
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
    ],
    "oodscore.regularizers": [
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
    ],
    "oodscore.functional": [
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
    ],
    "oodscore.scorers": [
        "Energy",
        "Entropy",
        "FittedScorer",
        "GEN",
        "JointEnergy",
        "MOS",
        "MSP",
        "Mahalanobis",
        "MaxLogit",
        "ModelScorer",
        "NotFittedError",
        "RelativeMahalanobis",
        "Scorer",
        "energy_score",
        "entropy_score",
        "gen_score",
        "get_scorer",
        "joint_energy_score",
        "list_scorers",
        "max_logit_score",
        "mos_score",
        "msp_score",
        "register_scorer",
        "unregister_scorer",
    ],
    "oodscore.data": [
        "DemoSets",
        "DigitsSplit",
        "load_digits_split",
        "make_composites",
        "multi_label_sets",
        "single_label_sets",
        "uniform_noise",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_matches_snapshot(module_name):
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == PUBLIC[module_name]
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"


def test_registered_names_snapshot():
    assert oodscore.list_scorers() == [
        "energy",
        "entropy",
        "gen",
        "joint_energy",
        "mahalanobis",
        "max_logit",
        "mos",
        "msp",
        "relative_mahalanobis",
    ]
    assert oodscore.list_regularizers() == [
        "balanced_energy",
        "edge",
        "energy_margin",
        "outlier_exposure",
        "sparsity",
    ]


def test_import_has_no_heavy_side_effects():
    """Importing oodscore must not pull in optional or slow packages."""
    import subprocess
    import sys

    code = (
        "import sys, oodscore; "
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
