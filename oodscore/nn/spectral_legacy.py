"""torch's legacy hook-based ``spectral_norm``: its state-dict keys, and its hook on a layer.

``torch.nn.utils.spectral_norm`` (the function SNoJoE's code calls) keeps a layer's weight as
the parameter ``weight_orig`` and its power-iteration vectors as the buffers ``weight_u``,
``weight_v``. ``torch.nn.utils.parametrizations.spectral_norm`` and `SpectralNormWrapper` keep
the same three tensors, with the same shapes and meaning, under other keys:

| legacy hook | parametrization |
|---|---|
| ``<layer>.weight_orig`` | ``<layer>.parametrizations.weight.original`` |
| ``<layer>.weight_u`` | ``<layer>.parametrizations.weight.0._u`` |
| ``<layer>.weight_v`` | ``<layer>.parametrizations.weight.0._v`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

try:  # deprecated upstream: if a future torch drops it, no layer carries its hook
    from torch.nn.utils.spectral_norm import SpectralNorm as _LegacyHook

    _LEGACY_HOOKS: tuple[type, ...] = (_LegacyHook,)
except ImportError:  # pragma: no cover - depends on the torch version
    _LEGACY_HOOKS = ()

LEGACY_KEYS: dict[str, str] = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}
"""Legacy key → parametrization key, both relative to the layer's prefix."""


def has_legacy_keys(state_dict: Mapping[str, Any], prefix: str) -> bool:
    """Whether ``state_dict`` holds any legacy key of the layer at ``prefix`` (``"a.b."``)."""
    return any(prefix + key in state_dict for key in LEGACY_KEYS)


def rename_legacy_keys(
    state_dict: dict[str, Any], prefix: str, *, refuse: str | None = None
) -> str | None:
    """Move one layer's legacy entries to the parametrization's keys, in place.

    Args:
        state_dict: The state dict being loaded (modified).
        prefix: The layer's prefix, ``""`` or ending in ``"."``.
        refuse: Why this layer cannot take legacy entries; ``None`` when it can.

    Returns:
        ``None`` when done (or when there is no legacy entry); otherwise a message naming
        the layer and the keys at fault, for ``load_state_dict``'s error list.
    """
    present = [key for key in LEGACY_KEYS if prefix + key in state_dict]
    if not present:
        return None
    layer = repr(prefix[:-1])
    if refuse is not None:
        return (
            f"Cannot load the keys of torch.nn.utils.spectral_norm ({prefix}weight_orig, "
            f"{prefix}weight_u, {prefix}weight_v) into layer {layer}: {refuse}."
        )
    missing = [prefix + key for key in LEGACY_KEYS if key not in present]
    if missing:
        return (
            f"The state dict holds {[prefix + key for key in present]} of "
            f"torch.nn.utils.spectral_norm for layer {layer} but not {missing}."
        )
    clashing = [prefix + key for key in LEGACY_KEYS.values() if prefix + key in state_dict]
    if clashing:
        return (
            f"The state dict holds both the legacy keys of layer {layer} "
            f"({prefix}weight_orig, ...) and {clashing}; keep one of the two."
        )
    for old, new in LEGACY_KEYS.items():
        state_dict[prefix + new] = state_dict.pop(prefix + old)
    return None


def has_legacy_hook(module: nn.Module) -> bool:
    """Whether ``torch.nn.utils.spectral_norm`` (the legacy hook) is applied to ``module``."""
    return any(isinstance(hook, _LEGACY_HOOKS) for hook in module._forward_pre_hooks.values())
