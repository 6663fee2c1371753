"""Plots of a `oodscore.Report`: score histograms (ID vs each OOD set) and ROC curves.

matplotlib is optional (``pip install oodscore[plot]``); it is imported when a figure is
drawn, so that the rest of the library works without it. `oodscore.Report.figure` and
`oodscore.Report.plot` call the functions here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodscore.io import write_atomic
from oodscore.metrics import roc_curve

if TYPE_CHECKING:
    from oodscore.report import PathLike, Report

__all__ = ["report_figure", "save_figure"]


def report_figure(report: Report, *, bins: int = 40) -> Any:
    """The histograms and ROC curves of ``report`` as a ``matplotlib.figure.Figure``.

    One row of panels per scorer: a histogram of the ID and OOD scores for each OOD set
    (bins shared by ID and OOD), then the ROC curves of every OOD set (ID positive, AUROC in
    the legend). The figure is neither shown nor saved.

    Args:
        report: A report holding scores (from `oodscore.evaluate`,
            `oodscore.evaluate_logits` or `oodscore.Report.from_scores`).
        bins: Histogram bins.

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the report holds no scores.
    """
    if not report.id_scores or not report.ood_scores:
        raise ValueError(
            "This report holds no scores to plot; build it with oodscore.evaluate, "
            "oodscore.evaluate_logits or Report.from_scores."
        )
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "Report.plot() needs matplotlib, which is not installed; "
            "install it with `pip install oodscore[plot]`."
        ) from None
    n_rows, n_cols = len(report.scorers), len(report.ood_sets) + 1
    figure = Figure(figsize=(3.2 * n_cols, 2.6 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for row, scorer in enumerate(report.scorers):
        id_scores = report.id_scores[scorer]
        roc_axis = axes[row, -1]
        for col, ood_set in enumerate(report.ood_sets):
            ood = report.ood_scores[ood_set][scorer]
            axis = axes[row, col]
            edges = np.histogram_bin_edges(np.concatenate([id_scores, ood]), bins=bins)
            axis.hist(id_scores, bins=edges, density=True, alpha=0.55, label="ID")
            axis.hist(ood, bins=edges, density=True, alpha=0.55, label=ood_set)
            axis.set_title(f"{scorer}: ID vs {ood_set}", fontsize=9)
            axis.set_xlabel("score (higher = more ID)", fontsize=8)
            axis.legend(fontsize=7)
            fpr, tpr, _ = roc_curve(id_scores, ood)
            auroc = report[ood_set, scorer].get("auroc", float("nan"))
            roc_axis.plot(fpr, tpr, label=f"{ood_set} ({auroc:.3f})")
        roc_axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
        roc_axis.set_title(f"{scorer}: ROC (ID positive)", fontsize=9)
        roc_axis.set_xlabel("FPR (OOD accepted)", fontsize=8)
        roc_axis.set_ylabel("TPR (ID accepted)", fontsize=8)
        roc_axis.legend(fontsize=7, title="AUROC", title_fontsize=7)
    return figure


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
    fmt = Path(path).suffix.lower().lstrip(".")
    supported = figure.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"Cannot save a plot as {str(path)!r}: expected an extension among "
            f"{', '.join('.' + f for f in sorted(supported))}."
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    write_atomic(path, buffer.getvalue(), force=force, inputs=inputs)
