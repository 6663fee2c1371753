"""Outlier detectors of scikit-learn fitted on in-distribution logits: LOF and Isolation Forest."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from numbers import Integral, Real
from typing import ClassVar

import torch
from torch import Tensor
from typing_extensions import Self

from oodscore._validation import Interval, check_int
from oodscore.functional.outlier_models import (
    MaxSamples,
    OutlierModel,
    isolation_forest,
    local_outlier_factor,
    outlier_model_scores,
)
from oodscore.scorers.base import ArrayLike, FittedScorer, InputKind, register_scorer

_SEED = Interval(Integral, 0, 2**32 - 1, closed="both")
_FRACTION = Interval(Real, 0, 1, closed="right")


class _OutlierModelScorer(FittedScorer):
    """A fitted logit scorer whose state is its fit logits and whose model is rebuilt from them.

    The scikit-learn model is never saved: `build_model` rebuilds it, deterministically, from
    the state after `fit` and after `load_state_dict`, so a loaded scorer gives the same
    scores. Scores are computed on the CPU in float64 and carry no gradient.
    """

    input_kind: ClassVar[InputKind] = "logits"
    differentiable: ClassVar[bool] = False
    multilabel: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ("logits",)

    _model: OutlierModel | None = None
    _model_data: Tensor | None = None

    @abstractmethod
    def build_model(self, data: Tensor) -> OutlierModel:
        """The scikit-learn model of the fit logits ``data`` (N, C), float64 on the CPU."""

    def check_rows(self, num_rows: int, name: str) -> None:
        """Check that ``num_rows`` fit rows (of argument ``name``) suit the hyper-parameters."""

    def fit(self, x: ArrayLike, /, targets: ArrayLike | None = None) -> Self:
        """Fit on in-distribution logits ``x`` (N, C); ``targets`` are ignored.

        Returns:
            The scorer itself, fitted.
        """
        super().fit(x, targets)
        self.outlier_model()
        return self

    def fit_state(self, logits: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """A float64 copy of the fit logits."""
        self.check_rows(logits.shape[0], "logits")
        return {"logits": logits.to(torch.float64, copy=True)}

    def load_state_dict(self, state: Mapping[str, object]) -> Self:
        """Restore the fit logits from `state_dict` and rebuild the model from them."""
        super().load_state_dict(state)
        self.outlier_model()
        return self

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the fit logits are (N, C) with enough rows."""
        logits = state["logits"]
        if logits.ndim != 2 or logits.shape[1] == 0:
            raise ValueError(
                f"Expected `state['logits']` of shape (N, C) with C >= 1, got "
                f"{tuple(logits.shape)}."
            )
        self.check_rows(logits.shape[0], "state['logits']")

    def outlier_model(self) -> OutlierModel:
        """The scikit-learn model of the current state, built once per state."""
        data = self.state_dict()["logits"]
        if self._model is None or self._model_data is not data:
            self._model = self.build_model(data.to(torch.float64))
            self._model_data = data
        return self._model

    def score(self, logits: Tensor) -> Tensor:
        """``score_samples`` of checked logits (N, C), in their dtype and on their device."""
        return outlier_model_scores(self.outlier_model(), logits)


@register_scorer("lof")
class LOF(_OutlierModelScorer):
    r"""Local outlier factor of the logits, against in-distribution logits (novelty mode).

    $$ S(x) = -\mathrm{LOF}_k(x) = -\frac{1}{k} \sum_{o \in N_k(x)}
       \frac{\mathrm{lrd}_k(o)}{\mathrm{lrd}_k(x)}, \qquad
       \mathrm{lrd}_k(p) = \Big(\frac{1}{k} \sum_{o \in N_k(p)}
       \max\big(d_k(o), \lVert p - o \rVert\big)\Big)^{-1} $$

    $N_k(p)$ are the $k$ fit rows nearest to $p$ (Euclidean) and $d_k(o)$ the distance from
    the fit row $o$ to its own $k$-th neighbour. ``fit(logits)`` takes ID logits (the
    JointEnergy paper fits on the validation split); targets are ignored. scikit-learn's
    ``LocalOutlierFactor(novelty=True)``, other arguments at their defaults; its
    ``score_samples`` is the score. $S \approx -1$ inside the ID data, lower outside. The
    state is the fit logits (float64); no gradient flows to the input.

    Args:
        n_neighbors: $k \ge 1$, less than the number of fit rows (default 20, scikit-learn's
            and the paper's).

    Examples:
        >>> import torch
        >>> from oodscore import LOF
        >>> g = torch.Generator().manual_seed(0)
        >>> scorer = LOF().fit(torch.randn(200, 3, generator=g, dtype=torch.float64))
        >>> scorer(torch.tensor([[0.0, 0.0, 0.0], [6.0, -6.0, 6.0]], dtype=torch.float64))
        tensor([-0.9643, -7.2611], dtype=torch.float64)

    Source: Breunig, Kriegel, Ng & Sander, SIGMOD 2000; as a baseline in Wang et al.,
    NeurIPS 2021, ``deeplearning-wisc/multi-label-ood``.
    """

    def __init__(self, *, n_neighbors: int = 20) -> None:
        self.n_neighbors = check_int(n_neighbors, "n_neighbors")

    def check_rows(self, num_rows: int, name: str) -> None:
        """Check ``n_neighbors < N``: each fit row needs ``n_neighbors`` other rows."""
        if self.n_neighbors >= num_rows:
            raise ValueError(
                f"Expected `n_neighbors` to be less than the number of rows of `{name}` "
                f"(N = {num_rows}), got n_neighbors={self.n_neighbors}: fit on at least "
                f"{self.n_neighbors + 1} rows or lower n_neighbors."
            )

    def build_model(self, data: Tensor) -> OutlierModel:
        """``LocalOutlierFactor(n_neighbors, novelty=True)`` fitted on ``data``."""
        return local_outlier_factor(data, self.n_neighbors)


@register_scorer("isolation_forest")
class IsolationForest(_OutlierModelScorer):
    r"""Isolation Forest on the logits: how hard an input is to isolate from ID logits.

    $$ S(x) = -2^{-\mathbb{E}[h(x)] / c(n)} $$

    $h(x)$ is the depth at which a random tree isolates $x$, averaged over the forest;
    $c(n)$ the average depth for $n$ sub-sampled rows. ``fit(logits)`` takes ID logits (the
    JointEnergy paper fits on the validation split); targets are ignored. scikit-learn's
    ``IsolationForest``, seeded with ``numpy.random.RandomState(random_state)`` as the
    paper's code; its ``score_samples`` is the score, in $[-1, 0]$, about $-0.5$ or above
    for inliers. The state is the fit logits (float64); the forest is rebuilt from them, so
    a loaded scorer gives the same scores. No gradient flows to the input.

    Args:
        n_estimators: The number of trees, >= 1 (default 100).
        max_samples: Rows drawn for each tree: ``"auto"`` (min(256, N)), an integer in
            [1, N], or a fraction in (0, 1] of N.
        random_state: Seed of the RandomState, an integer in [0, 2**32 - 1] (default 42,
            the paper's code).

    Examples:
        >>> import torch
        >>> from oodscore import IsolationForest
        >>> g = torch.Generator().manual_seed(0)
        >>> scorer = IsolationForest().fit(torch.randn(200, 3, generator=g))
        >>> scorer(torch.tensor([[0.0, 0.0, 0.0], [6.0, -6.0, 6.0]]))
        tensor([-0.3806, -0.7754])

    Source: Liu, Ting & Zhou, ICDM 2008; as a baseline in Wang et al., NeurIPS 2021,
    ``deeplearning-wisc/multi-label-ood``.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: MaxSamples = "auto",
        random_state: int = 42,
    ) -> None:
        self.n_estimators = check_int(n_estimators, "n_estimators")
        self.max_samples = _check_max_samples(max_samples)
        _SEED.check(random_state, "random_state")
        self.random_state = int(random_state)

    def check_rows(self, num_rows: int, name: str) -> None:
        """Check that ``max_samples`` draws at least 1 and at most N rows."""
        if isinstance(self.max_samples, str):
            return
        if isinstance(self.max_samples, int):
            drawn, what = self.max_samples, f"max_samples={self.max_samples}"
        else:
            drawn = int(self.max_samples * num_rows)
            what = f"max_samples={self.max_samples} (int({self.max_samples} * N) = {drawn} rows)"
        if not 1 <= drawn <= num_rows:
            raise ValueError(
                f"Expected `max_samples` to draw between 1 and the number of rows of `{name}` "
                f"(N = {num_rows}), got {what}."
            )

    def build_model(self, data: Tensor) -> OutlierModel:
        """``IsolationForest`` fitted on ``data`` with a fresh ``RandomState(random_state)``."""
        return isolation_forest(data, self.n_estimators, self.max_samples, self.random_state)


def _check_max_samples(value: object) -> MaxSamples:
    if value == "auto" and isinstance(value, str):
        return "auto"
    if isinstance(value, Integral) and not isinstance(value, bool):
        return check_int(value, "max_samples")
    if isinstance(value, Real) and value in _FRACTION:
        return float(value)
    raise ValueError(
        "Expected `max_samples` to be 'auto', an integer >= 1 or a finite number in (0, 1], "
        f"got {value!r}."
    )
