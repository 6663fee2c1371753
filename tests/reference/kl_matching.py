"""Float64 SciPy reference for KL matching, written from the paper.

Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, ICML 2022: the template d_k
is the mean softmax posterior of the held-out ID samples predicted (argmax) as class k, for the
classes predicted at least once; the anomaly score is min_k KL(p(x) || d_k), so the ID score is
its negative. Two routes: ``plain`` (``scipy.special.softmax``, the mean, ``rel_entr`` summed,
one template and one row at a time) and ``log_domain`` (``log_softmax`` and ``logsumexp`` per
group, for logits whose probabilities underflow in float64).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp, rel_entr, softmax

Array = np.ndarray


def groups_of(logits: Array, targets: Array | None = None) -> list[Array]:
    """Row indices of each template: by the argmax class, or by ``targets`` when given."""
    labels = np.argmax(logits, axis=1) if targets is None else np.asarray(targets)
    return [np.flatnonzero(labels == k) for k in np.unique(labels)]


def templates(fit_logits: Array, targets: Array | None = None) -> Array:
    """d_k (K, C): the mean softmax of each group, classes with no row left out."""
    fit_logits = np.asarray(fit_logits, dtype=np.float64)
    probabilities = softmax(fit_logits, axis=1)
    return np.stack([probabilities[g].mean(axis=0) for g in groups_of(fit_logits, targets)])


def kl_matching_scores(fit_logits: Array, logits: Array, targets: Array | None = None) -> Array:
    """-min_k sum_c rel_entr(p_c, d_kc), row by row and template by template."""
    d = templates(fit_logits, targets)
    p = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return np.array([-min(rel_entr(row, t).sum() for t in d) for row in p])


def log_templates(fit_logits: Array, targets: Array | None = None) -> Array:
    """log d_k (K, C) as logsumexp of log-softmax rows minus log |G_k|."""
    fit_logits = np.asarray(fit_logits, dtype=np.float64)
    log_p = log_softmax(fit_logits, axis=1)
    return np.stack(
        [logsumexp(log_p[g], axis=0) - np.log(len(g)) for g in groups_of(fit_logits, targets)]
    )


def kl_matching_scores_log_domain(
    fit_logits: Array, logits: Array, targets: Array | None = None
) -> Array:
    """-min_k sum_c p_c (log p_c - log d_kc), with every log from the log domain."""
    log_d = log_templates(fit_logits, targets)
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    p = np.exp(log_p)
    divergence = (p[:, None, :] * (log_p[:, None, :] - log_d[None])).sum(axis=-1)
    return -divergence.min(axis=1)
