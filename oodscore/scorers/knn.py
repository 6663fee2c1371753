"""Deep nearest neighbours: distance to the k-th nearest normalised ID feature."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from oodscore._validation import check_int
from oodscore.functional.knn import CHUNK_SIZE, knn_score, unit_bank, unit_rows
from oodscore.scorers.base import ArrayLike, FittedScorer, register_scorer

Backend = Literal["torch", "faiss"]

UNIT_NORM_TOLERANCE = 1e-3
"""How far a loaded bank row's norm may be from 1 (or a zero row's from 0)."""


def import_faiss() -> Any:
    """The ``faiss`` module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError as error:
        raise ImportError(
            "KNN(backend='faiss') needs faiss: `pip install faiss-cpu`, or `pip install "
            "oodscore[faiss]`. backend='torch' (the default) needs nothing more."
        ) from error


@register_scorer("knn")
class KNN(FittedScorer):
    r"""Deep nearest neighbours: minus the squared distance to the k-th nearest ID feature.

    $$ S(x) = -\lVert z - z_{(k)} \rVert_2^2, \qquad z = \frac{x}{\lVert x \rVert_2} $$

    with $z_{(k)}$ the k-th nearest of the L2-normalised ID features stored by `fit` (the
    "bank"), so $S(x) = -(2 - 2\cos)$ for unit vectors; a zero vector stays zero. The search
    is exact, in chunks of ``chunk_size`` fit rows (memory bounded, never queries x fit
    rows). The distance to the neighbour found is recomputed from the difference of the
    two vectors, so it keeps full precision and gradients flow to the query. ``fit``
    ignores targets. Scoring the fit features themselves counts each point as its own
    nearest neighbour (distance 0), as the authors' code does.

    Args:
        k: Which neighbour: the score is the distance to the k-th nearest (1 <= k <= N fit
            rows). 50 is the authors' CIFAR-10 value; they use 1000 on ImageNet.
        backend: ``"torch"`` (chunked matrix products and ``torch.topk``) or ``"faiss"``
            (an exact ``faiss.IndexFlatL2`` search, float32, CPU; needs ``faiss-cpu``). Both
            give the same neighbours up to ties and float32 rounding.
        chunk_size: Fit rows compared with each block of queries at a time (torch backend).

    Examples:
        >>> import torch
        >>> from oodscore.scorers.knn import KNN
        >>> g = torch.Generator().manual_seed(0)
        >>> features = torch.randn(500, 3, generator=g) + torch.tensor([4.0, 0.0, 0.0])
        >>> scorer = KNN(k=5).fit(features)
        >>> scorer(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]))
        tensor([-1.1805e-03, -8.7223e-01, -3.3183e+00])

    Source: Sun, Ming, Zhu & Li, ICML 2022; ``deeplearning-wisc/knn-ood``.
    """

    state_names: ClassVar[tuple[str, ...]] = ("bank",)
    multilabel: ClassVar[bool] = True  # label-free: the features of any model

    def __init__(
        self, *, k: int = 50, backend: Backend = "torch", chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.k = check_int(k, "k")
        if backend not in get_args(Backend):
            raise ValueError(f"Expected `backend` to be 'torch' or 'faiss', got {backend!r}.")
        if backend == "faiss":
            import_faiss()
        self.backend: Backend = backend
        self.chunk_size = check_int(chunk_size, "chunk_size")
        self._faiss_index: tuple[Tensor, Any] | None = None

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The L2-normalised features (N, D), in their dtype; ``targets`` are ignored."""
        self._check_rows(features.shape[0], "the number of fit rows")
        return {"bank": unit_bank(features)}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the bank is (N, D) with N >= k rows of norm 1 (or 0)."""
        bank = state["bank"]
        if bank.ndim != 2:
            raise ValueError(f"Expected `state['bank']` of shape (N, D), got {tuple(bank.shape)}.")
        self._check_rows(bank.shape[0], "the number of rows of `state['bank']`")
        norms = torch.linalg.vector_norm(bank.to(torch.float64), dim=1)
        off = torch.minimum((norms - 1).abs(), norms)
        if bool((off > UNIT_NORM_TOLERANCE).any()):
            raise ValueError(
                "Expected the rows of `state['bank']` to be L2-normalised (norm 1, or 0 for a "
                f"zero row), got norms from {float(norms.min()):.6g} to {float(norms.max()):.6g}."
            )

    def score(self, x: Tensor) -> Tensor:
        """KNN score of checked features (N, D)."""
        bank = self.state_on(x.device)["bank"]
        index = None
        if self.backend == "faiss":
            index = self._faiss_kth(unit_rows(x.detach().to(bank.dtype)))
            index = index.to(x.device)
        return knn_score(x, bank, self.k, chunk_size=self.chunk_size, index=index).to(x.dtype)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the faiss index (rebuilt from the bank on use)."""
        state = dict(self.__dict__)
        state["_faiss_index"] = None
        return state

    def _check_rows(self, rows: int, what: str) -> None:
        if self.k > rows:
            raise ValueError(f"Expected `k` to be at most {what} N = {rows}, got k={self.k}.")

    def _faiss_kth(self, z: Tensor) -> Tensor:
        """Index of the k-th nearest bank row to each normalised query, by faiss (CPU)."""
        bank = self.state_dict()["bank"]
        cached = self._faiss_index
        if cached is None or cached[0] is not bank:
            faiss = import_faiss()
            index = faiss.IndexFlatL2(bank.shape[1])
            index.add(np.ascontiguousarray(bank.numpy(), dtype=np.float32))
            cached = self._faiss_index = (bank, index)
        queries = np.ascontiguousarray(z.cpu().numpy(), dtype=np.float32)
        _, neighbours = cached[1].search(queries, self.k)
        return torch.from_numpy(neighbours[:, -1].astype(np.int64))
