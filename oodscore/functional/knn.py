r"""Nearest neighbours of L2-normalised features: exact, chunked k-th neighbour search."""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_SIZE = 4096
"""Fit rows compared with a block of queries at a time (the default of `KNN`'s ``chunk_size``)."""

QUERY_BLOCK = 1024
"""Query rows searched at a time: memory is one ``QUERY_BLOCK x chunk_size`` product at a time."""


def unit_rows(x: Tensor) -> Tensor:
    r"""Rows scaled to unit Euclidean norm, $z = h / \lVert h \rVert_2$; zero rows stay zero.

    Each row is first divided by its largest absolute entry, so that $\lVert h \rVert^2$
    neither overflows nor underflows: rows of $10^{30}$ or $10^{-30}$ in float32 normalise
    as well as rows of 1: the result is $h / \max(\lVert h \rVert, \varepsilon)$ for any
    $\varepsilon$ below the norm of every non-zero row. Differentiable.
    """
    scale = x.abs().amax(dim=1, keepdim=True)
    scaled = x / torch.where(scale > 0, scale, torch.ones_like(scale))
    # a non-zero row now has norm >= 1 (its largest entry is +-1); a zero row stays 0 / 1
    unit: Tensor = scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min(1)
    return unit


@torch.no_grad()
def unit_bank(features: Tensor) -> Tensor:
    """`unit_rows` of ``features`` (N, D), written chunk by chunk into one new tensor.

    The fit set is normalised without full-size temporaries: memory is the result plus one
    chunk of `CHUNK_SIZE` rows. No gradient.
    """
    bank = torch.empty_like(features, memory_format=torch.contiguous_format)
    for start in range(0, features.shape[0], CHUNK_SIZE):
        bank[start : start + CHUNK_SIZE] = unit_rows(features[start : start + CHUNK_SIZE])
    return bank


@torch.no_grad()
def kth_nearest(
    queries: Tensor,
    bank: Tensor,
    k: int,
    *,
    chunk_size: int = CHUNK_SIZE,
    query_block: int = QUERY_BLOCK,
) -> Tensor:
    r"""Index (Q,) of the k-th nearest row of ``bank`` (N, D) to each query (Q, D); exact search.

    Distances are ranked by $2\,q \cdot b - \lVert b \rVert^2 = \lVert q \rVert^2 -
    \lVert q - b \rVert^2$ (the query's own norm does not change its ranking), computed one
    product of ``query_block`` queries and ``chunk_size`` bank rows at a time; a running top-k
    (`merge_top_k`) keeps memory at one such product plus a few ``query_block x k`` buffers,
    never (Q, N). Ties are broken arbitrarily. Requires ``1 <= k <= N``; computed in the
    dtype common to both inputs; no gradient.
    """
    dtype = torch.promote_types(queries.dtype, bank.dtype)
    out = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    norms = _squared_norms(bank, dtype)
    for first in range(0, queries.shape[0], query_block):
        block = queries[first : first + query_block].to(dtype)
        keys = block.new_full((block.shape[0], k), -torch.inf)
        index = torch.zeros((block.shape[0], k), dtype=torch.long, device=block.device)
        for start in range(0, bank.shape[0], chunk_size):
            chunk = bank[start : start + chunk_size].to(dtype)
            # 2 q.b - |b|^2 = |q|^2 - |q - b|^2: larger is nearer
            norm = norms[start : start + chunk_size]
            chunk_keys = torch.addmm(norm, block, chunk.T, beta=-1, alpha=2)
            keys, index = merge_top_k(keys, index, chunk_keys, start)
            del chunk_keys  # freed before the next product is allocated
        nearest_last = keys.argmin(dim=1, keepdim=True)
        out[first : first + block.shape[0]] = index.gather(1, nearest_last)[:, 0]
    return out


def merge_top_k(
    keys: Tensor, index: Tensor, chunk_keys: Tensor, start: int
) -> tuple[Tensor, Tensor]:
    """The k largest of ``keys`` (B, k) and ``chunk_keys`` (B, c), with their column indices.

    ``index`` holds the columns of ``keys`` (``-inf`` keys: none yet); chunk column j is
    column ``start + j``. The chunk's own top k are taken first (``torch.topk``), then merged
    with the k kept, so no (B, k + c) copy is made. On the CPU, once k keys are kept, only
    entries above each row's k-th can enter; when few do (typically after the first chunks)
    they are gathered first (one comparison and one ``nonzero``; at most 16 bytes per entry
    that passes) and the chunk is never partially sorted, which costs about as much as the
    comparison.
    """
    k = keys.shape[1]
    candidates, columns = chunk_keys, None
    threshold = keys.amin(dim=1, keepdim=True)
    if chunk_keys.device.type == "cpu" and not bool(torch.isinf(threshold).any()):
        rows, cols = (chunk_keys > threshold).nonzero(as_tuple=True)
        if len(rows) == 0:
            return keys, index
        counts = torch.bincount(rows, minlength=chunk_keys.shape[0])
        most = int(counts.max())
        if 4 * most <= chunk_keys.shape[1]:
            position = torch.arange(len(rows)) - (counts.cumsum(0) - counts)[rows]
            candidates = chunk_keys.new_full((chunk_keys.shape[0], most), -torch.inf)
            candidates[rows, position] = chunk_keys[rows, cols]
            columns = torch.zeros(candidates.shape, dtype=torch.long)
            columns[rows, position] = cols
    if candidates.shape[1] > k:
        candidates, best = candidates.topk(k, dim=1, sorted=False)
        columns = best if columns is None else columns.gather(1, best)
    merged, picked = torch.cat([keys, candidates], dim=1).topk(k, dim=1, sorted=False)
    kept = index.gather(1, picked.clamp_max(k - 1))
    new = (picked - k).clamp_min(0)
    new = new + start if columns is None else columns.gather(1, new) + start
    return merged, torch.where(picked < k, kept, new)


def _squared_norms(bank: Tensor, dtype: torch.dtype) -> Tensor:
    """Squared row norms of ``bank`` in ``dtype``, cast chunk by chunk (no full-size copy)."""
    out = torch.empty(bank.shape[0], dtype=dtype, device=bank.device)
    for start in range(0, bank.shape[0], CHUNK_SIZE):
        chunk = bank[start : start + CHUNK_SIZE].to(dtype)
        out[start : start + CHUNK_SIZE] = (chunk * chunk).sum(dim=1)
    return out


def squared_distance_to(queries: Tensor, bank: Tensor, index: Tensor) -> Tensor:
    r"""$\lVert q_i - b_{\text{index}_i} \rVert^2$ (Q,), from the differences (no cancellation).

    Computed in the dtype common to both inputs; differentiable with respect to both.
    """
    dtype = torch.promote_types(queries.dtype, bank.dtype)
    difference = queries.to(dtype) - bank[index].to(dtype)
    return (difference * difference).sum(dim=1)


def knn_score(
    features: Tensor,
    bank: Tensor,
    k: int,
    *,
    chunk_size: int = CHUNK_SIZE,
    index: Tensor | None = None,
) -> Tensor:
    r"""KNN score: minus the squared distance to the k-th nearest normalised fit feature.

    $$ S(x) = -\lVert z - z_{(k)} \rVert_2^2, \qquad z = \frac{x}{\lVert x \rVert_2} $$

    where $z_{(k)}$ is the k-th nearest row of ``bank`` (normalised fit features, N x D) to
    $z$. The neighbour is found by `kth_nearest` (unless ``index``, its result, is given), and
    its distance is recomputed from the difference $z - z_{(k)}$, so small distances keep full
    relative precision and gradients flow to ``features`` without a (Q, N) graph. Computed in
    the dtype common to ``features`` and ``bank``.
    """
    z = unit_rows(features.to(torch.promote_types(features.dtype, bank.dtype)))
    if index is None:
        index = kth_nearest(z.detach(), bank, k, chunk_size=chunk_size)
    return -squared_distance_to(z, bank, index)
