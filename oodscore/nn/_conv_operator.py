r"""The norm of a convolution as a linear operator on images, by power iteration.

The operator is $x \mapsto \operatorname{conv}(x, W)$ (bias left out) on inputs of one shape; its
largest singular value comes from power iteration with the layer's own convolution and its
adjoint (Gouk et al., 2021; DUE's ``due/layers/spectral_norm_conv.py``). `SpectralNormWrapper`
uses it in operator mode; docs/spectral_norm.md explains the choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE: dict[int, Callable[..., Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


@dataclass(frozen=True)
class ConvOperator:
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
    def from_layer(cls, layer: _ConvNd) -> ConvOperator:
        """The operator of ``layer``: its stride, padding, dilation and groups."""
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
            return self._conv_transpose(x, weight, self.output_padding)
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
            return self._conv_transpose(y, weight, output_padding)
        with torch.enable_grad():
            x = torch.zeros(input_shape, dtype=y.dtype, device=y.device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.apply(x, weight.detach()), x, grad_outputs=y)
        return grad

    def _conv_transpose(self, x: Tensor, weight: Tensor, output_padding: tuple[int, ...]) -> Tensor:
        conv_t = _CONV_TRANSPOSE[self.spatial_dims]
        return conv_t(
            x, weight, None, self.stride, self.padding, output_padding, self.groups, self.dilation
        )

    def batch_of_one(self, input_shape: Sequence[int]) -> torch.Size:
        """``(1, C_in, *spatial)`` from a user's ``(C_in, *spatial)``, checked."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != self.spatial_dims + 1 or min(shape) < 1:
            raise ValueError(
                f"Expected `input_shape` to be (C_in, *spatial) with {self.spatial_dims + 1} "
                f"positive sizes, got {tuple(input_shape)!r}."
            )
        return torch.Size((1, *shape))

    def single_input_shape(self, x: Tensor) -> torch.Size:
        """The shape of one input of the batch ``x`` (or of the unbatched ``x``), batch size 1."""
        unbatched = x.ndim == self.spatial_dims + 1
        return torch.Size((1, *x.shape) if unbatched else (1, *x.shape[1:]))

    def random_vectors(
        self, weight: Tensor, input_shape: torch.Size, eps: float
    ) -> tuple[Tensor, Tensor]:
        """Random unit ``u`` (an output) and ``v`` (an input of ``input_shape``)."""
        v = torch.randn(input_shape, dtype=weight.dtype, device=weight.device)
        output_shape = self.apply(v, weight).shape
        u = torch.randn(output_shape, dtype=weight.dtype, device=weight.device)
        return unit(u, eps), unit(v, eps)

    @torch.no_grad()
    def power_iteration(
        self, weight: Tensor, u: Tensor, v: Tensor, iterations: int, eps: float
    ) -> None:
        r"""Run ``iterations`` steps of power iteration on the buffers ``u``, ``v``, in place.

        Each step is $u \leftarrow Av / \lVert Av \rVert$, then
        $v \leftarrow A^\top u / \lVert A^\top u \rVert$.
        """
        for _ in range(iterations):
            u.copy_(unit(self.apply(v, weight), eps))
            v.copy_(unit(self.adjoint(u, weight, v.shape), eps))

    def sigma(self, weight: Tensor, u: Tensor, v: Tensor) -> Tensor:
        r"""$u^\top A v$, the estimate of $\sigma(A)$; differentiable in ``weight``."""
        return torch.vdot(u.flatten(), self.apply(v, weight).flatten())


def unit(x: Tensor, eps: float) -> Tensor:
    """``x`` divided by its Euclidean norm (at least ``eps``)."""
    norm: Tensor = torch.linalg.vector_norm(x).clamp_min(eps)
    return x / norm
