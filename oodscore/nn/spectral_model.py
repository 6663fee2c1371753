r"""Spectral normalization of a whole model: choose the layers, register, report, remove.

`spectral_normalize` registers `SpectralNormWrapper` (and, on request, `BatchNormBound`) on
the layers `oodscore.nn._spectral_layers` chooses; `spectral_norms` reports the estimated
$\sigma$ of each; `remove_spectral_normalization` gives the plain model back;
`load_unnormalized_state_dict` loads plain weights (or a checkpoint of torch's legacy
``spectral_norm``) into a normalized model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.utils import parametrize

from oodscore.nn._eval_cache import read_through_cache
from oodscore.nn._modules import eval_mode, original_weight, output_head, weight_parametrizations
from oodscore.nn._spectral_layers import (
    DEFAULT_TYPES,
    Selector,
    affine_batch_norms,
    as_selectors,
    chosen_layers,
)
from oodscore.nn._spectral_settings import Mode, check_flag, check_settings
from oodscore.nn.spectral_batchnorm import BatchNormBound, bound_batch_norm
from oodscore.nn.spectral_legacy import has_legacy_keys
from oodscore.nn.spectral_norm import SpectralNormWrapper


def spectral_normalize(
    model: nn.Module,
    *,
    coeff: float | None = None,
    n_power_iterations: int = 1,
    mode: Mode = "reshape",
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    normalize_head: bool = False,
    batch_norm: bool = False,
    example_input: Any = None,
    eps: float = 1e-12,
    warmup_iterations: int | None = None,
    legacy: bool = False,
    eval_cache: bool = True,
) -> nn.Module:
    r"""Register `SpectralNormWrapper` on the weights of a model's layers, in place.

    $$ W \mapsto \frac{W}{\sigma(W)} \quad (\texttt{coeff=None}), \qquad
       W \mapsto \frac{W}{\max(1, \sigma(W)/c)} \quad (\texttt{coeff=}c) $$

    Which layers: every module matched by ``include`` (default: ``Linear``, ``Conv1d/2d/3d``
    and ``ConvTranspose1d/2d/3d``) that has a ``weight`` with at least 2 dimensions, minus
    those matched by ``exclude``, minus the **output head** (the last ``nn.Linear`` in module
    order, see `output_head`) unless ``normalize_head=True``. A classifier whose head is
    something else (a 1×1 convolution, say) should name it in ``exclude``.
    SNoJoE is ``spectral_normalize(model, include=nn.Conv2d, legacy=True)`` (the same
    buffers, weights and outputs, step for step, as the legacy ``torch.nn.utils.spectral_norm``
    its code calls, on the same layers from the same random state); without ``legacy`` the
    outputs are those of ``torch.nn.utils.parametrizations.spectral_norm``. DUE is
    ``spectral_normalize(model, coeff=3.0, mode="operator", batch_norm=True)``.

    Args:
        model: Any ``nn.Module``; modified in place and returned.
        coeff: ``None`` for hard normalization; $c > 0$ for the soft bound.
        n_power_iterations: Power iterations per training forward.
        mode: ``"reshape"`` ($\sigma$ of the weight as an ``(out, -1)`` matrix) or
            ``"operator"`` ($\sigma$ of each convolution as an operator on its input
            shape); see `SpectralNormWrapper`.
        include: Layer types, name patterns or predicates ``(name, module) -> bool``
            choosing the layers (a layer is chosen when any of them matches).
        exclude: The same kinds of selectors; a matching layer is left alone.
        normalize_head: Normalize the output head too when it is chosen.
        batch_norm: Also bound the Lipschitz constant of every affine ``BatchNorm1d/2d/3d``
            (not filtered by ``include``/``exclude``) by ``coeff`` (1 when ``coeff`` is
            ``None``) with `oodscore.nn.spectral_batchnorm.BatchNormBound`.
        example_input: In operator mode, an input of the model to run once (in eval mode,
            without gradients; train/eval flags are restored) so that every wrapper knows
            its input shape now. Without it, the first forward does that.
        eps: Added to norms in the power iteration.
        warmup_iterations: Power iterations when ``u`` and ``v`` are created; ``None``: 15
            (torch's parametrization), or 0 with ``legacy=True``.
        legacy: Follow the legacy hook-based ``torch.nn.utils.spectral_norm`` step for step
            (no warm-up, $v$ updated before $u$); hard normalization in reshape mode only.
            Either way, in reshape mode, the model loads state dicts with that function's
            keys (``weight_orig``, ``weight_u``, ``weight_v``).
        eval_cache: Keep each normalized weight between eval forwards while the weight and
            ``u``, ``v`` are unchanged, instead of computing it at every forward (see
            `SpectralNormWrapper`); ``False`` for code that edits weights in place where
            torch's version counters do not see it (``.data``, fused optimizer steps).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On a bad hyper-parameter (``legacy=True`` with a ``coeff`` or in operator
            mode), no matching layer, or a chosen layer that already has spectral
            normalization (ours, torch's parametrization or torch's legacy hook): remove it
            first.
        TypeError: On a selector that is neither a type, a string nor a callable.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from oodscore import spectral_normalize, spectral_norms
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 8),
        ...                       nn.ReLU(), nn.Linear(8, 3))
        >>> spectral_normalize(model) is model
        True
        >>> sorted(spectral_norms(model))  # the head, layer '4', is left alone
        ['0', '2']

    Source: Mei et al. (2025, SNoJoE) and van Amersfoort et al. (2021, DUE); see
    docs/spectral_norm.md.
    """
    coeff, n_power_iterations, mode, eps, warmup_iterations, legacy = check_settings(
        coeff=coeff,
        n_power_iterations=n_power_iterations,
        mode=mode,
        eps=eps,
        warmup_iterations=warmup_iterations,
        legacy=legacy,
    )
    check_flag(eval_cache, "eval_cache")
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    included = as_selectors(include, "include") or list(DEFAULT_TYPES)
    excluded = as_selectors(exclude, "exclude")
    head = None if normalize_head else output_head(model)
    chosen = chosen_layers(model, included, excluded, head, mode)
    batch_norms = affine_batch_norms(model) if batch_norm else []
    if not chosen and not batch_norms:
        head_note = f" (the output head {head!r} is excluded)" if head is not None else ""
        raise ValueError(
            "No layer to normalize: no module with a weight of at least 2 dimensions matches "
            f"include={include!r} and exclude={exclude!r}{head_note}."
        )
    for module in chosen:
        wrapper = SpectralNormWrapper(
            cast(Tensor, module.weight),
            coeff=coeff,
            n_power_iterations=n_power_iterations,
            mode=mode,
            dim=1 if isinstance(module, _ConvTransposeNd) else 0,
            eps=eps,
            warmup_iterations=warmup_iterations,
            layer=module if mode == "operator" else None,
            legacy=legacy,
            eval_cache=eval_cache,
        )
        parametrize.register_parametrization(module, "weight", wrapper)
        wrapper._watch_legacy_keys(module)
        read_through_cache(module, "weight")
    for batch_norm_layer in batch_norms:
        bound_batch_norm(batch_norm_layer, coeff=1.0 if coeff is None else coeff)
    if example_input is not None:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    return model


def _wrappers(
    model: nn.Module,
) -> Iterable[tuple[str, nn.Module, SpectralNormWrapper | BatchNormBound]]:
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for parametrization in weight_parametrizations(module):
            if isinstance(parametrization, (SpectralNormWrapper, BatchNormBound)):
                yield name, module, parametrization


def remove_spectral_normalization(model: nn.Module) -> nn.Module:
    """Replace every normalized weight by its current normalized value, in place.

    The weights are computed as in eval mode (no power iteration), so the returned plain
    model gives the same eval outputs as the normalized one. The weight parameters keep
    their identity (an optimizer holding them still works); ``_u``, ``_v`` and the
    forward pre-hooks the normalization registered are removed.

    Args:
        model: A model given to `spectral_normalize`.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: When no layer of ``model`` is normalized.
        RuntimeError: In operator mode before the first forward (the normalized weight does
            not exist yet).

    Examples:
        >>> import torch
        >>> from oodscore import remove_spectral_normalization, spectral_normalize
        >>> model = spectral_normalize(torch.nn.Sequential(torch.nn.Linear(4, 4),
        ...                                                torch.nn.Linear(4, 2)))
        >>> type(remove_spectral_normalization(model)[0]).__name__
        'Linear'
    """
    found = list(_wrappers(model))
    if not found:
        raise ValueError("No spectrally normalized layer in `model` to remove.")
    for name, module, wrapper in found:
        if len(weight_parametrizations(module)) != 1:
            raise ValueError(
                f"Layer {name!r} has other parametrizations of its weight besides spectral "
                "normalization; remove them with torch.nn.utils.parametrize first."
            )
        if isinstance(wrapper, SpectralNormWrapper):
            wrapper._check_initialized()
    for _, module, wrapper in found:
        if isinstance(wrapper, BatchNormBound) and isinstance(module, _BatchNorm):
            wrapper.attach(module)
        with eval_mode(wrapper):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for handle in (wrapper._hook, getattr(wrapper, "_load_hook", None)):  # BatchNormBound: one
            if handle is not None:
                handle.remove()
    return model


def spectral_norms(model: nn.Module) -> dict[str, float]:
    r"""The current estimate of $\sigma$ of each normalized layer's *unnormalized* weight.

    That is the quantity each wrapper divides by (for the soft bound, divided by
    ``max(1, σ/coeff)``); reading it runs no power iteration. For batch norms bounded with
    ``batch_norm=True`` it is $\max_c |\gamma_c| / \sqrt{\text{running\_var}_c + \epsilon}$.
    ``nan`` for an operator-mode layer that has not seen an input yet.

    Args:
        model: A model given to `spectral_normalize`.

    Returns:
        ``{qualified layer name: σ}`` in module order.

    Examples:
        >>> import torch
        >>> from oodscore import spectral_normalize, spectral_norms
        >>> layer = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
        >>> spectral_norms(spectral_normalize(layer, normalize_head=True))
        {'': 3.0}
    """
    norms = {}
    for name, module, wrapper in _wrappers(model):
        original = original_weight(module)
        if isinstance(wrapper, SpectralNormWrapper):
            norms[name] = float(wrapper.estimate(original))
        else:
            assert isinstance(module, _BatchNorm)
            with torch.no_grad():
                norms[name] = float(wrapper.lipschitz(original, module))
    return norms


def load_unnormalized_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True
) -> nn.modules.module._IncompatibleKeys:
    r"""Load a plain (unnormalized) state dict into a spectrally normalized model.

    Each ``<layer>.weight`` goes to ``<layer>.parametrizations.weight.original``; then every
    wrapper runs its ``warmup_iterations`` again from the current ``u``, ``v``, so $\sigma$
    is re-estimated for the loaded weights. With hard normalization the model then computes
    with $W/\sigma$, not with the pretrained $W$ (with a soft bound they agree where
    $\sigma \le c$). A layer saved by the legacy ``torch.nn.utils.spectral_norm`` (keys
    ``weight_orig``, ``weight_u``, ``weight_v``, as in SNoJoE's checkpoints) loads too, with
    its ``u``, ``v`` as saved and no warm-up, so the model computes what the saved one did.

    Args:
        model: A model given to `spectral_normalize`.
        state_dict: A state dict of the same architecture without normalization.
        strict: As in ``torch.nn.Module.load_state_dict``; the ``_u``/``_v`` buffers are
            never required.

    Returns:
        The missing and unexpected keys, as ``load_state_dict`` returns them.

    Examples:
        >>> import torch
        >>> from oodscore import spectral_normalize
        >>> from oodscore.nn import load_unnormalized_state_dict
        >>> plain = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
        >>> model = spectral_normalize(torch.nn.Sequential(torch.nn.Linear(3, 3),
        ...                                                torch.nn.Linear(3, 1)))
        >>> load_unnormalized_state_dict(model, plain.state_dict())
        <All keys matched successfully>
    """
    found = list(_wrappers(model))
    renamed = dict(state_dict)
    buffer_keys = set()
    saved_u_v = set()  # wrappers whose u, v the state dict holds (the legacy function's keys)
    for name, _, wrapper in found:
        prefix = f"{name}." if name else ""
        if has_legacy_keys(renamed, prefix):
            saved_u_v.add(id(wrapper))  # the layer's load pre-hook renames them
        elif prefix + "weight" in renamed:
            renamed[prefix + "parametrizations.weight.original"] = renamed.pop(prefix + "weight")
        for buffer_name, _ in wrapper.named_buffers():
            buffer_keys.add(f"{prefix}parametrizations.weight.0.{buffer_name}")
    result = model.load_state_dict(renamed, strict=False)
    missing = [key for key in result.missing_keys if key not in buffer_keys]
    if strict and (missing or result.unexpected_keys):
        raise RuntimeError(
            f"Error loading an unnormalized state dict: missing keys {missing}, unexpected "
            f"keys {result.unexpected_keys}."
        )
    for _, module, wrapper in found:
        if id(wrapper) in saved_u_v:
            continue
        if isinstance(wrapper, SpectralNormWrapper) and wrapper.is_initialized:
            wrapper._power_method(original_weight(module), wrapper.warmup_iterations)
    return nn.modules.module._IncompatibleKeys(missing, result.unexpected_keys)
