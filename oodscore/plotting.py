"""Plots of a `oodscore.Report`: score histograms (ID vs each OOD set) and ROC curves.

matplotlib is optional (``pip install oodscore[plot]``); it is imported when a figure is
drawn, so that the rest of the library works without it. `oodscore.Report.figure` and
`oodscore.Report.plot` call the functions here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodscore.io import write_atomic
from oodscore.metrics import roc_curve

if TYPE_CHECKING:
    from oodscore.report import PathLike, Report

__all__ = [
    "check_plot_path",
    "clip_to_finite",
    "comparison_figure",
    "report_figure",
    "save_figure",
]

LEGEND_BELOW: dict[str, Any] = {
    "loc": "upper center",
    "bbox_to_anchor": (0.5, -0.28),
    "fontsize": 7,
}
"""Legends sit under their panel, so they never hide a curve or a bar."""

LINE_STYLES = ("-", "--", "-.", ":")
"""Line styles of the models in `comparison_figure`, in order."""


def report_figure(report: Report, *, bins: int = 40, title: str | None = None) -> Any:
    """The histograms and ROC curves of ``report`` as a ``matplotlib.figure.Figure``.

    One row of panels per scorer: a histogram of the ID and OOD scores for each OOD set
    (bins shared by ID and OOD), then the ROC curves of every OOD set (ID positive, AUROC in
    the legend). Every panel has a title and axis labels, legends sit under their panel, and
    the figure's title says what is shown. The figure is neither shown nor saved.

    Args:
        report: A report holding scores (from `oodscore.evaluate`,
            `oodscore.evaluate_logits` or `oodscore.Report.from_scores`).
        bins: Histogram bins.
        title: The figure's title (default: what the panels show).

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the report holds no scores.
    """
    if not report.id_scores or not report.ood_scores:
        raise ValueError(
            "This report holds no scores to plot; build it with oodscore.evaluate, "
            "oodscore.evaluate_logits or Report.from_scores."
        )
    Figure = _figure_class()  # noqa: N806 (a class)
    n_rows, n_cols = len(report.scorers), len(report.ood_sets) + 1
    figure = Figure(figsize=(3.4 * n_cols, 3.3 * n_rows), layout="constrained")
    figure.suptitle(
        title or "OOD scores: ID vs each OOD set, and ROC curves (higher score = more ID)",
        fontsize=10,
    )
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for row, scorer in enumerate(report.scorers):
        id_scores = report.id_scores[scorer]
        roc_axis = axes[row, -1]
        for col, ood_set in enumerate(report.ood_sets):
            ood = report.ood_scores[ood_set][scorer]
            axis = axes[row, col]
            (id_shown, ood_shown), note = clip_to_finite(id_scores, ood)
            edges = np.histogram_bin_edges(np.concatenate([id_shown, ood_shown]), bins=bins)
            axis.hist(id_shown, bins=edges, density=True, alpha=0.55, label="ID")
            axis.hist(ood_shown, bins=edges, density=True, alpha=0.55, label=ood_set)
            axis.set_title(f"{scorer}: ID vs {ood_set}", fontsize=9)
            axis.set_xlabel("score (higher = more ID)", fontsize=8)
            axis.set_ylabel("density", fontsize=8)
            axis.legend(ncols=2, **LEGEND_BELOW)
            if note:
                axis.text(0.02, 0.98, note, transform=axis.transAxes, va="top", fontsize=6)
            fpr, tpr, _ = roc_curve(id_scores, ood)
            auroc = report[ood_set, scorer].get("auroc", float("nan"))
            roc_axis.plot(fpr, tpr, label=f"{ood_set} ({auroc:.3f})")
        _finish_roc(roc_axis, f"{scorer}: ROC (ID positive)", "OOD set (AUROC)")
    return figure


def comparison_figure(
    reports: Mapping[str, Report], scorer: str, *, title: str | None = None
) -> Any:
    """ROC curves of one ``scorer`` for several models (reports), one panel per OOD set.

    Each panel draws the ROC curve (ID positive) of every report on one OOD set, with its
    AUROC in the legend, so that trainings of the same model can be compared at a glance.
    The reports must share their OOD sets and hold ``scorer``.

    Args:
        reports: ``{label: report}``, e.g. one report per training recipe.
        scorer: The scorer whose curves are drawn.
        title: The figure's title (default: what the panels show).

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If ``reports`` is empty, a report holds no scores, or the reports do not
            share their OOD sets and ``scorer``.
    """
    if not reports:
        raise ValueError("Expected at least one report in `reports`, got none.")
    first = next(iter(reports.values()))
    for label, report in reports.items():
        if not report.id_scores or not report.ood_scores:
            raise ValueError(f"The report {label!r} holds no scores to plot.")
        if list(report.ood_sets) != list(first.ood_sets) or scorer not in report.scorers:
            raise ValueError(
                f"The report {label!r} does not share the OOD sets {list(first.ood_sets)} "
                f"and the scorer {scorer!r} of the others."
            )
    Figure = _figure_class()  # noqa: N806 (a class)
    n_cols = len(first.ood_sets)
    figure = Figure(figsize=(3.4 * n_cols, 3.8), layout="constrained")
    figure.suptitle(
        title or f"{scorer}: ROC curves of each model on each OOD set (ID positive)",
        fontsize=10,
    )
    axes = figure.subplots(1, n_cols, squeeze=False)[0]
    for axis, ood_set in zip(axes, first.ood_sets, strict=True):
        for i, (label, report) in enumerate(reports.items()):
            fpr, tpr, _ = roc_curve(report.id_scores[scorer], report.ood_scores[ood_set][scorer])
            auroc = report[ood_set, scorer].get("auroc", float("nan"))
            # equal curves (two trainings that end alike) stay visible: the later one is
            # drawn thinner and dashed on top of the earlier
            style = LINE_STYLES[i % len(LINE_STYLES)]
            axis.plot(
                fpr,
                tpr,
                linestyle=style,
                linewidth=2.2 - 0.4 * (i % 4),
                label=f"{label} ({auroc:.2f})",
            )
        _finish_roc(axis, f"ID vs {ood_set}", "model (AUROC)")
    return figure


def _finish_roc(axis: Any, title: str, legend_title: str) -> None:
    """The chance diagonal, title, axis labels and legend (under the panel) of a ROC panel."""
    axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("FPR (OOD accepted as ID)", fontsize=8)
    axis.set_ylabel("TPR (ID accepted)", fontsize=8)
    axis.legend(title=legend_title, title_fontsize=7, **LEGEND_BELOW)


def clip_to_finite(*scores: np.ndarray[Any, Any]) -> tuple[list[np.ndarray[Any, Any]], str]:
    """The scores with ±inf moved to the ends of the finite range, and a note of how many.

    -inf goes to the smallest finite score and +inf to the largest; the note is empty when
    no score was moved. A histogram needs a finite range; the ROC curve and the metrics use
    the scores as they are (an infinite score ranks first or last). NaN scores are left out
    of the histogram.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    counts = {
        "-inf": sum(int(np.isneginf(a).sum()) for a in arrays),
        "+inf": sum(int(np.isposinf(a).sum()) for a in arrays),
        "NaN": sum(int(np.isnan(a).sum()) for a in arrays),
    }
    clipped = [np.clip(a[~np.isnan(a)], low, high) for a in arrays]
    parts = [
        f"{counts['-inf']} at -inf drawn at {low:.3g}" if counts["-inf"] else "",
        f"{counts['+inf']} at +inf drawn at {high:.3g}" if counts["+inf"] else "",
        f"{counts['NaN']} NaN left out" if counts["NaN"] else "",
    ]
    note = "; ".join(p for p in parts if p)
    return clipped, (f"scores: {note}" if note else "")


def check_plot_path(path: PathLike) -> None:
    """Check, before any work, that matplotlib is installed and can write ``path``'s format.

    Raises:
        ValueError: If matplotlib is missing or the extension is not an image format it
            writes.
    """
    try:
        figure_class = _figure_class()
    except ImportError as error:
        raise ValueError(str(error)) from None
    _check_format(figure_class(), path)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "Plotting needs matplotlib, which is not installed; "
            "install it with `pip install oodscore[plot]`."
        ) from None
    return Figure


def _check_format(figure: Any, path: PathLike) -> str:
    fmt = Path(path).suffix.lower().lstrip(".")
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"Cannot save a plot as {str(path)!r}: expected an extension among "
            f"{', '.join('.' + f for f in sorted(supported))}."
        )
    return fmt


def save_figure(
    figure: Any,
    path: PathLike,
    *,
    force: bool = False,
    inputs: Iterable[PathLike] = (),
    dpi: int = 100,
) -> None:
    """Save a matplotlib ``figure`` to an image file, atomically and never over an input.

    The format comes from the extension of ``path`` (``.png``, ``.pdf``, ``.svg``...).

    Args:
        figure: A ``matplotlib.figure.Figure``, e.g. from `report_figure`.
        path: Image file to write; it must not exist unless ``force``.
        force: Overwrite an existing ``path``.
        inputs: Files the figure was made from; ``path`` may never be one of them.
        dpi: Resolution of raster formats.

    Raises:
        ValueError: If matplotlib cannot write the format of ``path``.
    """
    fmt = _check_format(figure, path)
    buffer = io.BytesIO()
    # "tight" keeps the legends placed under the panels inside the image
    figure.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    write_atomic(path, buffer.getvalue(), force=force, inputs=inputs)
