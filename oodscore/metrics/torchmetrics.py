r"""The OOD metrics as a ``torchmetrics.Metric``, for Lightning and torchmetrics users.

`TorchmetricsOODMetrics` computes what `oodscore.metrics.ood_metrics` (mode ``"exact"``)
or the binned `oodscore.metrics.OODMetrics` (mode ``"binned"``) computes, with the
machinery torchmetrics gives a metric: ``.to(device)``, ``reset``, ``forward`` (the value of
one batch while accumulating), ``state_dict`` (after ``persistent(True)``), ``merge_state``,
and synchronization across processes inside ``compute``, which Lightning calls for
``self.log``. It needs the optional torchmetrics (``pip install oodscore[torchmetrics]``);
``import oodscore`` does not import it.

States, and what crosses processes under DDP:

* ``"exact"``: the ID and the OOD scores, as lists of float64 tensors (``dist_reduce_fx=
  "cat"``): every process receives every score, as ``OODMetrics`` does.
* ``"binned"``: one int64 tensor of fixed size, ``8 + 2 * num_bins`` entries: the grid of
  `oodscore.metrics.histogram.Histogram` (exponent, window, data range), the ±inf counts,
  and the ID and OOD counts. Processes exchange these histograms, never scores, and sum
  them (`merge_histograms`): each process learns its own bin width from its data, so the
  histograms are first brought to a common grid (the widest width, then a window that
  holds every process's range: bins merge exactly), then summed count by count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from oodscore.metrics._cumulative import FprRule, metrics_of_tally
from oodscore.metrics._inputs import as_labels, as_scores
from oodscore.metrics.functional import fpr_key, metrics_dict, ood_metrics
from oodscore.metrics.histogram import Histogram
from oodscore.metrics.streaming import Mode, OODMetrics

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError:
    raise ImportError(
        "oodscore.metrics.torchmetrics needs torchmetrics, which is not installed; "
        "install it with `pip install oodscore[torchmetrics]`."
    ) from None

__all__ = ["TorchmetricsOODMetrics", "merge_histograms"]

HEADER = 8
"""Entries of a packed histogram before its counts: exponent, window start, data range
(low, high), then the ±inf counts (ID -inf, ID +inf, OOD -inf, OOD +inf)."""

_NO_EXPONENT = -(2**62)  # the exponent of a histogram that has seen no finite score
_EXACT_INTEGER = 2**53  # integers up to this magnitude are exact in float64


class TorchmetricsOODMetrics(Metric):
    r"""AUROC, AUPR-In, AUPR-Out and FPR at a TPR as a ``torchmetrics.Metric``, exact or binned.

    ``update(scores, is_ood)`` adds a batch (scores: higher = more in-distribution; is_ood:
    True/1 for OOD inputs); ``compute()`` returns ``{"auroc", "aupr_in", "aupr_out",
    "fpr95"}`` as float64 0-d tensors on the metric's device, equal to
    ``oodscore.metrics.ood_metrics`` on every score seen (``"exact"``), or to the binned
    `oodscore.metrics.OODMetrics` (``"binned"``, fixed memory, bounded error). Calling the
    metric (``forward``) adds the batch and returns the batch's own metrics. With ``key``,
    ``compute`` returns that one metric as a tensor, the form ``LightningModule.log``
    accepts for a metric object (``self.log("val/auroc", metric)``); without it, log the
    dictionary with ``self.log_dict(metric.compute())`` and ``reset`` it yourself.

    Until both an ID and an OOD score have been seen (a sanity-check pass of ID batches
    only, a batch of one kind), the metrics are NaN; ``compute`` warns then. Scores are
    kept as float64 (exact for float16/32/64 and for integers up to 2**53 in magnitude;
    larger integers are refused). Under DDP see the module docs for what is exchanged.

    Args:
        mode: ``"exact"`` (every score kept) or ``"binned"`` (two histograms).
        tpr: TPR of the FPR entry, in (0, 1] (key ``fpr95`` for 0.95).
        rule: FPR rule, as in `oodscore.metrics.fpr_at_tpr`.
        num_bins: Binned mode: bins per histogram (at least 16).
        score_range: Binned mode: ``(low, high)`` the scores are expected in, as for
            `oodscore.metrics.OODMetrics`.
        key: ``None`` (a dictionary) or one key of it: ``"auroc"``, ``"aupr_in"``,
            ``"aupr_out"`` or the FPR's (``"fpr95"`` for ``tpr=0.95``).
        **kwargs: torchmetrics' own (``dist_sync_on_step``, ``process_group``,
            ``dist_sync_fn``, ``sync_on_compute``, ``compute_on_cpu``, ...).

    Examples:
        >>> import torch
        >>> from oodscore.metrics.torchmetrics import TorchmetricsOODMetrics
        >>> metric = TorchmetricsOODMetrics()
        >>> metric.update(torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0, 0, 0]))
        >>> metric.update(torch.tensor([0.1, 0.4]), torch.tensor([True, True]))
        >>> {name: round(float(value), 4) for name, value in metric.compute().items()}
        {'auroc': 0.9167, 'aupr_in': 0.9167, 'aupr_out': 0.8333, 'fpr95': 0.5}
        >>> auroc = TorchmetricsOODMetrics("binned", key="auroc")
        >>> auroc(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([0, 1, 1]))
        tensor(1., dtype=torch.float64)

    Source: the metrics of `oodscore.metrics`; torchmetrics' ``Metric`` (Lightning-AI).
    """

    is_differentiable = False
    higher_is_better = None  # AUROC and the AUPRs: higher; the FPR: lower
    full_state_update = False

    id_scores: list[Tensor] | Tensor
    ood_scores: list[Tensor] | Tensor
    histogram: Tensor

    def __init__(
        self,
        mode: Mode = "exact",
        *,
        tpr: float = 0.95,
        rule: FprRule = "first",
        num_bins: int = 2**16,
        score_range: tuple[float, float] | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The settings pass the checks of OODMetrics, which reads them the same way.
        settings = OODMetrics(mode, tpr=tpr, rule=rule, num_bins=num_bins, score_range=score_range)
        self.mode: Mode = settings.mode
        self.tpr = settings.tpr
        self.rule: FprRule = settings.rule
        self.num_bins = settings.num_bins
        self.score_range = settings.score_range
        keys = ("auroc", "aupr_in", "aupr_out", fpr_key(self.tpr))
        if key is not None and key not in keys:
            raise ValueError(f"Expected `key` to be None or one of {list(keys)}, got {key!r}.")
        self.key = key
        self._batch_call = False
        if self.mode == "exact":
            self.add_state("id_scores", default=[], dist_reduce_fx="cat")
            self.add_state("ood_scores", default=[], dist_reduce_fx="cat")
        else:
            empty = Histogram(self.num_bins)
            if self.score_range is not None:
                empty.make_room(np.array(self.score_range))
            self.add_state("histogram", default=_pack(empty), dist_reduce_fx=merge_histograms)
        self._hold_empty_parts()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, tpr={self.tpr!r}, rule={self.rule!r}, "
            f"num_bins={self.num_bins!r}, score_range={self.score_range!r}, key={self.key!r})"
        )

    def update(self, scores: object, is_ood: object) -> None:
        """Add a batch.

        Args:
            scores: ``(B,)`` scores, a tensor (any device) or a NumPy array, higher = more
                in-distribution. ±inf allowed, NaN not.
            is_ood: ``(B,)`` bool or 0/1 integers, True/1 for OOD inputs.

        Raises:
            TypeError: Wrong kind or dtype of either argument.
            ValueError: Not 1-D, lengths differ, NaN in ``scores``, values other than 0/1
                in ``is_ood``, integers beyond 2**53 in magnitude (exact mode).
        """
        values = as_scores(scores, "scores", allow_empty=True)
        labels = as_labels(is_ood, values.shape[0])
        if values.shape[0] == 0:
            return
        if self.mode == "binned":
            histogram = self._histogram()
            histogram.add(values, labels)
            self.histogram = _pack(histogram).to(self.device)
            return
        exact = _as_float64(values)
        assert isinstance(self.id_scores, list)
        assert isinstance(self.ood_scores, list)
        self.id_scores.append(torch.from_numpy(exact[~labels]).to(self.device))
        self.ood_scores.append(torch.from_numpy(exact[labels]).to(self.device))

    def compute(self) -> dict[str, Tensor] | Tensor:
        """The metrics of every score seen (on every process under DDP).

        Returns:
            ``{"auroc", "aupr_in", "aupr_out", "fpr95"}`` as float64 0-d tensors, or the
            one metric ``key`` names. NaN (with a warning) before an ID and an OOD score
            have been seen.
        """
        if self.mode == "binned":
            histogram = self._histogram()
            n_id, n_ood = (int(n) for n in histogram.counts.sum(1) + histogram.infinite.sum(1))
            if n_id and n_ood:
                binned = metrics_of_tally(histogram.tally(), self.tpr, self.rule)
                return self._result(metrics_dict(binned, self.tpr))
        else:
            id_scores = dim_zero_cat(self.id_scores).cpu().numpy()
            ood_scores = dim_zero_cat(self.ood_scores).cpu().numpy()
            n_id, n_ood = id_scores.shape[0], ood_scores.shape[0]
            if n_id and n_ood:
                return self._result(ood_metrics(id_scores, ood_scores, self.tpr, rule=self.rule))
        if not self._batch_call:
            warnings.warn(
                f"{type(self).__name__} has seen {n_id} ID and {n_ood} OOD scores; the OOD "
                "metrics need both, and are NaN.",
                UserWarning,
                stacklevel=3,  # past torchmetrics' wrapper of compute
            )
        nan = dict.fromkeys(("auroc", "aupr_in", "aupr_out", fpr_key(self.tpr)), float("nan"))
        return self._result(nan)

    def forward(self, scores: object, is_ood: object) -> Any:
        """Add the batch, and return its own metrics (NaN for a batch without ID or OOD)."""
        self._batch_call = True
        try:
            return super().forward(scores, is_ood)
        finally:
            self._batch_call = False

    def reset(self) -> None:
        """Forget every score seen."""
        super().reset()
        self._hold_empty_parts()

    def _apply(self, fn: Callable[..., Any], exclude_state: Sequence[str] = ()) -> nn.Module:
        """``.to()``, ``.cuda()``, ``set_dtype``...: the states follow the device, never a dtype.

        The scores stay float64 and the counts int64, so that ``.half()`` or Lightning's
        ``"16-true"`` precision cannot round scores into ties or counts into floats.
        """
        own = tuple(self._defaults)
        this = super()._apply(fn, exclude_state=(*exclude_state, *own))
        device = self.device  # updated by torchmetrics from ``fn``
        for name in own:
            if name in exclude_state:
                continue
            state = getattr(self, name)
            if isinstance(state, Tensor):
                setattr(self, name, state.to(device))
            else:
                setattr(self, name, [part.to(device) for part in state])
            default = self._defaults[name]
            if isinstance(default, Tensor):
                self._defaults[name] = default.to(device)
        return this

    def _hold_empty_parts(self) -> None:
        # A list state is never empty: torchmetrics would stand in for an empty one with a
        # tensor of the default dtype, and processes would exchange mismatched dtypes.
        if self.mode == "exact":
            for name in ("id_scores", "ood_scores"):
                getattr(self, name).append(torch.empty(0, dtype=torch.float64, device=self.device))

    def _histogram(self) -> Histogram:
        size = HEADER + 2 * self.num_bins
        if tuple(self.histogram.shape) != (size,):
            raise ValueError(
                f"Expected the binned state of {type(self).__name__}(num_bins={self.num_bins}) "
                f"to have {size} entries, got shape {tuple(self.histogram.shape)}: it was "
                "loaded from a metric with another num_bins."
            )
        return _unpack(self.histogram)

    def _result(self, values: dict[str, float]) -> dict[str, Tensor] | Tensor:
        tensors = {
            name: torch.tensor(value, dtype=torch.float64, device=self.device)
            for name, value in values.items()
        }
        return tensors if self.key is None else tensors[self.key]


def _as_float64(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Checked scores as float64, exactly: integers beyond 2**53 in magnitude are refused."""
    if values.dtype.kind in "iu":
        wide = values.astype(np.uint64 if values.dtype.kind == "u" else np.int64)
        big = wide > _EXACT_INTEGER
        if values.dtype.kind == "i":
            big |= wide < -_EXACT_INTEGER
        if big.any():
            first = int(np.argmax(big))
            raise ValueError(
                "Expected integer `scores` of magnitude at most 2**53 (exact in float64), got "
                f"{values[first].item()} at index {first}; use oodscore.metrics.OODMetrics, "
                "which keeps int64 scores."
            )
    return values.astype(np.float64)


def _pack(histogram: Histogram) -> Tensor:
    """A histogram as one int64 tensor of ``HEADER + 2 * num_bins`` entries (module docs)."""
    exponent = _NO_EXPONENT if histogram.exponent is None else histogram.exponent
    header = [exponent, histogram.start, histogram.low, histogram.high]
    parts = [np.array(header, np.int64), histogram.infinite.ravel(), histogram.counts.ravel()]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def _unpack(packed: Tensor) -> Histogram:
    """The `Histogram` of a tensor made by `_pack` (on any device), with copied counts."""
    values = packed.detach().cpu().numpy().astype(np.int64)
    histogram = Histogram((values.shape[0] - HEADER) // 2)
    exponent, histogram.start, histogram.low, histogram.high = (int(v) for v in values[:4])
    histogram.exponent = None if exponent == _NO_EXPONENT else exponent
    histogram.infinite = values[4:HEADER].reshape(2, 2).copy()
    histogram.counts = values[HEADER:].reshape(2, -1).copy()
    return histogram


def merge_histograms(stacked: Tensor) -> Tensor:
    """The sum of packed histograms ``(K, L)``, on a grid that holds them all: ``(L,)``.

    The reduction of the binned state, across processes and in ``forward``. Each
    histogram is brought to the widest bin width of all (merging its bins, exactly), then
    to one window that covers every histogram's range (merging further while it does not
    fit ``num_bins`` bins); the counts are then summed bin by bin, and the ±inf counts too.
    The same grid as `oodscore.metrics.OODMetrics` reaches under DDP.
    """
    histograms = [_unpack(row) for row in stacked]
    exponents = [h.exponent for h in histograms if h.exponent is not None]
    if exponents:
        exponent = max(exponents)
        for h in histograms:
            if h.exponent is not None:
                h.coarsen(exponent - h.exponent)
        ranges = [(h.low, h.high) for h in histograms if h.has_finite]
        if ranges:
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
            for h in histograms:  # each ends on the same grid: same inputs, same steps
                h.ensure(exponent, (low, exponent), (high, exponent))
                h.force_window(h.low)
    total = next((h for h in histograms if h.exponent is not None), histograms[0])
    total.counts = np.sum([h.counts for h in histograms], axis=0)
    total.infinite = np.sum([h.infinite for h in histograms], axis=0)
    return _pack(total).to(stacked.device)
