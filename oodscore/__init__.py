"""oodscore: out-of-distribution detection for any PyTorch model that returns logits.

Every score follows one convention: **higher = more in-distribution**.

Example:
    >>> import torch
    >>> from oodscore import JointEnergy
    >>> JointEnergy()(torch.tensor([[4.0, -3.0, 2.5], [-5.0, -4.0, -6.0]]))
    tensor([6.6456, 0.0273])
"""

from oodscore.regularizers import (
    Regularizer,
    get_regularizer,
    list_regularizers,
    register_regularizer,
    unregister_regularizer,
)
from oodscore.scorers import (
    GEN,
    MSP,
    Energy,
    Entropy,
    JointEnergy,
    MaxLogit,
    NotFittedError,
    Scorer,
    get_scorer,
    list_scorers,
    register_scorer,
    unregister_scorer,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "GEN",
    "MSP",
    "Energy",
    "Entropy",
    "JointEnergy",
    "MaxLogit",
    "NotFittedError",
    "Regularizer",
    "Scorer",
    "__version__",
    "get_regularizer",
    "get_scorer",
    "list_regularizers",
    "list_scorers",
    "register_regularizer",
    "register_scorer",
    "unregister_regularizer",
    "unregister_scorer",
]
