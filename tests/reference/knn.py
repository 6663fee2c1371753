"""Float64 NumPy reference for the deep nearest-neighbour (KNN) score, written from the paper.

Sun, Ming, Zhu & Li, ICML 2022: normalise every feature to unit length, z = h / ||h||_2
(the fit set and the queries alike), and score a query by the distance to its k-th nearest
normalised fit feature; the authors' code takes the squared Euclidean distance returned by an
exact flat L2 index and negates it (higher = more in-distribution).

The route is deliberately plain: every pairwise squared distance from the explicit
differences (no Gram-matrix shortcut), then the k-th smallest per row by ``np.partition``
(or a full ``np.sort``), so it shares no step with a chunked, product-based search. A zero
feature stays the zero vector (its norm is 0; nothing to normalise).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def normalise(features: Array) -> Array:
    """Rows divided by their Euclidean norm, in float64; zero rows stay zero.

    The norm is taken of the row divided by its largest absolute entry (then multiplied
    back), so rows of 1e±300 neither overflow nor underflow.
    """
    x = np.asarray(features, dtype=np.float64)
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        largest = np.max(np.abs(row))
        if largest == 0:
            continue
        scaled = row / largest
        out[i] = scaled / np.sqrt(np.sum(scaled * scaled))
    return out


def pairwise_squared_distances(queries: Array, bank: Array) -> Array:
    """(Q, N) squared Euclidean distances from explicit differences."""
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    difference = q[:, None, :] - b[None, :, :]
    return np.sum(difference * difference, axis=2)


def kth_squared_distance(
    fit_features: Array, queries: Array, k: int, *, sort: bool = False
) -> Array:
    """Squared distance (Q,) of each normalised query to its k-th nearest normalised fit row."""
    distances = pairwise_squared_distances(normalise(queries), normalise(fit_features))
    if sort:
        return np.sort(distances, axis=1)[:, k - 1]
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def knn_scores(fit_features: Array, queries: Array, k: int) -> Array:
    """The KNN score: minus the squared distance to the k-th nearest normalised fit feature."""
    return -kth_squared_distance(fit_features, queries, k)
