"""Float64 NumPy reference of the local outlier factor, written from Breunig et al. (SIGMOD 2000).

Definitions (Euclidean distance d, a fit set P, a neighbourhood size k):

- k-distance(o) of a fit point o: the distance to its k-th nearest *other* fit point;
- N_k(p): the fit points within k-distance(p) of p; for a fit point, itself excluded. With
  ``ties="include"`` (the paper's definition) every point at exactly the k-distance belongs
  to it, so it may hold more than k points; with ``ties="exact"`` it holds the first k in
  order of distance (what scikit-learn does);
- reach-dist_k(p, o) = max(k-distance(o), d(p, o));
- lrd_k(p) = 1 / mean_{o in N_k(p)} reach-dist_k(p, o);
- LOF_k(p) = mean_{o in N_k(p)} lrd_k(o) / lrd_k(p).

A new point q (novelty scoring) gets its neighbours, reachability distances, lrd and LOF
against the fit set, whose k-distances and lrds are those of the fit set alone. The score
is -LOF (higher = more inlying). ``lrd_offset`` adds a constant to the mean reachability
distance before the inverse (scikit-learn adds 1e-10, so duplicates give a finite lrd); the
paper has none (0).

Every distance is the norm of a difference (no Gram-matrix shortcut) and every neighbour
set comes from a full sort, so the route shares no step with a k-d tree or a chunked search.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def distances(a: Array, b: Array) -> Array:
    """All Euclidean distances (len(a), len(b)), from the differences themselves."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def _neighbourhoods(dist: Array, k: int, ties: str) -> tuple[Array, list[Array]]:
    """The k-distance of each row of ``dist`` and the column indices of its neighbourhood."""
    order = np.argsort(dist, axis=1, kind="stable")
    k_distance = np.take_along_axis(dist, order[:, k - 1 : k], axis=1)[:, 0]
    if ties == "exact":
        return k_distance, [row[:k] for row in order]
    if ties != "include":
        raise ValueError(f"ties must be 'include' or 'exact', got {ties!r}")
    return k_distance, [np.flatnonzero(dist[i] <= k_distance[i]) for i in range(len(dist))]


def _lrd(dist_rows: Array, neighbours: list[Array], k_distance_fit: Array, offset: float) -> Array:
    out = np.empty(len(neighbours))
    for i, members in enumerate(neighbours):
        reach = np.maximum(k_distance_fit[members], dist_rows[i, members])
        out[i] = 1.0 / (reach.mean() + offset)
    return out


def fit_lof(fit: Array, k: int, *, ties: str = "include", lrd_offset: float = 0.0):
    """The k-distances and lrds of the fit points (each excluding itself)."""
    dist = distances(fit, fit)
    np.fill_diagonal(dist, np.inf)
    k_distance, neighbours = _neighbourhoods(dist, k, ties)
    return k_distance, _lrd(dist, neighbours, k_distance, lrd_offset)


def lof_novelty_scores(
    fit: Array, queries: Array, k: int, *, ties: str = "include", lrd_offset: float = 0.0
) -> Array:
    """-LOF_k of each query against the fit set (novelty mode), float64."""
    k_distance_fit, lrd_fit = fit_lof(fit, k, ties=ties, lrd_offset=lrd_offset)
    dist = distances(queries, fit)
    _, neighbours = _neighbourhoods(dist, k, ties)
    lrd_queries = _lrd(dist, neighbours, k_distance_fit, lrd_offset)
    lof = np.array(
        [lrd_fit[members].mean() / lrd_queries[i] for i, members in enumerate(neighbours)]
    )
    return -lof
