r"""A Lipschitz bound for batch norm, DUE's ``SpectralBatchNorm`` as a parametrization.

In eval mode batch norm is the affine map $x_c \mapsto \gamma_c (x_c - \mu_c) /
\sqrt{\sigma^2_c + \epsilon} + \beta_c$, whose Lipschitz constant is
$L = \max_c |\gamma_c| / \sqrt{\sigma^2_c + \epsilon}$ (Gouk et al., 2021, eq. 28).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from oodscore._validation import check_positive


class BatchNormBound(nn.Module):
    r"""Parametrization $\gamma \mapsto \gamma / \max(1, L / c)$ of a batch norm's weight.

    $$ L = \max_c \frac{|\gamma_c|}{\sqrt{\text{running\_var}_c + \epsilon}} $$

    the Lipschitz constant of the layer in eval mode, computed from the running variance
    in both modes, as DUE's ``SpectralBatchNorm`` (``y0ast/DUE``,
    ``due/layers/spectral_batchnorm.py``). DUE also lowers the batch-norm momentum from
    0.1 to 0.01 to steady the running variance; that is left to the user here
    (``layer.momentum = 0.01``). The running variance is read through a forward pre-hook
    on the batch norm, which `bound_batch_norm` registers.

    Args:
        coeff: The bound $c > 0$ on $L$.

    Examples:
        >>> import torch
        >>> from oodscore.nn.spectral_batchnorm import bound_batch_norm
        >>> bn = torch.nn.BatchNorm1d(2).eval()
        >>> with torch.no_grad():
        ...     _ = bn.weight.copy_(torch.tensor([4.0, 1.0]))
        >>> _ = bound_batch_norm(bn, coeff=2.0)
        >>> bn(torch.ones(1, 2))
        tensor([[2.0000, 0.5000]], grad_fn=<NativeBatchNormBackward0>)
    """

    def __init__(self, *, coeff: float) -> None:
        super().__init__()
        self.coeff = check_positive(coeff, "coeff")
        self._running_var: Tensor | None = None
        self._bn_eps = 1e-5
        # The forward pre-hook `bound_batch_norm` registers; remove_spectral_normalization
        # removes it.
        self._hook: RemovableHandle | None = None

    def attach(self, layer: _BatchNorm, *args: Any) -> None:
        """Read the running variance and eps of ``layer`` (its forward pre-hook)."""
        self._running_var = layer.running_var
        self._bn_eps = layer.eps

    def lipschitz(self, weight: Tensor, layer: _BatchNorm | None = None) -> Tensor:
        r"""$L$ of the layer with the unnormalized ``weight``."""
        if layer is not None:
            self.attach(layer)
        if self._running_var is None:
            raise RuntimeError(
                "BatchNormBound has not read the layer's running variance: register it with "
                "bound_batch_norm, which attaches it."
            )
        return torch.max(torch.abs(weight) * torch.rsqrt(self._running_var + self._bn_eps))

    def forward(self, weight: Tensor) -> Tensor:
        """The bounded weight."""
        return weight / torch.clamp(self.lipschitz(weight) / self.coeff, min=1.0)

    def right_inverse(self, value: Tensor) -> Tensor:
        """Assigning ``layer.weight = w`` stores ``w`` itself."""
        return value

    def extra_repr(self) -> str:
        """The bound, as shown by ``print(model)``."""
        return f"coeff={self.coeff}"


def bound_batch_norm(layer: _BatchNorm, *, coeff: float) -> _BatchNorm:
    """Register `BatchNormBound` on an affine batch norm that tracks running stats.

    Raises:
        ValueError: When ``layer`` has no weight (``affine=False``) or no running
            variance (``track_running_stats=False``), or ``coeff <= 0``.
    """
    if not isinstance(layer, _BatchNorm) or not layer.affine or layer.running_var is None:
        raise ValueError(
            "Expected `layer` to be a BatchNorm1d/2d/3d with affine=True and "
            f"track_running_stats=True, got {layer!r}."
        )
    bound = BatchNormBound(coeff=coeff)
    bound.attach(layer)
    parametrize.register_parametrization(layer, "weight", bound)
    bound._hook = layer.register_forward_pre_hook(bound.attach)
    return layer
