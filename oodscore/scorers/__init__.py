"""Post-hoc OOD scores: thin classes over `oodscore.functional`, and their registry."""

from oodscore.functional import (
    energy_score,
    entropy_score,
    gen_score,
    joint_energy_score,
    max_logit_score,
    mos_score,
    msp_score,
)
from oodscore.scorers.base import (
    FittedScorer,
    NotFittedError,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    unregister_scorer,
)
from oodscore.scorers.composed import ComposesLogitScorer
from oodscore.scorers.energy import Energy, JointEnergy
from oodscore.scorers.head import UsesHead
from oodscore.scorers.logit import MaxLogit
from oodscore.scorers.mahalanobis import Mahalanobis, RelativeMahalanobis
from oodscore.scorers.model_scorer import ModelScorer
from oodscore.scorers.mos import MOS
from oodscore.scorers.softmax import GEN, MSP, Entropy

__all__ = [
    "GEN",
    "MOS",
    "MSP",
    "ComposesLogitScorer",
    "Energy",
    "Entropy",
    "FittedScorer",
    "JointEnergy",
    "Mahalanobis",
    "MaxLogit",
    "ModelScorer",
    "NotFittedError",
    "RelativeMahalanobis",
    "Scorer",
    "UsesHead",
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
]
