r"""Spectral normalization of any model: hard (SNoJoE, Miyato) or soft (DUE, SNGP).

The math lives in `SpectralNormWrapper`, a `torch.nn.utils.parametrize`
parametrization of one weight; `spectral_normalize` chooses the layers of a model and
registers it on each; `remove_spectral_normalization` gives the plain model back and
`spectral_norms` reports the estimated $\sigma$ of every normalized layer.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.utils import parametrize

from oodscore._validation import check_int, check_positive
from oodscore.nn.spectral_batchnorm import BatchNormBound, bound_batch_norm

Mode = Literal["reshape", "operator"]
r"""How $\sigma$ is measured: of the reshaped weight matrix, or of the convolution operator."""

Selector = Union[type[nn.Module], str, Callable[[str, nn.Module], bool]]  # noqa: UP007
"""A layer type (``isinstance``), a name pattern (`fnmatch` on the qualified name, e.g.
``"layer1.*"``) or a predicate ``(name, module) -> bool``."""

_MODES = ("reshape", "operator")
_DEFAULT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE: dict[int, Callable[..., Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


@dataclass(frozen=True)
class _ConvOperator:
    """The linear map ``x -> conv(x, W)`` of one convolution layer, without its bias."""

    transposed: bool
    spatial_dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    output_padding: tuple[int, ...]
    padding_mode: str
    reversed_padding: tuple[int, ...]

    @classmethod
    def from_layer(cls, layer: _ConvNd) -> _ConvOperator:
        return cls(
            transposed=isinstance(layer, _ConvTransposeNd),
            spatial_dims=len(layer.kernel_size),
            stride=tuple(layer.stride),
            padding=layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
            dilation=tuple(layer.dilation),
            groups=layer.groups,
            output_padding=tuple(layer.output_padding),
            padding_mode=layer.padding_mode,
            reversed_padding=tuple(getattr(layer, "_reversed_padding_repeated_twice", ())),
        )

    def apply(self, x: Tensor, weight: Tensor) -> Tensor:
        """The layer's own forward computation, as in ``torch.nn.ConvNd.forward``."""
        if self.transposed:
            conv_t = _CONV_TRANSPOSE[self.spatial_dims]
            return conv_t(
                x,
                weight,
                None,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        conv = _CONV[self.spatial_dims]
        if self.padding_mode != "zeros":
            x = F.pad(x, self.reversed_padding, mode=self.padding_mode)
            return conv(x, weight, None, self.stride, 0, self.dilation, self.groups)
        return conv(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, y: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        """The transpose of `apply` at ``y``: ``conv_transpose`` where it is exact.

        A zero-padded convolution with numeric padding has ``conv_transpose`` as its adjoint
        once ``output_padding`` restores the input size (any stride, dilation and groups).
        Every other case (``padding="same"``, reflect/replicate/circular padding, transposed
        layers) takes the vector-Jacobian product of `apply`, which for a linear map is
        its transpose applied to ``y``.
        """
        if (
            not self.transposed
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        ):
            kernel = weight.shape[2:]
            output_padding = tuple(
                size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)
                for size, out, s, p, d, k in zip(
                    input_shape[2:],
                    y.shape[2:],
                    self.stride,
                    self.padding,
                    self.dilation,
                    kernel,
                    strict=True,
                )
            )
            conv_t = _CONV_TRANSPOSE[self.spatial_dims]
            return conv_t(
                y,
                weight,
                None,
                self.stride,
                self.padding,
                output_padding,
                self.groups,
                self.dilation,
            )
        with torch.enable_grad():
            x = torch.zeros(input_shape, dtype=y.dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.apply(x, weight.detach()), x, grad_outputs=y)
        return grad


class SpectralNormWrapper(nn.Module):
    r"""Parametrization $W \mapsto W / \sigma(W)$ (hard) or $W / \max(1, \sigma(W)/c)$ (soft).

    $\sigma(W)$, the largest singular value, is estimated by power iteration on two
    buffers ``_u`` and ``_v`` (left and right singular vectors) that are updated in place,
    under ``no_grad``, ``n_power_iterations`` times per forward **in training mode only**;
    in eval mode they are frozen and the weight is a fixed function of the parameter. Then
    $\sigma = u^\top W v$ with $u, v$ treated as constants, as in Miyato et al. (ICLR 2018)
    and ``torch.nn.utils.parametrizations.spectral_norm`` (the same buffers, the same
    warm-up of 15 iterations at registration, the same update order, so the two agree
    exactly in reshape mode with ``coeff=None``).

    $$ W_{\text{hard}} = \frac{W}{\sigma(W)}, \qquad
       W_{\text{soft}} = \frac{W}{\max\left(1, \sigma(W)/c\right)} $$

    The hard form is what SNoJoE (Mei et al., 2025) trains with; the soft form, which
    leaves a layer alone while $\sigma \le c$, is DUE's (van Amersfoort et al., 2021; code
    ``y0ast/DUE``, ``due/layers/spectral_norm_fc.py``) and SNGP's (Liu et al., 2020).

    Modes:

    - ``"reshape"``: $\sigma$ of the weight reshaped to a matrix with ``dim`` first
      (``(out, -1)``; ``dim=1`` for transposed convolutions, as torch does). For a
      convolution this is *not* the norm of the layer as an operator on images (it can be
      smaller or larger, e.g. by up to $\sqrt{k_h k_w}$ for stride 1).
    - ``"operator"``: $\sigma$ of the convolution as a linear operator on inputs of the
      shape the layer sees at its first forward (Gouk et al., 2021; DUE's
      ``spectral_norm_conv.py``), by power iteration with the layer's own convolution and
      its adjoint (``conv_transpose`` with the ``output_padding`` that restores the input
      size, so any stride, dilation, groups and 1-D/2-D/3-D; reflect, replicate and
      circular padding and ``padding="same"`` use the exact vector-Jacobian product of
      the layer's map instead). The buffers then have the shapes of one input (``_v``,
      ``(1, C_in, *spatial)``) and one output (``_u``); they are empty until the first
      forward (or ``input_shape``) fixes them, and reading the weight before that raises
      a ``RuntimeError``. $\sigma$ holds for that input size: the norm of a zero-padded
      convolution grows slightly with the image size, so a much larger input at test time
      may see a slightly larger norm. For a ``Linear`` layer both modes are the same.

    Args:
        weight: The weight to normalize (at least 2-D).
        coeff: ``None`` for hard normalization; a number $c > 0$ for the soft bound.
        n_power_iterations: Power iterations per training forward (torch's and the
            papers' default: 1).
        mode: ``"reshape"`` or ``"operator"``.
        dim: The output dimension of ``weight`` in reshape mode.
        eps: Added to norms when normalizing ``u`` and ``v`` (torch's default 1e-12).
        warmup_iterations: Power iterations run once when ``u`` and ``v`` are created
            (torch's default: 15).
        layer: The convolution that owns ``weight``; required in operator mode, where the
            wrapper reads its stride, padding, dilation and groups and registers a forward
            pre-hook on it that records the input shape at the first forward.
        input_shape: ``(C_in, *spatial)`` to fix the operator's input shape now instead of
            at the first forward.

    Raises:
        ValueError: On a bad hyper-parameter, a weight with fewer than 2 dimensions, or
            operator mode without a convolution ``layer``.

    Example:
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
        warmup_iterations: int = 15,
        layer: nn.Module | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.coeff = None if coeff is None else check_positive(coeff, "coeff")
        self.n_power_iterations = check_int(n_power_iterations, "n_power_iterations")
        self.warmup_iterations = check_int(warmup_iterations, "warmup_iterations", minimum=0)
        self.eps = check_positive(eps, "eps")
        if mode not in _MODES:
            raise ValueError(f"Expected `mode` to be one of {_MODES}, got {mode!r}.")
        self.mode: Mode = mode
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
        self._operator: _ConvOperator | None = None
        self._registration_pending = True
        if mode == "operator" and not isinstance(layer, nn.Linear):
            if not isinstance(layer, _ConvNd):
                raise ValueError(
                    "Expected `layer` to be the convolution (or Linear) layer that owns "
                    f"`weight` in operator mode, got {type(layer).__name__}."
                )
            self._operator = _ConvOperator.from_layer(layer)
        with torch.no_grad():
            if self._operator is None:
                weight_mat = self._to_matrix(weight)
                height, width = weight_mat.shape
                u = weight_mat.new_empty(height).normal_(0, 1)
                v = weight_mat.new_empty(width).normal_(0, 1)
                self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
                self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
                self._power_method(weight, self.warmup_iterations)
            else:
                self.register_buffer("_u", weight.new_empty(0))
                self.register_buffer("_v", weight.new_empty(0))
                if input_shape is not None:
                    self._initialize_operator(weight, _batch_of_one(input_shape, weight))
                assert layer is not None  # narrowed above
                layer.register_forward_pre_hook(self._record_input_shape)

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
        x = args[0]
        unbatched = x.ndim == self._operator.spatial_dims + 1
        shape = (1, *x.shape) if unbatched else (1, *x.shape[1:])
        original = _original(layer)
        with torch.no_grad():
            self._initialize_operator(original, torch.Size(shape))

    def _initialize_operator(self, weight: Tensor, input_shape: torch.Size) -> None:
        assert self._operator is not None
        v = torch.randn(input_shape, dtype=weight.dtype, device=weight.device)
        output_shape = self._operator.apply(v, weight).shape
        u = torch.randn(output_shape, dtype=weight.dtype, device=weight.device)
        # Resized in place: DistributedDataParallel and optimizers keep references to buffers.
        self._v.resize_(input_shape).copy_(_unit(v, self.eps))
        self._u.resize_(output_shape).copy_(_unit(u, self.eps))
        self._power_method(weight, self.warmup_iterations)

    def _power_method(self, weight: Tensor, iterations: int) -> None:
        if self._operator is None:
            self._matrix_power_method(self._to_matrix(weight), iterations)
        else:
            self._operator_power_method(weight, iterations)

    # u and v are updated in place (DataParallel replicas share their storage with the module
    # on the first device), and cloned before use so that two forwards can be back-propagated
    # through together.
    @torch.no_grad()
    def _matrix_power_method(self, weight_mat: Tensor, iterations: int) -> None:
        for _ in range(iterations):
            self._u = F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps, out=self._u)
            self._v = F.normalize(torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps, out=self._v)

    @torch.no_grad()
    def _operator_power_method(self, weight: Tensor, iterations: int) -> None:
        assert self._operator is not None
        for _ in range(iterations):
            self._u.copy_(_unit(self._operator.apply(self._v, weight), self.eps))
            adjoint = self._operator.adjoint(self._u, weight, self._v.shape)
            self._v.copy_(_unit(adjoint, self.eps))

    def _sigma(self, weight: Tensor) -> Tensor:
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        if self._operator is None:
            return torch.vdot(u, torch.mv(self._to_matrix(weight), v))
        return torch.vdot(u.flatten(), self._operator.apply(v, weight).flatten())

    def _check_initialized(self) -> None:
        if not self.is_initialized:
            raise RuntimeError(
                "SpectralNormWrapper in operator mode does not know the layer's input shape "
                "yet: run one forward pass first, or pass `example_input` to "
                "spectral_normalize (or `input_shape` to SpectralNormWrapper)."
            )

    def forward(self, weight: Tensor) -> Tensor:
        """The normalized weight; one ``n_power_iterations`` update first in training mode."""
        if self._operator is None:
            # The same operations in the same order as torch's spectral_norm.
            weight_mat = self._to_matrix(weight)
            if self.training:
                self._matrix_power_method(weight_mat, self.n_power_iterations)
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
            sigma = torch.vdot(u, torch.mv(weight_mat, v))
        else:
            if self._registration_pending:
                # register_parametrization calls the parametrization once to check the shape
                # and dtype of its result; before the first input, that call (and only that
                # one) gets the weight unchanged.
                self._registration_pending = False
                if not self.is_initialized:
                    return weight
            self._check_initialized()
            if self.training:
                self._operator_power_method(weight, self.n_power_iterations)
            sigma = self._sigma(weight)
        if self.coeff is None:
            return weight / sigma
        return weight / torch.clamp(sigma / self.coeff, min=1.0)

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

    def extra_repr(self) -> str:
        """Hyper-parameters, as shown by ``print(model)``."""
        return (
            f"coeff={self.coeff}, n_power_iterations={self.n_power_iterations}, mode={self.mode!r}"
        )


def _unit(x: Tensor, eps: float) -> Tensor:
    norm: Tensor = torch.linalg.vector_norm(x).clamp_min(eps)
    return x / norm


def _batch_of_one(input_shape: Sequence[int], weight: Tensor) -> torch.Size:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != weight.ndim - 1 or min(shape) < 1:
        raise ValueError(
            f"Expected `input_shape` to be (C_in, *spatial) with {weight.ndim - 1} positive "
            f"sizes, got {tuple(input_shape)!r}."
        )
    return torch.Size((1, *shape))


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


def output_head(model: nn.Module) -> str | None:
    """The qualified name of the model's output head: its last ``nn.Linear`` in module order.

    Module order is the order of ``model.named_modules()``, i.e. the order in which the
    submodules were assigned in ``__init__``; ``None`` when the model has no ``Linear``.

    Example:
        >>> import torch
        >>> from oodscore.nn.spectral_norm import output_head
        >>> output_head(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
        '1'
    """
    head = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            head = name
    return head


def _parametrizations(module: nn.Module) -> parametrize.ParametrizationList:
    parametrizations = module.parametrizations
    assert isinstance(parametrizations, nn.ModuleDict)
    plist = parametrizations["weight"]
    assert isinstance(plist, parametrize.ParametrizationList)
    return plist


def _original(module: nn.Module) -> Tensor:
    return _parametrizations(module).original


def _has_spectral_norm(module: nn.Module) -> bool:
    if not parametrize.is_parametrized(module, "weight"):
        return False
    return any(
        isinstance(p, SpectralNormWrapper) or type(p).__name__ == "_SpectralNorm"
        for p in _parametrizations(module)
    )


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

    Which layers: every module matched by ``include`` (default: ``Linear``, ``Conv1d/2d/3d``
    and ``ConvTranspose1d/2d/3d``) that has a ``weight`` parameter with at least 2
    dimensions, minus those matched by ``exclude``, minus the **output head** unless
    ``normalize_head=True``. The output head is the last ``nn.Linear`` in module order
    (the order of ``model.named_modules()``, i.e. of assignment in ``__init__``; see
    `output_head`); a model with no ``Linear`` has none. A classifier whose head
    is something else (a 1×1 convolution, say) should name it in ``exclude``.

    The SNoJoE configuration (Mei et al., 2025: torch's ``spectral_norm`` with one power
    iteration on every ``Conv2d`` of a ResNet-101; batch norm and the classifier head
    untouched) is ``spectral_normalize(model, include=nn.Conv2d)``; it gives the same
    outputs as ``torch.nn.utils.parametrizations.spectral_norm`` applied to the same layers
    in the same order from the same random state. DUE's soft variant (``y0ast/DUE``,
    ``due/wide_resnet.py``: ``coeff=3``, one power iteration, the exact operator norm for
    convolutions and spectral batch norm) is
    ``spectral_normalize(model, coeff=3.0, mode="operator", batch_norm=True)``.

    Args:
        model: Any ``nn.Module``; modified in place and returned.
        coeff: ``None`` for hard normalization $W/\sigma$; $c > 0$ for the soft bound
            $W / \max(1, \sigma/c)$.
        n_power_iterations: Power iterations per training forward (default 1, as torch,
            SNoJoE and DUE).
        mode: ``"reshape"`` ($\sigma$ of the weight as an ``(out, -1)`` matrix) or
            ``"operator"`` ($\sigma$ of each convolution as an operator on its input
            shape); see `SpectralNormWrapper`.
        include: Layer types, name patterns or predicates ``(name, module) -> bool``
            choosing the layers (a layer is chosen when any of them matches).
        exclude: The same kinds of selectors; a matching layer is left alone.
        normalize_head: Normalize the output head too when it is chosen.
        batch_norm: Also bound the Lipschitz constant of every affine ``BatchNorm1d/2d/3d``
            (not filtered by ``include``/``exclude``) by ``coeff`` (1 when ``coeff`` is
            ``None``), as DUE's ``SpectralBatchNorm``; see
            `oodscore.nn.spectral_batchnorm.BatchNormBound`.
        example_input: In operator mode, an input of the model to run once (in eval mode,
            without gradients; train/eval flags are restored) so that every wrapper knows
            its input shape now. Without it, the first forward does that.
        eps: Added to norms in the power iteration.
        warmup_iterations: Power iterations when ``u`` and ``v`` are created (15, torch's).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On a bad hyper-parameter, no matching layer, or a chosen layer that
            already has spectral normalization (ours or torch's): call
            `remove_spectral_normalization` first.
        TypeError: On a selector that is neither a type, a string nor a callable.

    Example:
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
    """
    coeff = None if coeff is None else check_positive(coeff, "coeff")
    check_int(n_power_iterations, "n_power_iterations")
    check_int(warmup_iterations, "warmup_iterations", minimum=0)
    check_positive(eps, "eps")
    if mode not in _MODES:
        raise ValueError(f"Expected `mode` to be one of {_MODES}, got {mode!r}.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    included = _as_selectors(include, "include") or list(_DEFAULT_TYPES)
    excluded = _as_selectors(exclude, "exclude")
    head = None if normalize_head else output_head(model)

    chosen: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, (SpectralNormWrapper, parametrize.ParametrizationList)):
            continue
        if not _matches(included, name, module) or _matches(excluded, name, module):
            continue
        if name == head:
            continue
        parametrized = parametrize.is_parametrized(module, "weight")
        # Read the stored weight: computing a parametrized one could run a power iteration.
        weight = _original(module) if parametrized else getattr(module, "weight", None)
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) is lazy and has no weight yet: "
                "run one forward pass before spectral_normalize."
            )
        if not isinstance(weight, Tensor) or weight.ndim < 2:
            continue
        if parametrized and _has_spectral_norm(module):
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
        chosen.append((name, module))

    batch_norms = _batch_norms(model) if batch_norm else []
    if not chosen and not batch_norms:
        head_note = f" (the output head {head!r} is excluded)" if head is not None else ""
        raise ValueError(
            "No layer to normalize: no module with a weight of at least 2 dimensions matches "
            f"include={include!r} and exclude={exclude!r}{head_note}."
        )
    for _, module in chosen:
        weight = cast(Tensor, module.weight)
        transposed = isinstance(module, _ConvTransposeNd)
        wrapper = SpectralNormWrapper(
            weight,
            coeff=coeff,
            n_power_iterations=n_power_iterations,
            mode=mode,
            dim=1 if transposed else 0,
            eps=eps,
            warmup_iterations=warmup_iterations,
            layer=module if mode == "operator" else None,
        )
        parametrize.register_parametrization(module, "weight", wrapper)
    if batch_norms:
        for _, module in batch_norms:
            bound_batch_norm(module, coeff=1.0 if coeff is None else coeff)
    if example_input is not None:
        _run_once(model, example_input)
    return model


def _batch_norms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    found = []
    for name, module in model.named_modules():
        is_batch_norm = isinstance(module, _BatchNorm)
        if is_batch_norm and module.affine and module.running_var is not None:
            if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, BatchNormBound) for p in _parametrizations(module)
            ):
                raise ValueError(
                    f"Batch norm {name!r} is already bounded; call "
                    "remove_spectral_normalization(model) first."
                )
            found.append((name, module))
    return found


def _run_once(model: nn.Module, example_input: Any) -> None:
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    finally:
        for module, training in modes.items():
            module.training = training


def _wrappers(
    model: nn.Module,
) -> Iterable[tuple[str, nn.Module, SpectralNormWrapper | BatchNormBound]]:
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for parametrization in _parametrizations(module):
            if isinstance(parametrization, (SpectralNormWrapper, BatchNormBound)):
                yield name, module, parametrization


def remove_spectral_normalization(model: nn.Module) -> nn.Module:
    """Replace every normalized weight by its current normalized value, in place.

    The weights are computed as in eval mode (no power iteration), so the returned plain
    model gives the same eval outputs as the normalized one. The weight parameters keep
    their identity (an optimizer holding them still works); ``_u``, ``_v`` and the
    forward pre-hooks of operator mode are removed.

    Args:
        model: A model given to `spectral_normalize`.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: When no layer of ``model`` is normalized.
        RuntimeError: In operator mode before the first forward (the normalized weight does
            not exist yet).

    Example:
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
        if len(_parametrizations(module)) != 1:
            raise ValueError(
                f"Layer {name!r} has other parametrizations of its weight besides spectral "
                "normalization; remove them with torch.nn.utils.parametrize first."
            )
        if isinstance(wrapper, SpectralNormWrapper):
            wrapper._check_initialized()
    for _, module, wrapper in found:
        if isinstance(wrapper, BatchNormBound) and isinstance(module, _BatchNorm):
            wrapper.attach(module)
        training = wrapper.training
        wrapper.eval()
        try:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        finally:
            wrapper.train(training)
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "__self__", None) is wrapper:
                del module._forward_pre_hooks[key]
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

    Example:
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
        original = _original(module)
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

    Each ``<layer>.weight`` goes to ``<layer>.parametrizations.weight.original``; then the
    power iteration of every wrapper runs its ``warmup_iterations`` again from the current
    ``u``, ``v``, so $\sigma$ is re-estimated for the loaded weights. With hard
    normalization the model then computes with $W/\sigma$, not with the pretrained $W$:
    its outputs differ from the pretrained model's (with a soft bound they agree where
    $\sigma \\le c$). The simplest alternative is to load the plain weights *before*
    calling `spectral_normalize`, whose warm-up then runs on them.

    Args:
        model: A model given to `spectral_normalize`.
        state_dict: A state dict of the same architecture without normalization.
        strict: As in ``torch.nn.Module.load_state_dict``; the ``_u``/``_v`` buffers are
            never required.

    Returns:
        The missing and unexpected keys, as ``load_state_dict`` returns them.

    Example:
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
            wrapper._power_method(_original(module), wrapper.warmup_iterations)
    return nn.modules.module._IncompatibleKeys(missing, result.unexpected_keys)
