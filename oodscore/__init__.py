"""oodscore: out-of-distribution detection for any PyTorch model that returns logits.

Every score follows one convention: **higher = more in-distribution**.

Examples:
    >>> import torch
    >>> from oodscore import JointEnergy
    >>> JointEnergy()(torch.tensor([[4.0, -3.0, 2.5], [-5.0, -4.0, -6.0]]))
    tensor([6.6456, 0.0273])

The public names are imported on first use (PEP 562): ``import oodscore`` itself loads
nothing heavy, so that the command line starts fast (``oodscore score --help`` needs no
torch). Every name of `__all__` is there as ever: ``from oodscore import Energy``,
``oodscore.Energy`` and ``dir(oodscore)`` work, and importing `oodscore.scorers` (which any
scorer name does) registers every scorer.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oodscore.detection import (
        ByClassGroups,
        ByLabelCount,
        ByPredictedClass,
        CalibrationReport,
        Detection,
        OODDetector,
        RejectionRate,
        select_ood,
    )
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
        ASH,
        DICE,
        GEN,
        KNN,
        LOF,
        MOS,
        MSP,
        ODIN,
        SCALE,
        Energy,
        Entropy,
        FittedScorer,
        GradNorm,
        IsolationForest,
        JointEnergy,
        KLMatching,
        Mahalanobis,
        MaxLogit,
        MaxSigmoid,
        ModelScorer,
        NotFittedError,
        ReAct,
        RelativeMahalanobis,
        Scorer,
        SumLogit,
        SumSigmoid,
        ViM,
        get_scorer,
        list_scorers,
        register_scorer,
        unregister_scorer,
    )

__version__ = "0.2.0"

__all__ = [
    "ASH",
    "DICE",
    "GEN",
    "KNN",
    "LOF",
    "MOS",
    "MSP",
    "ODIN",
    "SCALE",
    "BalancedEnergyLoss",
    "ByClassGroups",
    "ByLabelCount",
    "ByPredictedClass",
    "CalibrationReport",
    "Detection",
    "EDGELoss",
    "Energy",
    "EnergyMarginLoss",
    "Entropy",
    "FeatureCapture",
    "FittedScorer",
    "GradNorm",
    "GroupSoftmax",
    "GroupSpec",
    "IsolationForest",
    "JointEnergy",
    "KLMatching",
    "Mahalanobis",
    "MaxLogit",
    "MaxSigmoid",
    "ModelScorer",
    "NotFittedError",
    "OODDetector",
    "OODMetrics",
    "OutlierExposureLoss",
    "ReAct",
    "Regularizer",
    "RejectionRate",
    "RelativeMahalanobis",
    "Report",
    "Scorer",
    "SparsityLoss",
    "SpectralNormWrapper",
    "SumLogit",
    "SumSigmoid",
    "ViM",
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
    "select_ood",
    "spectral_normalize",
    "spectral_norms",
    "unregister_regularizer",
    "unregister_scorer",
]

_EXPORTS: dict[str, tuple[str, ...]] = {
    "oodscore.detection": (
        "ByClassGroups",
        "ByLabelCount",
        "ByPredictedClass",
        "CalibrationReport",
        "Detection",
        "OODDetector",
        "RejectionRate",
        "select_ood",
    ),
    "oodscore.evaluation": ("evaluate", "evaluate_logits"),
    "oodscore.groups": ("GroupSpec", "group_at_random", "group_by_kmeans", "group_by_taxonomy"),
    "oodscore.metrics": ("OODMetrics", "ood_metrics"),
    "oodscore.nn": (
        "FeatureCapture",
        "GroupSoftmax",
        "SpectralNormWrapper",
        "attach_group_softmax",
        "remove_spectral_normalization",
        "spectral_normalize",
        "spectral_norms",
    ),
    "oodscore.regularizers": (
        "BalancedEnergyLoss",
        "EDGELoss",
        "EnergyMarginLoss",
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
    ),
    "oodscore.report": ("Report",),
    "oodscore.scorers": (
        "ASH",
        "DICE",
        "GEN",
        "KNN",
        "LOF",
        "MOS",
        "MSP",
        "ODIN",
        "SCALE",
        "Energy",
        "Entropy",
        "FittedScorer",
        "GradNorm",
        "IsolationForest",
        "JointEnergy",
        "KLMatching",
        "Mahalanobis",
        "MaxLogit",
        "MaxSigmoid",
        "ModelScorer",
        "NotFittedError",
        "ReAct",
        "RelativeMahalanobis",
        "Scorer",
        "SumLogit",
        "SumSigmoid",
        "ViM",
        "get_scorer",
        "list_scorers",
        "register_scorer",
        "unregister_scorer",
    ),
}
"""Where each public name is defined: ``{module: names}``."""

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


if not TYPE_CHECKING:  # type checkers read the imports above, and flag unknown names

    def __getattr__(name: str) -> Any:
        """Import a public name, or a submodule (``oodscore.metrics``), on first use."""
        module = _MODULE_OF.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
            value = importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value  # later lookups do not come here
        return value


def __dir__() -> list[str]:
    """The module's names with every public name, imported or not."""
    return sorted({*globals(), *__all__})
