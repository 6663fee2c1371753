r"""Outlier detectors of scikit-learn fitted on in-distribution vectors: LOF, Isolation Forest.

The models are built from their fit data alone, with fixed settings (and, for the forest, a
fixed seed), so building twice from the same data gives the same model: a scorer keeps the
data as its state and rebuilds the model from it. scikit-learn computes on the CPU, in
float64 (the forest's trees split float32 copies, as scikit-learn always does).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

MaxSamples = int | float | Literal["auto"]


class OutlierModel(Protocol):
    """A fitted scikit-learn detector: ``score_samples`` is higher for inliers."""

    def score_samples(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:  # noqa: N803
        """Inlier scores (N,) of rows ``X`` (N, D)."""


def local_outlier_factor(data: Tensor, n_neighbors: int = 20) -> OutlierModel:
    r"""scikit-learn's ``LocalOutlierFactor(n_neighbors, novelty=True)`` fitted on ``data``.

    Its ``score_samples`` is $-\mathrm{LOF}_k(x)$ of new points against the fit set
    (Breunig et al. 2000), with Euclidean distances and exactly $k$ neighbours; the other
    arguments keep scikit-learn's defaults.

    Args:
        data: Fit rows (N, D), N > ``n_neighbors``.
        n_neighbors: $k$.
    """
    from sklearn.neighbors import LocalOutlierFactor

    model: OutlierModel = LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True)
    model.fit(_float64_numpy(data))  # type: ignore[attr-defined]
    return model


def isolation_forest(
    data: Tensor,
    n_estimators: int = 100,
    max_samples: MaxSamples = "auto",
    random_state: int = 42,
) -> OutlierModel:
    r"""scikit-learn's ``IsolationForest`` fitted on ``data``, seeded by a fresh RandomState.

    The seed is passed as ``numpy.random.RandomState(random_state)``, not as the integer:
    scikit-learn draws from the instance twice while fitting, so the two give different
    trees; the instance is what the JointEnergy paper's code passes. Its ``score_samples``
    is $-2^{-E[h(x)] / c(n)}$ (Liu et al. 2008), $h$ the path length, $n$ the sub-sample
    size.

    Args:
        data: Fit rows (N, D).
        n_estimators: The number of trees.
        max_samples: Rows per tree: ``"auto"`` (min(256, N)), an integer at most N, or a
            fraction of N.
        random_state: The seed of the RandomState.
    """
    from sklearn.ensemble import IsolationForest

    model: OutlierModel = IsolationForest(
        n_estimators=n_estimators,
        max_samples=max_samples,
        random_state=np.random.RandomState(random_state),
    )
    model.fit(_float64_numpy(data))  # type: ignore[attr-defined]
    return model


def outlier_model_scores(model: OutlierModel, x: Tensor) -> Tensor:
    """``model.score_samples`` of ``x`` (N, D), in float64 on the CPU, returned like ``x``.

    The scores carry no gradient: scikit-learn runs outside autograd.
    """
    scores = model.score_samples(_float64_numpy(x))
    return torch.from_numpy(np.asarray(scores, dtype=np.float64)).to(device=x.device, dtype=x.dtype)


def _float64_numpy(x: Tensor) -> np.ndarray[Any, Any]:
    return x.detach().to(device="cpu", dtype=torch.float64).numpy()
