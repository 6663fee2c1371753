r"""`SpectralNormWrapper`: spectral normalization of one weight, hard or soft.

A ``torch.nn.utils.parametrize`` parametrization; `oodscore.nn.spectral_model` chooses the
layers of a model and registers it on each. `oodscore.nn.spectral_legacy` maps the state-dict
keys of torch's legacy hook-based ``spectral_norm`` onto the wrapper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.utils.hooks import RemovableHandle

from oodscore._arrays import tracing
from oodscore.nn._conv_operator import ConvOperator
from oodscore.nn._eval_cache import CachedWeight, records_gradient, storable
from oodscore.nn._modules import original_weight, weight_parametrizations
from oodscore.nn._spectral_settings import Mode, check_flag, check_settings
from oodscore.nn.spectral_legacy import rename_legacy_keys


class SpectralNormWrapper(nn.Module):
    r"""Parametrization $W \mapsto W / \sigma(W)$ (hard) or $W / \max(1, \sigma(W)/c)$ (soft).

    $$ W_{\text{hard}} = \frac{W}{\sigma(W)}, \qquad
       W_{\text{soft}} = \frac{W}{\max\left(1, \sigma(W)/c\right)}, \qquad
       \sigma(W) \approx u^\top W v $$

    $u$ and $v$ are the buffers ``_u``, ``_v``, updated in place by ``n_power_iterations``
    steps of power iteration per forward **in training mode only** (frozen in eval) and
    treated as constants by the gradient. Reshape mode takes $\sigma$ of the weight as an
    ``(out, -1)`` matrix, with the same buffers, warm-up and update order as
    ``torch.nn.utils.parametrizations.spectral_norm`` (so the two agree exactly with
    ``coeff=None``). ``legacy=True`` follows the legacy hook-based
    ``torch.nn.utils.spectral_norm`` instead (SNoJoE's): no warm-up, each step updates $v$
    before $u$, and the call ``register_parametrization`` makes to check the result (the
    wrapper's first call) runs no power iteration, as that function runs none when it is
    applied; the two then agree exactly, step for step. Operator mode takes $\sigma$ of a
    convolution as a linear operator on inputs of the shape the layer sees at its first
    forward: ``_v`` has the shape of one input, ``_u`` of one output, both empty (and the
    weight unreadable) until that forward or ``input_shape`` fixes them. For a ``Linear``
    layer the two modes are the same.

    In eval mode the normalized weight is computed once and the same tensor is given out
    again while the weight, ``u`` and ``v`` are the same, unchanged tensors (by their
    version counters; see `oodscore.nn._eval_cache` and docs/spectral_norm.md); not while
    autograd records the weight, and not to torch.compile, torch.export or the JIT.

    Args:
        weight: The weight to normalize (at least 2-D).
        coeff: ``None`` for hard normalization; a number $c > 0$ for the soft bound.
        n_power_iterations: Power iterations per training forward.
        mode: ``"reshape"`` or ``"operator"``.
        dim: The output dimension of ``weight`` in reshape mode.
        eps: Added to norms when normalizing ``u`` and ``v``.
        warmup_iterations: Power iterations run once when ``u`` and ``v`` are created;
            ``None``: 15 (torch's parametrization), or 0 with ``legacy=True``.
        layer: The convolution that owns ``weight``; required in operator mode, where the
            wrapper reads its stride, padding, dilation and groups and registers a forward
            pre-hook on it that records the input shape at the first forward.
        input_shape: ``(C_in, *spatial)`` to fix the operator's input shape now instead of
            at the first forward.
        legacy: Reproduce ``torch.nn.utils.spectral_norm`` (hard, reshape mode only).
        eval_cache: Keep the normalized weight between eval forwards. ``False`` computes it
            at every forward, for code that edits the weight in place where torch's version
            counters do not see it (through ``.data``, or fused optimizer steps in eval mode).

    Raises:
        ValueError: On a bad hyper-parameter (``eval_cache`` not a bool), a weight with
            fewer than 2 dimensions, operator mode without a convolution ``layer``, or
            ``legacy=True`` with a ``coeff`` or in operator mode.

    Examples:
        >>> import torch
        >>> from torch.nn.utils import parametrize
        >>> from oodscore import SpectralNormWrapper
        >>> layer = torch.nn.Linear(3, 3, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.diag(torch.tensor([4.0, 2.0, 1.0])))
        >>> hard = SpectralNormWrapper(layer.weight)
        >>> _ = parametrize.register_parametrization(layer, "weight", hard)
        >>> torch.diagonal(layer.weight.detach())
        tensor([1.0000, 0.5000, 0.2500])
        >>> soft = torch.nn.Linear(3, 3, bias=False)
        >>> with torch.no_grad():
        ...     _ = soft.weight.copy_(torch.diag(torch.tensor([4.0, 2.0, 1.0])))
        >>> wrapper = SpectralNormWrapper(soft.weight, coeff=2.0)
        >>> _ = parametrize.register_parametrization(soft, "weight", wrapper)
        >>> torch.diagonal(soft.weight.detach())
        tensor([2.0000, 1.0000, 0.5000])

    Source: Miyato et al. (ICLR 2018) and torch's ``spectral_norm``; soft bound and operator
    norm from DUE (``y0ast/DUE``, ``due/layers/``); details in docs/spectral_norm.md.
    """

    _u: Tensor
    _v: Tensor

    def __init__(
        self,
        weight: Tensor,
        *,
        coeff: float | None = None,
        n_power_iterations: int = 1,
        mode: Mode = "reshape",
        dim: int = 0,
        eps: float = 1e-12,
        warmup_iterations: int | None = None,
        layer: nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
        legacy: bool = False,
        eval_cache: bool = True,
    ) -> None:
        super().__init__()
        self.eval_cache = check_flag(eval_cache, "eval_cache")
        self._cached: CachedWeight | None = None
        (
            self.coeff,
            self.n_power_iterations,
            self.mode,
            self.eps,
            self.warmup_iterations,
            self.legacy,
        ) = check_settings(
            coeff=coeff,
            n_power_iterations=n_power_iterations,
            mode=mode,
            eps=eps,
            warmup_iterations=warmup_iterations,
            legacy=legacy,
        )
        if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.ndim < 2:
            shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(
                f"Expected `weight` to be a floating-point tensor with at least 2 dimensions, "
                f"got {shape}."
            )
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("Expected `weight` to be finite, but it contains NaN or ±inf.")
        if not -weight.ndim <= dim < weight.ndim:
            raise ValueError(
                f"Expected `dim` to be in [-{weight.ndim}, {weight.ndim - 1}], got {dim!r}."
            )
        self.dim = dim % weight.ndim
        self._operator: ConvOperator | None = None
        # The forward pre-hook of operator mode and the load_state_dict pre-hook that maps
        # the legacy keys; remove_spectral_normalization removes both.
        self._hook: RemovableHandle | None = None
        self._load_hook: RemovableHandle | None = None
        self._legacy_refusal: str | None = None
        self._registration_pending = True
        conv = None
        if mode == "operator" and not isinstance(layer, nn.Linear):
            if not isinstance(layer, _ConvNd):
                raise ValueError(
                    "Expected `layer` to be the convolution (or Linear) layer that owns "
                    f"`weight` in operator mode, got {type(layer).__name__}."
                )
            conv = layer
        with torch.no_grad():
            if conv is None:
                weight_mat = self._to_matrix(weight)
                height, width = weight_mat.shape
                u = weight_mat.new_empty(height).normal_(0, 1)
                v = weight_mat.new_empty(width).normal_(0, 1)
                self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
                self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
                self._power_method(weight, self.warmup_iterations)
            else:
                self._operator = ConvOperator.from_layer(conv)
                self.register_buffer("_u", weight.new_empty(0))
                self.register_buffer("_v", weight.new_empty(0))
                if input_shape is not None:
                    self._initialize_operator(weight, self._operator.batch_of_one(input_shape))
                self._hook = conv.register_forward_pre_hook(self._record_input_shape)

    @property
    def is_initialized(self) -> bool:
        """Whether ``u`` and ``v`` exist (operator mode creates them at the first forward)."""
        return self._v.numel() > 0

    def _to_matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def _record_input_shape(self, layer: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook of the layer: create ``u``, ``v`` for the first input's shape."""
        if self.is_initialized:
            return
        if not args or not isinstance(args[0], Tensor):
            raise RuntimeError(
                "SpectralNormWrapper in operator mode reads the input shape from the first "
                "positional argument of the layer's forward, which was not a tensor."
            )
        assert self._operator is not None  # the hook is registered in operator mode only
        with torch.no_grad():
            input_shape = self._operator.single_input_shape(args[0])
            self._initialize_operator(original_weight(layer), input_shape)

    def _initialize_operator(self, weight: Tensor, input_shape: torch.Size) -> None:
        assert self._operator is not None
        u, v = self._operator.random_vectors(weight, input_shape, self.eps)
        # Resized in place: DistributedDataParallel and optimizers keep references to buffers.
        self._v.resize_(v.shape).copy_(v)
        self._u.resize_(u.shape).copy_(u)
        self._power_method(weight, self.warmup_iterations)

    def _power_method(self, weight: Tensor, iterations: int) -> None:
        if self._operator is None:
            self._matrix_power_method(self._to_matrix(weight), iterations)
        else:
            self._operator.power_iteration(weight, self._u, self._v, iterations, self.eps)

    # u and v are updated in place (DataParallel replicas share their storage with the module
    # on the first device), and cloned before use so that two forwards can be back-propagated
    # through together.
    @torch.no_grad()
    def _matrix_power_method(self, weight_mat: Tensor, iterations: int) -> None:
        for _ in range(iterations):
            if self.legacy:  # torch.nn.utils.spectral_norm: v first, then u
                self._v = F.normalize(
                    torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps, out=self._v
                )
            self._u = F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps, out=self._u)
            if not self.legacy:
                self._v = F.normalize(
                    torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps, out=self._v
                )

    def _sigma(self, weight: Tensor) -> Tensor:
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        if self._operator is None:
            return torch.vdot(u, torch.mv(self._to_matrix(weight), v))
        return self._operator.sigma(weight, u, v)

    def _check_initialized(self) -> None:
        if not self.is_initialized:
            raise RuntimeError(
                "SpectralNormWrapper in operator mode does not know the layer's input shape "
                "yet: run one forward pass first, or pass `example_input` to "
                "spectral_normalize (or `input_shape` to SpectralNormWrapper)."
            )

    def forward(self, weight: Tensor) -> Tensor:
        """The normalized weight; one ``n_power_iterations`` update first in training mode."""
        registering = self._registration_pending
        if registering:
            # register_parametrization calls the parametrization once to check the shape and
            # dtype of its result; in operator mode before the first input, that call (and
            # only that one) gets the weight unchanged.
            self._registration_pending = False
            if self._operator is not None and not self.is_initialized:
                return weight
        traced = tracing()
        if self.training or traced or records_gradient(weight):
            if not traced and self.__dict__.get("_cached") is not None:
                self._cached = None  # the weight may be about to change
            # The legacy function runs no power iteration when it is applied.
            return self._normalized(
                weight, iterate=self.training and not (self.legacy and registering)
            )
        value = self.cached_value(weight)
        if value is None:
            value = self._normalized(weight, iterate=False)
            if self.eval_cache and storable((weight, self._u, self._v)):
                self._cached = CachedWeight.of(value, weight, self._u, self._v)
        return value

    def cached_value(self, weight: Tensor) -> Tensor | None:
        """The normalized ``weight`` kept from an earlier eval forward while it is valid.

        ``None`` when there is none, in training mode, while autograd records ``weight`` or
        while torch.compile or the JIT traces.
        """
        cached: CachedWeight | None = self.__dict__.get("_cached")
        if cached is None or self.training:
            return None
        buffers = cast(dict[str, Tensor], self._buffers)
        return cached.get(weight, buffers["_u"], buffers["_v"])

    def _normalized(self, weight: Tensor, *, iterate: bool) -> Tensor:
        r"""$W/\sigma$ or the soft bound, after one ``n_power_iterations`` update if ``iterate``."""
        if self._operator is None:
            # The same operations in the same order as torch's spectral_norm (legacy or not).
            weight_mat = self._to_matrix(weight)
            if iterate:
                self._matrix_power_method(weight_mat, self.n_power_iterations)
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
            sigma = torch.vdot(u, torch.mv(weight_mat, v))
        else:
            self._check_initialized()
            if iterate:
                self._power_method(weight, self.n_power_iterations)
            sigma = self._sigma(weight)
        if self.coeff is None:
            return weight / sigma
        return weight / torch.clamp(sigma / self.coeff, min=1.0)

    def train(self, mode: bool = True) -> SpectralNormWrapper:
        """Set training mode (``model.train()``, ``model.eval()`` reach here); drop the cache."""
        self._cached = None
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> SpectralNormWrapper:
        # .to(), .cuda(), .double(), ...: the cached weight is of the old device and dtype.
        self._cached = None
        return cast(SpectralNormWrapper, super()._apply(fn, recurse))  # type: ignore[no-untyped-call]

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy and pickle: the cache holds weak references, which neither copies.
        state: dict[str, Any] = super().__getstate__()  # type: ignore[no-untyped-call]
        state["_cached"] = None
        return state

    def right_inverse(self, value: Tensor) -> Tensor:
        """Assigning ``layer.weight = w`` stores ``w`` itself as the unnormalized weight."""
        return value

    @torch.no_grad()
    def estimate(self, weight: Tensor) -> Tensor:
        r"""The current estimate $u^\top W v$ of $\sigma$ of the unnormalized ``weight``.

        No power iteration runs; ``nan`` in operator mode before the first forward.
        """
        if not self.is_initialized:
            return torch.tensor(math.nan)
        return self._sigma(weight)

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self._cached = None
        # In operator mode the buffers take the shapes of the saved ones, so a model can be
        # loaded before it has seen an input.
        if self._operator is not None:
            expected_ndim = self._operator.spatial_dims + 2
            for name in ("_u", "_v"):
                incoming = state_dict.get(prefix + name)
                if isinstance(incoming, Tensor) and incoming.ndim == expected_ndim:
                    getattr(self, name).resize_(incoming.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _watch_legacy_keys(self, layer: nn.Module) -> None:
        """Once registered on ``layer.weight``: map the legacy function's keys on loading.

        Registers on ``layer`` a ``load_state_dict`` pre-hook that moves ``weight_orig``,
        ``weight_u``, ``weight_v`` to this wrapper's keys (`oodscore.nn.spectral_legacy`),
        or reports why it cannot (operator mode; not the weight's first parametrization).
        """
        if self._operator is not None:
            self._legacy_refusal = "operator mode measures another sigma, with u, v of other shapes"
        elif weight_parametrizations(layer)[0] is not self:
            self._legacy_refusal = "spectral normalization is not the first parametrization"
        self._load_hook = layer._register_load_state_dict_pre_hook(  # type: ignore[no-untyped-call]
            self._load_legacy_keys
        )

    def _load_legacy_keys(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        error = rename_legacy_keys(state_dict, prefix, refuse=self._legacy_refusal)
        if error is not None:
            error_msgs.append(error)

    def extra_repr(self) -> str:
        """Hyper-parameters, as shown by ``print(model)``."""
        legacy = ", legacy=True" if self.legacy else ""
        return (
            f"coeff={self.coeff}, n_power_iterations={self.n_power_iterations}, "
            f"mode={self.mode!r}{legacy}"
        )
