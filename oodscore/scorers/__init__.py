"""Post-hoc OOD scores: each a pure function (math on a checked tensor) and a thin class."""

from oodscore.scorers.base import (
    NotFittedError,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    unregister_scorer,
)
from oodscore.scorers.energy import Energy, JointEnergy, energy_score, joint_energy_score
from oodscore.scorers.logit import MaxLogit, max_logit_score
from oodscore.scorers.mos import MOS, mos_score
from oodscore.scorers.softmax import GEN, MSP, Entropy, entropy_score, gen_score, msp_score

__all__ = [
    "GEN",
    "MOS",
    "MSP",
    "Energy",
    "Entropy",
    "JointEnergy",
    "MaxLogit",
    "NotFittedError",
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
]
