"""`Report`: OOD metrics per (OOD set, scorer), as tables and files (plots: `oodscore.plotting`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from oodscore._arrays import check_numeric
from oodscore.io import write_atomic
from oodscore.metrics import FprRule, ood_metrics
from oodscore.plotting import report_figure, save_figure

MEAN = "mean"
"""The OOD-set label of the rows that average each scorer's metrics over the OOD sets."""

_HEADINGS = {
    "auroc": "AUROC ↑",
    "aupr_in": "AUPR-In ↑",
    "aupr_out": "AUPR-Out ↑",
    "accuracy": "accuracy",
    "map": "mAP",
}

Array = np.ndarray[Any, Any]
PathLike = str | os.PathLike[str]


class Report:
    r"""OOD-detection metrics of several scorers on one ID set against several OOD sets.

    Rows are (OOD set, scorer) pairs in the order given, followed, when there are two OOD
    sets or more, by one ``"mean"`` row per scorer: the unweighted mean of that scorer's
    metrics over the OOD sets (each set counts once, whatever its size, as in the tables of
    the OOD literature). Columns are the metrics of `oodscore.metrics.ood_metrics`
    (AUROC, AUPR-In, AUPR-Out, FPR at 95% TPR; ID is the positive class). The report can
    also carry the ID task's own quality (``accuracy`` for class targets, ``map`` for
    multi-hot targets), the layer whose features the feature scorers read, and the raw
    scores, which `plot` needs.

    Reports come from `oodscore.evaluate`, `oodscore.evaluate_logits` or
    `from_scores`; the constructor takes finished metrics.

    Args:
        metrics: ``{(ood_set, scorer): {metric: value}}``; every entry has the same metrics
            and every OOD set is paired with every scorer.
        id_metrics: Metrics of the ID task, e.g. ``{"accuracy": 0.97}``.
        num_samples: ``{"id": n, ood_set: n, ...}``, the sizes behind the metrics.
        id_scores: ``{scorer: scores of the ID samples}``, for `plot`.
        ood_scores: ``{ood_set: {scorer: scores of that set}}``, for `plot`.
        feature_layer: The layer the feature scorers read, e.g. ``"fc (input)"`` (set by
            `oodscore.evaluate` when a feature scorer ran); ``None`` otherwise.

    Examples:
        >>> import numpy as np
        >>> from oodscore import Report
        >>> report = Report.from_scores(
        ...     {"msp": np.array([0.9, 0.8, 0.7])},
        ...     {"far": {"msp": np.array([0.1, 0.75])}, "near": {"msp": np.array([0.85, 0.8])}},
        ... )
        >>> far = report["far", "msp"]
        >>> far["auroc"]
        0.8333333333333334
        >>> print(report.to_markdown())
        ID: 3 samples. OOD sets (samples): far (2), near (2).
        <BLANKLINE>
        | OOD set | scorer | AUROC ↑ | AUPR-In ↑ | AUPR-Out ↑ | FPR@95TPR ↓ |
        |---|---|---:|---:|---:|---:|
        | far | msp | 0.8333 | 0.9167 | 0.8333 | 0.5000 |
        | near | msp | 0.4167 | 0.7000 | 0.4167 | 1.0000 |
        | mean | msp | 0.6250 | 0.8083 | 0.6250 | 0.7500 |
    """

    def __init__(
        self,
        metrics: Mapping[tuple[str, str], Mapping[str, float]],
        *,
        id_metrics: Mapping[str, float] | None = None,
        num_samples: Mapping[str, int] | None = None,
        id_scores: Mapping[str, Array] | None = None,
        ood_scores: Mapping[str, Mapping[str, Array]] | None = None,
        feature_layer: str | None = None,
    ) -> None:
        if not metrics:
            raise ValueError("Expected `metrics` to hold at least one (OOD set, scorer) entry.")
        ood_sets: list[str] = []
        scorers: list[str] = []
        for key in metrics:
            if not (
                isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)
            ):
                raise TypeError(
                    "Expected the keys of `metrics` to be (ood_set, scorer) string pairs, "
                    f"got {key!r}."
                )
            if key[0] not in ood_sets:
                ood_sets.append(key[0])
            if key[1] not in scorers:
                scorers.append(key[1])
        if feature_layer is not None and not isinstance(feature_layer, str):
            raise TypeError(
                f"Expected `feature_layer` to be a str or None, got {type(feature_layer).__name__}."
            )
        if MEAN in ood_sets:
            raise ValueError(f"The OOD-set name {MEAN!r} is reserved for the mean rows; rename it.")
        columns = list(next(iter(metrics.values())))
        for ood_set in ood_sets:
            for scorer in scorers:
                entry = metrics.get((ood_set, scorer))
                if entry is None:
                    raise ValueError(f"`metrics` has no entry for ({ood_set!r}, {scorer!r}).")
                if list(entry) != columns:
                    raise ValueError(
                        f"Expected every entry of `metrics` to hold {columns}, got {list(entry)} "
                        f"for ({ood_set!r}, {scorer!r})."
                    )
        self._metrics = {
            key: {name: float(value) for name, value in entry.items()}
            for key, entry in metrics.items()
        }
        self.ood_sets: tuple[str, ...] = tuple(ood_sets)
        """OOD-set names, in row order."""
        self.scorers: tuple[str, ...] = tuple(scorers)
        """Scorer labels, in row order."""
        self.columns: tuple[str, ...] = tuple(columns)
        """Metric names, in column order."""
        self.id_metrics: dict[str, float] = {k: float(v) for k, v in (id_metrics or {}).items()}
        """Quality of the ID task (``accuracy`` or ``map``); empty without targets."""
        self.num_samples: dict[str, int] = {k: int(v) for k, v in (num_samples or {}).items()}
        """Number of samples of the ID set (key ``"id"``) and of each OOD set."""
        self.id_scores: dict[str, Array] = dict(id_scores or {})
        """Scores of the ID samples per scorer (empty when the report holds no scores)."""
        self.ood_scores: dict[str, dict[str, Array]] = {
            k: dict(v) for k, v in (ood_scores or {}).items()
        }
        """Scores of each OOD set per scorer (empty when the report holds no scores)."""
        self.feature_layer: str | None = feature_layer
        """The layer whose features the feature scorers read (``"fc (input)"``), or ``None``."""
        if self.id_scores or self.ood_scores:
            self._check_scores()

    def _check_scores(self) -> None:
        """Scores, when given, cover every scorer of the ID set and every (OOD set, scorer)."""
        missing = [("id", n) for n in self.scorers if n not in self.id_scores]
        missing += [
            (s, n)
            for s in self.ood_sets
            for n in self.scorers
            if n not in self.ood_scores.get(s, {})
        ]
        if missing:
            raise ValueError(
                "Expected `id_scores` and `ood_scores` to hold the scores of every row, but "
                f"{len(missing)} are missing (first: {missing[0]})."
            )

    @classmethod
    def from_scores(
        cls,
        id_scores: Mapping[str, Any],
        ood_scores: Mapping[str, Mapping[str, Any]],
        *,
        id_metrics: Mapping[str, float] | None = None,
        tpr: float = 0.95,
        rule: FprRule = "first",
        feature_layer: str | None = None,
    ) -> Report:
        """Compute the metrics of every (OOD set, scorer) pair from raw scores.

        Args:
            id_scores: ``{scorer: ID scores}`` (NumPy arrays or tensors of shape (N,)).
            ood_scores: ``{ood_set: {scorer: scores}}``; every set has every scorer.
            id_metrics: Metrics of the ID task to carry along.
            tpr: The TPR of the FPR column (see `oodscore.metrics.fpr_at_tpr`).
            rule: How the FPR column reads the ROC curve (see
                `oodscore.metrics.fpr_at_tpr`).
            feature_layer: The layer the feature scorers read, to carry along.
        """
        for name, value in (("id_scores", id_scores), ("ood_scores", ood_scores)):
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"Expected `{name}` to be a dict keyed by "
                    f"{'scorer' if name == 'id_scores' else 'OOD set'} name, "
                    f"got {type(value).__name__}."
                )
        if not id_scores:
            raise ValueError("Expected `id_scores` to hold at least one scorer.")
        if not ood_scores:
            raise ValueError("Expected `ood_scores` to hold at least one OOD set.")
        id_arrays = {name: _as_numpy(s, f"id_scores[{name!r}]") for name, s in id_scores.items()}
        ood_arrays: dict[str, dict[str, Array]] = {}
        metrics: dict[tuple[str, str], dict[str, float]] = {}
        for ood_set, per_scorer in ood_scores.items():
            if set(per_scorer) != set(id_arrays):
                raise ValueError(
                    f"Expected OOD set {ood_set!r} to have scores of {sorted(id_arrays)}, "
                    f"got {sorted(per_scorer)}."
                )
            ood_arrays[ood_set] = {}
            for name in id_arrays:
                ood = _as_numpy(per_scorer[name], f"ood_scores[{ood_set!r}][{name!r}]")
                ood_arrays[ood_set][name] = ood
                values = ood_metrics(id_arrays[name], ood, tpr, rule=rule)
                metrics[ood_set, name] = {k: float(v) for k, v in values.items()}
        sizes = {"id": len(next(iter(id_arrays.values())))}
        sizes.update({s: len(next(iter(v.values()))) for s, v in ood_arrays.items()})
        return cls(
            metrics,
            id_metrics=id_metrics,
            num_samples=sizes,
            id_scores=id_arrays,
            ood_scores=ood_arrays,
            feature_layer=feature_layer,
        )

    def __getitem__(self, key: tuple[str, str]) -> dict[str, float]:
        """The metrics of ``(ood_set, scorer)``; ``("mean", scorer)`` gives the mean row."""
        ood_set, scorer = key
        if ood_set == MEAN and scorer in self.scorers:
            return self.mean(scorer)
        try:
            return dict(self._metrics[ood_set, scorer])
        except KeyError:
            raise KeyError(
                f"No row ({ood_set!r}, {scorer!r}); OOD sets: {list(self.ood_sets)}, "
                f"scorers: {list(self.scorers)}."
            ) from None

    def mean(self, scorer: str) -> dict[str, float]:
        """The metrics of ``scorer`` averaged over the OOD sets (each set counts once)."""
        if scorer not in self.scorers:
            raise KeyError(f"No scorer {scorer!r}; scorers: {list(self.scorers)}.")
        return {
            column: math.fsum(self._metrics[s, scorer][column] for s in self.ood_sets)
            / len(self.ood_sets)
            for column in self.columns
        }

    def rows(self) -> list[tuple[str, str, dict[str, float]]]:
        """Every row as ``(ood_set, scorer, metrics)``, the mean rows last (2+ OOD sets)."""
        out = [(s, n, dict(self._metrics[s, n])) for s in self.ood_sets for n in self.scorers]
        if len(self.ood_sets) > 1:
            out.extend((MEAN, n, self.mean(n)) for n in self.scorers)
        return out

    def __repr__(self) -> str:
        layer = "" if self.feature_layer is None else f", feature_layer={self.feature_layer!r}"
        return (
            f"Report(ood_sets={list(self.ood_sets)}, scorers={list(self.scorers)}, "
            f"columns={list(self.columns)}, id_metrics={self.id_metrics}{layer})"
        )

    # ------------------------------------------------------------------ text formats

    def to_markdown(self, *, digits: int = 4) -> str:
        """A markdown table, preceded by a line on the ID and OOD sets (and the feature layer).

        Args:
            digits: Decimals shown (values are fractions in [0, 1]).
        """
        lines = []
        summary = self._id_summary(digits)
        if summary:
            lines += [summary, ""]
        headings = [_heading(c) for c in self.columns]
        lines.append("| OOD set | scorer | " + " | ".join(headings) + " |")
        lines.append("|---|---|" + "---:|" * len(self.columns))
        for ood_set, scorer, values in self.rows():
            cells = [
                _cell(ood_set),
                _cell(scorer),
                *(_format(values[c], digits) for c in self.columns),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _id_summary(self, digits: int) -> str:
        parts = []
        if "id" in self.num_samples:
            parts.append(f"{self.num_samples['id']} samples")
        parts += [f"{_heading(k)} {_format(v, digits)}" for k, v in self.id_metrics.items()]
        sets = [f"{s} ({self.num_samples[s]})" for s in self.ood_sets if s in self.num_samples]
        text = f"ID: {', '.join(parts)}." if parts else ""
        if sets:
            text += (" " if text else "") + f"OOD sets (samples): {', '.join(sets)}."
        if self.feature_layer is not None:
            text += (" " if text else "") + f"Features: {_cell(self.feature_layer)}."
        return text

    def to_csv(
        self,
        path: PathLike | None = None,
        *,
        force: bool = False,
        inputs: Iterable[PathLike] = (),
    ) -> str:
        """The rows as CSV (``ood_set,scorer,<metrics>``, full precision); written if ``path``.

        The ID metrics are not part of the table; `to_json` has them. A text cell (an OOD-set
        or scorer label, a column name) that begins with ``=``, ``+``, ``-``, ``@``, a tab or
        a carriage return is written with a leading ``'``, so that a spreadsheet shows it
        instead of running it as a formula (OWASP's advice against CSV injection); the
        numbers are written as they are.

        Args:
            path: File to write atomically; it must not exist unless ``force``.
            force: Overwrite an existing ``path``.
            inputs: Files the report was made from; ``path`` may never be one of them.
        """
        lines = [",".join(_csv_text(c) for c in ("ood_set", "scorer", *self.columns))]
        for ood_set, scorer, values in self.rows():
            numbers = [repr(values[c]) for c in self.columns]
            lines.append(",".join([_csv_text(ood_set), _csv_text(scorer), *numbers]))
        text = "".join(line + "\n" for line in lines)
        if path is not None:
            write_atomic(path, text, force=force, inputs=inputs)
        return text

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data: ID metrics, sample sizes, feature layer, rows, mean rows.

        Metrics that are not finite (NaN, e.g. the mAP of a class without positives) are
        ``None``, as JSON has no NaN.
        """
        rows = self.rows()
        return {
            "columns": list(self.columns),
            "id_metrics": {k: _json_number(v) for k, v in self.id_metrics.items()},
            "num_samples": dict(self.num_samples),
            "feature_layer": self.feature_layer,
            "rows": [
                {"ood_set": s, "scorer": n, **{c: _json_number(v[c]) for c in self.columns}}
                for s, n, v in rows
                if s != MEAN
            ],
            "mean": [
                {"scorer": n, **{c: _json_number(v[c]) for c in self.columns}}
                for s, n, v in rows
                if s == MEAN
            ],
        }

    def to_json(
        self,
        path: PathLike | None = None,
        *,
        force: bool = False,
        inputs: Iterable[PathLike] = (),
        indent: int | None = 2,
    ) -> str:
        """`to_dict` as JSON (NaN becomes ``null``); written atomically if ``path``.

        Args:
            path: File to write; it must not exist unless ``force``.
            force: Overwrite an existing ``path``.
            inputs: Files the report was made from; ``path`` may never be one of them.
            indent: Indentation of the JSON text (``None``: one line).
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            write_atomic(path, text, force=force, inputs=inputs)
        return text

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` indexed by (ood_set, scorer), mean rows included.

        The ID metrics, sample sizes and feature layer are in ``DataFrame.attrs``.

        Raises:
            ImportError: If pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Report.to_pandas() needs pandas, which is not installed; "
                "install it with `pip install 'oodscore[pandas]'` (or `pip install pandas`)."
            ) from None
        rows = self.rows()
        index = pd.MultiIndex.from_tuples([(s, n) for s, n, _ in rows], names=["ood_set", "scorer"])
        frame = pd.DataFrame(
            [[v[c] for c in self.columns] for _, _, v in rows],
            index=index,
            columns=list(self.columns),
        )
        frame.attrs["id_metrics"] = dict(self.id_metrics)
        frame.attrs["num_samples"] = dict(self.num_samples)
        frame.attrs["feature_layer"] = self.feature_layer
        return frame

    # ------------------------------------------------------------------ plots

    def plot(
        self,
        path: PathLike,
        *,
        force: bool = False,
        inputs: Iterable[PathLike] = (),
        bins: int = 40,
        dpi: int = 100,
        title: str | None = None,
    ) -> None:
        """Save score histograms (ID vs each OOD set) and ROC curves to an image file.

        One row of panels per scorer: a histogram of the ID and OOD scores for each OOD set,
        then the ROC curves of every OOD set (ID positive, AUROC in the legend). The format
        comes from the extension of ``path`` (``.png``, ``.pdf``, ``.svg``...); the file is
        written atomically and never over an input. See `oodscore.plotting`.

        Args:
            path: Image file to write; it must not exist unless ``force``.
            force: Overwrite an existing ``path``.
            inputs: Files the report was made from; ``path`` may never be one of them.
            bins: Histogram bins (shared by ID and OOD in each panel).
            dpi: Resolution of raster formats.
            title: The figure's title (default: what the panels show).

        Raises:
            ImportError: If matplotlib is not installed (``pip install oodscore[plot]``).
            ValueError: If the report holds no scores, or the format is unknown.
        """
        figure = self.figure(bins=bins, title=title)
        save_figure(figure, path, force=force, inputs=inputs, dpi=dpi)

    def figure(self, *, bins: int = 40, title: str | None = None) -> Any:
        """The `plot` figure as a ``matplotlib.figure.Figure`` (not shown, not saved)."""
        return report_figure(self, bins=bins, title=title)


def _as_numpy(x: Any, name: str) -> Array:
    """Scores as a 1-D float64 NumPy array (from NumPy, torch or a sequence)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    check_numeric(array.dtype, name)
    if array.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D, got shape {array.shape}.")
    return array.astype(np.float64, copy=False)


def _cell(text: str) -> str:
    """A markdown table cell: pipes escaped, line breaks flattened."""
    return text.replace("|", "\\|").replace("\n", " ")


def _format(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """A CSV text cell that a spreadsheet will not run as a formula, quoted where needed.

    Quoted when it holds a comma, a quote or a line break of either kind (`csv.writer`
    leaves a lone carriage return unquoted, which splits the row when read back).
    """
    if text.startswith(_FORMULA_STARTS):
        text = f"'{text}"
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _heading(key: str) -> str:
    """Table heading of a metric key (``fpr95`` -> ``FPR@95TPR ↓``)."""
    if key.startswith("fpr") and key[3:4].isdigit():
        return f"FPR@{key[3:]}TPR ↓"
    return _HEADINGS.get(key, key)
