"""Float64 references of the terms each regularizer logs, one sample (or pair) at a time.

Written from the papers' definitions, never importing oodscore: the energy hinges (Liu et al.
2020, eq. 9) and their balanced form (Choi et al. 2023, eqs. 5-7), the shares of samples
whose hinge is positive, SR's mean L1 norm and share of non-zero features (Chen et al.
2024), and EDGE's L_conf, L_gap and share of positive (outlier, tail) pairs (Sun et al.
2025).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.reference import multilabel_regularizers as multilabel
from tests.reference import regularizers as single

Array = np.ndarray[Any, Any]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def energy_margin_terms(
    logits_in: Array,
    logits_out: Array,
    *,
    margin_in: float = -25.0,
    margin_out: float = -7.0,
    temperature: float = 1.0,
) -> dict[str, float]:
    e_in = single.energy(logits_in, temperature)
    e_out = single.energy(logits_out, temperature)
    return {
        "hinge_in": _mean([max(0.0, e - margin_in) ** 2 for e in e_in]),
        "hinge_out": _mean([max(0.0, margin_out - e) ** 2 for e in e_out]),
        "active_in": _mean([1.0 if e > margin_in else 0.0 for e in e_in]),
        "active_out": _mean([1.0 if e < margin_out else 0.0 for e in e_out]),
        "energy_in": _mean(list(e_in)),
        "energy_out": _mean(list(e_out)),
    }


def balanced_energy_terms(
    logits_in: Array,
    logits_out: Array,
    prior: Array,
    *,
    margin_in: float = -23.0,
    margin_out: float = -5.0,
    alpha: float = 10.0,
    gamma: float = 0.05,
) -> dict[str, float]:
    """The outlier hinge relu(m_out + alpha Z - E)^2, its Z-weighted mean, its active share."""
    prior = np.asarray(prior, dtype=np.float64)
    powered = np.array([p**gamma if gamma else 1.0 for p in prior])
    q = powered / powered.sum()
    e_in = single.energy(logits_in)
    e_out = single.energy(logits_out)
    hinges, weights, active = [], [], []
    for row, e in zip(np.asarray(logits_out, dtype=np.float64), e_out, strict=True):
        z = float(single.softmax(row) @ q)
        gap = margin_out + alpha * z - e
        hinges.append(max(0.0, gap) ** 2)
        weights.append(z)
        active.append(1.0 if gap > 0 else 0.0)
    return {
        "hinge_in": _mean([max(0.0, e - margin_in) ** 2 for e in e_in]),
        "hinge_out": sum(h * w for h, w in zip(hinges, weights, strict=True)) / sum(weights),
        "active_in": _mean([1.0 if e > margin_in else 0.0 for e in e_in]),
        "active_out": _mean(active),
        "energy_in": _mean(list(e_in)),
        "energy_out": _mean(list(e_out)),
    }


def sparsity_terms(features: Array) -> dict[str, float]:
    f = np.asarray(features, dtype=np.float64)
    nonzero = sum(1 for row in f for v in row if v != 0.0)
    return {"l1_norm": multilabel.sparsity(f, 1.0), "active_features": nonzero / f.size}


def edge_terms(logits_in: Array, logits_out: Array, *, margin: float, k: int) -> dict[str, float]:
    s_in = multilabel.joint_energy(logits_in)
    s_out = multilabel.joint_energy(logits_out)
    tail = np.sort(s_in)[: min(k, len(s_in))]
    pairs = [so - si + margin for so in s_out for si in tail]
    return {
        "confidence": multilabel.edge_conf(logits_out),
        "gap": multilabel.edge_gap(logits_in, logits_out, margin, k),
        "active_pairs": _mean([1.0 if p > 0 else 0.0 for p in pairs]),
    }
