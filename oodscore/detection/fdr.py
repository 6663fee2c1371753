r"""Benjamini–Hochberg selection of the OOD inputs of a batch from their conformal p-values.

Rejecting each input with $p \le \alpha$ bounds the rate of false rejections per ID input.
Over a batch of $m$ inputs, BH bounds instead the expected share of ID inputs among those
selected as OOD (the false discovery rate): with $p_{(1)} \le \dots \le p_{(m)}$, select the
inputs with $p \le p_{(j^*)}$, $j^* = \max\{j : p_{(j)} \le j q / m\}$.

Assumptions: the ID inputs of the batch (the nulls) are each exchangeable with the
calibration set. Marginal conformal p-values sharing one calibration set are then positively
regression dependent on a subset (PRDS; Bates, Candès, Lei, Romano & Sesia, "Testing for
outliers with conformal p-values", Annals of Statistics 51(1), 2023), and BH keeps
$\mathrm{FDR} \le q\, m_0 / m \le q$, $m_0$ the number of ID inputs. Nothing is assumed of
the OOD inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import false_discovery_control
from torch import Tensor

from oodscore._arrays import ArrayT, as_tensor
from oodscore._validation import UNIT_OPEN, check_finite


def select_ood(p_values: ArrayT, *, fdr: float) -> ArrayT:
    r"""The inputs Benjamini–Hochberg selects as OOD at false discovery rate ``fdr`` (bool, N).

    BH adjusted p-values from ``scipy.stats.false_discovery_control(p, method="bh")``,
    selected where they are at most ``fdr``; see the module docstring for the assumptions
    under which $\mathrm{FDR} \le q\, m_0 / m$.

    Args:
        p_values: Conformal p-values (N,) in [0, 1] of one batch (a tensor or an array).
        fdr: $q$, the target false discovery rate, in (0, 1).

    Returns:
        A boolean mask (N,) of the same kind (tensor on the same device, or array).

    Raises:
        ValueError: On p-values that are not 1-D, NaN, or outside [0, 1], or ``fdr``
            outside (0, 1).

    Examples:
        >>> import torch
        >>> from oodscore.detection import select_ood
        >>> select_ood(torch.tensor([0.001, 0.02, 0.03, 0.5]), fdr=0.1)
        tensor([ True,  True,  True, False])

    Source: Benjamini & Hochberg, JRSS B 1995; Bates et al., Annals of Statistics 2023.
    """
    q = UNIT_OPEN.check(fdr, "fdr")
    tensor, restore = as_tensor(p_values, "p_values")
    check_p_values(tensor)
    values: np.ndarray[Any, Any] = tensor.detach().cpu().double().numpy()
    if values.size == 0:
        mask = np.zeros(0, dtype=bool)
    else:
        mask = false_discovery_control(values, method="bh") <= q
    result: ArrayT = restore(torch.from_numpy(mask).to(tensor.device))
    return result


def check_p_values(p_values: Tensor, name: str = "p_values") -> None:
    """Refuse p-values that are not 1-D, not finite, or outside [0, 1]."""
    if p_values.ndim != 1:
        raise ValueError(
            f"Expected `{name}` to be 1-D of shape (N,), got shape {tuple(p_values.shape)}."
        )
    check_finite(p_values, name)
    outside = (p_values < 0) | (p_values > 1)
    if bool(outside.any()):
        first = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"Expected `{name}` in [0, 1], got {float(p_values[first])!r} at index {first}."
        )
