"""Which layers `spectral_normalize` chooses, and the checks on each before it normalizes.

A layer is chosen by selectors (types, name patterns, predicates); it is refused when it is
lazy, has a non-finite weight, or already carries spectral normalization: ours, torch's
parametrization or torch's legacy hook.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrizations, parametrize

from oodscore.nn._modules import original_weight, weight_parametrizations
from oodscore.nn._spectral_settings import Mode
from oodscore.nn.spectral_batchnorm import BatchNormBound
from oodscore.nn.spectral_legacy import has_legacy_hook
from oodscore.nn.spectral_norm import SpectralNormWrapper

Selector = Union[type[nn.Module], str, Callable[[str, nn.Module], bool]]  # noqa: UP007
"""A layer type (``isinstance``), a name pattern (`fnmatch` on the qualified name, e.g.
``"layer1.*"``) or a predicate ``(name, module) -> bool``."""

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

# torch's own parametrization class is private, so it is looked up by attribute rather than
# imported, and matched with isinstance (a subclass counts, a look-alike name does not). If a
# future torch renames it, the tuple is empty and only our wrapper is recognised; the test that
# normalizes a model already carrying torch's parametrizations.spectral_norm then fails and
# says so.
_TORCH_SPECTRAL_NORM: tuple[type, ...] = tuple(
    cls for cls in (getattr(parametrizations, "_SpectralNorm", None),) if isinstance(cls, type)
)
_SPECTRAL_NORMS = (SpectralNormWrapper, *_TORCH_SPECTRAL_NORM)


def chosen_layers(
    model: nn.Module,
    included: list[Selector],
    excluded: list[Selector],
    head: str | None,
    mode: Mode,
) -> list[nn.Module]:
    """The layers to normalize, checked: none lazy, already normalized or non-finite."""
    chosen = []
    for name, module in model.named_modules():
        if isinstance(module, (SpectralNormWrapper, parametrize.ParametrizationList)):
            continue
        if not _matches(included, name, module) or _matches(excluded, name, module):
            continue
        if name == head:
            continue
        if has_legacy_hook(module):
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) carries the legacy "
                "torch.nn.utils.spectral_norm hook; call torch.nn.utils.remove_spectral_norm "
                "on it first, or load its state dict into a normalized copy of the plain model."
            )
        parametrized = parametrize.is_parametrized(module, "weight")
        # Read the stored weight: computing a parametrized one could run a power iteration.
        weight = original_weight(module) if parametrized else getattr(module, "weight", None)
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) is lazy and has no weight yet: "
                "run one forward pass before spectral_normalize."
            )
        if not isinstance(weight, Tensor) or weight.ndim < 2:
            continue
        if parametrized and any(
            isinstance(p, _SPECTRAL_NORMS) for p in weight_parametrizations(module)
        ):
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) is already spectrally normalized; "
                "call remove_spectral_normalization(model) first to change the settings."
            )
        if parametrized and mode == "operator":
            raise ValueError(
                f"Layer {name!r} already has a parametrization of its weight; operator mode "
                "needs to be the only one."
            )
        if not bool(torch.isfinite(weight).all()):
            raise ValueError(
                f"Expected the weight of layer {name!r} ({type(module).__name__}) to be "
                "finite, but it contains NaN or ±inf."
            )
        chosen.append(module)
    return chosen


def as_selectors(value: Selector | Sequence[Selector] | None, name: str) -> list[Selector]:
    if value is None:
        return []
    items: list[Any] = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    for item in items:
        if not (isinstance(item, (type, str)) or callable(item)):
            raise TypeError(
                f"Expected `{name}` to hold layer types, name patterns or predicates "
                f"(name, module) -> bool, got {item!r}."
            )
    return items


def _matches(selectors: Iterable[Selector], name: str, module: nn.Module) -> bool:
    for selector in selectors:
        if isinstance(selector, type):
            if isinstance(module, selector):
                return True
        elif isinstance(selector, str):
            if fnmatch.fnmatchcase(name, selector):
                return True
        elif selector(name, module):
            return True
    return False


def affine_batch_norms(model: nn.Module) -> list[_BatchNorm]:
    found = []
    for name, module in model.named_modules():
        is_batch_norm = isinstance(module, _BatchNorm)
        if is_batch_norm and module.affine and module.running_var is not None:
            if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, BatchNormBound) for p in weight_parametrizations(module)
            ):
                raise ValueError(
                    f"Batch norm {name!r} is already bounded; call "
                    "remove_spectral_normalization(model) first."
                )
            found.append(module)
    return found
