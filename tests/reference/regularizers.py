"""Float64 NumPy references of the energy / OE / balanced-energy losses, written from the papers.

Liu et al. 2020 (energy-bounded learning, eq. 9), Hendrycks et al. 2019 (outlier exposure,
cross-entropy to the uniform distribution), Choi et al. 2023 (balanced energy, eqs. 5-7).
Plain loops over samples on purpose: a vectorization bug in the library cannot repeat here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def log_sum_exp(row: Array) -> float:
    """log(sum(exp(row))) with the maximum factored out (exact for any float64 row)."""
    top = float(np.max(row))
    return top + float(np.log(np.sum(np.exp(row - top))))


def softmax(row: Array) -> Array:
    shifted = np.exp(row - np.max(row))
    return shifted / shifted.sum()


def energy(logits: Array, temperature: float = 1.0) -> Array:
    """E(x) = -T log sum_c exp(f_c / T), one value per row."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.array([-temperature * log_sum_exp(row / temperature) for row in logits])


def energy_margin(
    logits_in: Array,
    logits_out: Array,
    *,
    weight: float = 0.1,
    margin_in: float = -25.0,
    margin_out: float = -7.0,
    temperature: float = 1.0,
) -> float:
    """weight * (mean max(0, E_in - m_in)^2 + mean max(0, m_out - E_out)^2)."""
    e_in = energy(logits_in, temperature)
    e_out = energy(logits_out, temperature)
    term_in = sum(max(0.0, e - margin_in) ** 2 for e in e_in) / len(e_in) if len(e_in) else 0.0
    term_out = sum(max(0.0, margin_out - e) ** 2 for e in e_out) / len(e_out) if len(e_out) else 0.0
    return weight * (term_in + term_out)


def outlier_exposure(logits_out: Array, *, weight: float = 0.5) -> float:
    """weight * mean over outliers of CE(uniform, softmax) = -(1/C) sum_c log p_c."""
    logits_out = np.asarray(logits_out, dtype=np.float64)
    total = 0.0
    for row in logits_out:
        log_probs = row - log_sum_exp(row)
        total += -float(np.mean(log_probs))
    return weight * total / len(logits_out)


def outlier_exposure_zeros(logits_out: Array, *, weight: float = 0.5) -> float:
    """weight * mean over outliers and labels of BCE(sigmoid(f), 0) = -log(1 - sigmoid(f))."""
    logits_out = np.asarray(logits_out, dtype=np.float64)
    # -log(1 - sigmoid(f)) = log(1 + exp(f)), evaluated without overflow.
    values = [np.logaddexp(0.0, f) for f in logits_out.ravel()]
    return weight * float(np.mean(values))


def class_prior(logits_out: Array) -> Array:
    """Share of rows whose largest logit is class c (first index on ties)."""
    logits_out = np.asarray(logits_out, dtype=np.float64)
    counts = np.zeros(logits_out.shape[1])
    for row in logits_out:
        counts[int(np.argmax(row))] += 1
    return counts / len(logits_out)


def balanced_energy(
    logits_in: Array,
    logits_out: Array,
    prior: Array,
    *,
    weight: float = 0.1,
    margin_in: float = -23.0,
    margin_out: float = -5.0,
    alpha: float = 10.0,
    gamma: float = 0.05,
    gamma_weight: float | None = None,
) -> float:
    """Choi et al. 2023: ID hinge + Z-weighted outlier hinge with margin m_out + alpha * Z."""
    prior = np.asarray(prior, dtype=np.float64)
    gamma_weight = gamma if gamma_weight is None else gamma_weight

    def normalized(exponent: float) -> Array:
        powered = np.array([p**exponent if exponent else 1.0 for p in prior])
        return powered / powered.sum()

    q_margin, q_weight = normalized(gamma), normalized(gamma_weight)
    e_in = energy(logits_in)
    term_in = sum(max(0.0, e - margin_in) ** 2 for e in e_in) / len(e_in) if len(e_in) else 0.0
    numerator = denominator = 0.0
    for row in np.asarray(logits_out, dtype=np.float64):
        probs = softmax(row)
        z_margin = float(probs @ q_margin)
        z_weight = float(probs @ q_weight)
        e = -log_sum_exp(row)
        numerator += z_weight * max(0.0, margin_out + alpha * z_margin - e) ** 2
        denominator += z_weight
    term_out = numerator / denominator if denominator > 0 else 0.0
    return weight * (term_in + term_out)


def mean_energy_margins(
    logits_in: Array, logits_out: Array, *, temperature: float = 1.0, widen: float = 0.0
) -> tuple[float, float]:
    """(mean E_in - widen * gap, mean E_out + widen * gap), gap = mean E_out - mean E_in."""
    mean_in = float(np.mean(energy(logits_in, temperature)))
    mean_out = float(np.mean(energy(logits_out, temperature)))
    gap = mean_out - mean_in
    return mean_in - widen * gap, mean_out + widen * gap


def official_dense_loss(
    logits: Array,
    targets: Array,
    *,
    prior: Array | None = None,
    gamma1: float = 0.0,
    gamma2: float = 0.0,
    alpha: float = 0.0,
    m_in: float = -12.0,
    m_out: float = -6.0,
    trainer_weight: float = 0.1,
) -> float:
    """The official segmentation energy loss, pixel by pixel, times the trainer's weight.

    hyunjunChhoi/Balanced_Energy, segmentation/code/losses.py: ``energy_loss_pure``
    (lines 102-120, ``prior=None``) and ``balanced_energy_loss_pure`` (lines 122-164);
    engine/trainer.py:56 adds ``0.1 * e_loss``. ``logits`` (N, C, H, W), ``targets``
    (N, H, W) with 254 for outlier pixels and 255 for void ones (both left out of the ID
    set). With outlier pixels: 0.5 * (ID mean + outlier (weighted) mean), lines 118 / 162;
    without: the ID mean alone, lines 116 / 159, with no 0.5.
    """
    logits = np.asarray(logits, dtype=np.float64)
    n, _, h, w = logits.shape
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float64)
        q1 = prior**gamma1 / np.sum(prior**gamma1)  # F.normalize(p=1) of P ** gamma1
        q2 = prior**gamma2 / np.sum(prior**gamma2)
    e_in, e_out, z_margin, z_weight = [], [], [], []
    for i in range(n):
        for y in range(h):
            for x in range(w):
                row = logits[i, :, y, x]
                energy = -log_sum_exp(row)
                label = int(targets[i, y, x])
                if label == 254:
                    e_out.append(energy)
                    probs = softmax(row)
                    z_margin.append(float(probs @ q1) if prior is not None else 0.0)
                    z_weight.append(float(probs @ q2) if prior is not None else 1.0)
                elif label != 255:
                    e_in.append(energy)
    term_in = sum(max(0.0, e - m_in) ** 2 for e in e_in) / len(e_in)
    if not e_out:
        return trainer_weight * term_in
    shifted = [e - alpha * z for e, z in zip(e_out, z_margin, strict=True)]
    hinges = [max(0.0, m_out - e) ** 2 for e in shifted]
    term_out = sum(h * z for h, z in zip(hinges, z_weight, strict=True)) / sum(z_weight)
    return trainer_weight * 0.5 * (term_in + term_out)
