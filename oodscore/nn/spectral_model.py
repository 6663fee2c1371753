r"""Spectral normalization of a whole model: choose the layers, register, report, remove.

`spectral_normalize` registers `SpectralNormWrapper` (and, on request, `BatchNormBound`) on
the chosen layers; `spectral_norms` reports the estimated $\sigma$ of each;
`remove_spectral_normalization` gives the plain model back; `load_unnormalized_state_dict`
loads plain weights into a normalized model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.utils import parametrizations, parametrize

from oodscore.nn._modules import eval_mode, original_weight, output_head, weight_parametrizations
from oodscore.nn.spectral_batchnorm import BatchNormBound, bound_batch_norm
from oodscore.nn.spectral_norm import Mode, SpectralNormWrapper, check_settings

Selector = Union[type[nn.Module], str, Callable[[str, nn.Module], bool]]  # noqa: UP007
"""A layer type (``isinstance``), a name pattern (`fnmatch` on the qualified name, e.g.
``"layer1.*"``) or a predicate ``(name, module) -> bool``."""

_DEFAULT_TYPES: tuple[type[nn.Module], ...] = (
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
# normalizes a model already carrying torch's spectral_norm then fails and says so.
_TORCH_SPECTRAL_NORM: tuple[type, ...] = tuple(
    cls for cls in (getattr(parametrizations, "_SpectralNorm", None),) if isinstance(cls, type)
)
_SPECTRAL_NORMS = (SpectralNormWrapper, *_TORCH_SPECTRAL_NORM)


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
    warmup_iterations: int = 15,
) -> nn.Module:
    r"""Register `SpectralNormWrapper` on the weights of a model's layers, in place.

    $$ W \mapsto \frac{W}{\sigma(W)} \quad (\texttt{coeff=None}), \qquad
       W \mapsto \frac{W}{\max(1, \sigma(W)/c)} \quad (\texttt{coeff=}c) $$

    Which layers: every module matched by ``include`` (default: ``Linear``, ``Conv1d/2d/3d``
    and ``ConvTranspose1d/2d/3d``) that has a ``weight`` with at least 2 dimensions, minus
    those matched by ``exclude``, minus the **output head** (the last ``nn.Linear`` in module
    order, see `output_head`) unless ``normalize_head=True``. A classifier whose head is
    something else (a 1×1 convolution, say) should name it in ``exclude``.
    SNoJoE is ``spectral_normalize(model, include=nn.Conv2d)`` (the same outputs as torch's
    ``spectral_norm`` on the same layers from the same random state); DUE is
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
        warmup_iterations: Power iterations when ``u`` and ``v`` are created.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On a bad hyper-parameter, no matching layer, or a chosen layer that
            already has spectral normalization (ours or torch's): call
            `remove_spectral_normalization` first.
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
    coeff, n_power_iterations, mode, eps, warmup_iterations = check_settings(
        coeff=coeff,
        n_power_iterations=n_power_iterations,
        mode=mode,
        eps=eps,
        warmup_iterations=warmup_iterations,
    )
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    included = _as_selectors(include, "include") or list(_DEFAULT_TYPES)
    excluded = _as_selectors(exclude, "exclude")
    head = None if normalize_head else output_head(model)
    chosen = _chosen_layers(model, included, excluded, head, mode)
    batch_norms = _batch_norms(model) if batch_norm else []
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
        )
        parametrize.register_parametrization(module, "weight", wrapper)
    for batch_norm_layer in batch_norms:
        bound_batch_norm(batch_norm_layer, coeff=1.0 if coeff is None else coeff)
    if example_input is not None:
        with eval_mode(model), torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    return model


def _chosen_layers(
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


def _as_selectors(value: Selector | Sequence[Selector] | None, name: str) -> list[Selector]:
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


def _batch_norms(model: nn.Module) -> list[_BatchNorm]:
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
        if wrapper._hook is not None:
            wrapper._hook.remove()
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
    $\sigma \le c$).

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
    for name, _, wrapper in found:
        prefix = f"{name}." if name else ""
        if prefix + "weight" in renamed:
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
        if isinstance(wrapper, SpectralNormWrapper) and wrapper.is_initialized:
            wrapper._power_method(original_weight(module), wrapper.warmup_iterations)
    return nn.modules.module._IncompatibleKeys(missing, result.unexpected_keys)
