r"""The settings of spectral normalization, one check for the wrapper and the model function.

`Mode` names how $\sigma$ is measured; `check_settings` converts and checks the
hyper-parameters shared by both, `check_flag` a ``True``/``False`` argument.
"""

from __future__ import annotations

from typing import Literal

from oodscore._validation import check_int, check_positive

Mode = Literal["reshape", "operator"]
r"""How $\sigma$ is measured: of the reshaped weight matrix, or of the convolution operator."""

_MODES = ("reshape", "operator")

DEFAULT_WARMUP_ITERATIONS = 15
"""Warm-up power iterations of ``torch.nn.utils.parametrizations.spectral_norm``."""


def check_flag(value: object, name: str) -> bool:
    """``value`` if it is ``True`` or ``False``; otherwise a ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be True or False, got {value!r}.")
    return value


def check_settings(
    *,
    coeff: float | None,
    n_power_iterations: int,
    mode: Mode,
    eps: float,
    warmup_iterations: int | None,
    legacy: bool,
) -> tuple[float | None, int, Mode, float, int, bool]:
    """The settings of `SpectralNormWrapper`, checked and converted, in signature order.

    ``warmup_iterations=None`` becomes 15 (torch's parametrization), or 0 with ``legacy``
    (torch's legacy hook runs none).

    Raises:
        ValueError: Naming the first bad setting.
    """
    check_flag(legacy, "legacy")
    coeff = None if coeff is None else check_positive(coeff, "coeff")
    n_power_iterations = check_int(n_power_iterations, "n_power_iterations")
    if warmup_iterations is None:
        warmup_iterations = 0 if legacy else DEFAULT_WARMUP_ITERATIONS
    warmup_iterations = check_int(warmup_iterations, "warmup_iterations", minimum=0)
    eps = check_positive(eps, "eps")
    if mode not in _MODES:
        raise ValueError(f"Expected `mode` to be one of {_MODES}, got {mode!r}.")
    if legacy and coeff is not None:
        raise ValueError(
            "legacy=True is the hard normalization W / sigma of torch.nn.utils.spectral_norm, "
            f"which has no soft bound: expected `coeff` to be None, got {coeff!r}."
        )
    if legacy and mode != "reshape":
        raise ValueError(
            "legacy=True measures sigma of the reshaped weight, as torch.nn.utils.spectral_norm "
            f"does: expected `mode` to be 'reshape', got {mode!r}."
        )
    return coeff, n_power_iterations, mode, eps, warmup_iterations, legacy
