"""Modules: spectral normalization, the MOS group-softmax head, feature capture."""

from oodscore.nn._modules import output_head
from oodscore.nn.features import FeatureCapture
from oodscore.nn.group_softmax import GroupSoftmax, attach_group_softmax
from oodscore.nn.spectral_batchnorm import BatchNormBound, bound_batch_norm
from oodscore.nn.spectral_model import (
    load_unnormalized_state_dict,
    remove_spectral_normalization,
    spectral_normalize,
    spectral_norms,
)
from oodscore.nn.spectral_norm import SpectralNormWrapper

__all__ = [
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
]
