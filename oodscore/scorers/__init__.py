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
from oodscore.scorers.ash import ASH, SCALE
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
from oodscore.scorers.dice import DICE
from oodscore.scorers.energy import Energy, JointEnergy
from oodscore.scorers.gradnorm import GradNorm
from oodscore.scorers.head import UsesHead
from oodscore.scorers.kl_matching import KLMatching
from oodscore.scorers.knn import KNN
from oodscore.scorers.logit import MaxLogit, SumLogit
from oodscore.scorers.mahalanobis import Mahalanobis, RelativeMahalanobis
from oodscore.scorers.model_scorer import ModelScorer
from oodscore.scorers.mos import MOS
from oodscore.scorers.odin import ODIN
from oodscore.scorers.outlier_models import LOF, IsolationForest
from oodscore.scorers.react import ReAct
from oodscore.scorers.sigmoid import MaxSigmoid, SumSigmoid
from oodscore.scorers.softmax import GEN, MSP, Entropy
from oodscore.scorers.vim import ViM

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
    "ComposesLogitScorer",
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
    "UsesHead",
    "ViM",
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
