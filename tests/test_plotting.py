"""Figures a reader understands without the terminal: titles, labels, legends off the curves."""

from __future__ import annotations

import numpy as np
import pytest

from oodscore.plotting import comparison_figure
from oodscore.report import Report

pytest.importorskip("matplotlib")


def make_report(shift: float, seed: int = 0) -> Report:
    rng = np.random.default_rng(seed)
    return Report.from_scores(
        {"energy": rng.normal(1.0, 1.0, 200)},
        {"near": {"energy": rng.normal(shift, 1.0, 150)}, "far": {"energy": rng.normal(-3, 1, 90)}},
    )


def legend_clear_of_axes(figure, axis) -> bool:  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = axis.get_legend().get_window_extent(renderer)
    area = axis.get_window_extent(renderer)
    return legend.y1 <= area.y0  # entirely below the plotting area


@pytest.mark.parametrize("title", [None, "my title"])
def test_report_figure_is_labelled_and_legends_hide_nothing(title: str | None) -> None:
    figure = make_report(0.0).figure(title=title)
    assert figure.get_suptitle() == (title or figure.get_suptitle())
    assert "higher score = more ID" in figure.get_suptitle() or title
    for axis in figure.axes:
        assert axis.get_title()
        assert axis.get_xlabel()
        assert axis.get_ylabel()
        assert legend_clear_of_axes(figure, axis)


def test_comparison_figure_draws_each_model_on_each_set() -> None:
    reports = {"plain": make_report(0.5), "remedy": make_report(-2.0), "same": make_report(-2.0)}
    figure = comparison_figure(reports, "energy", title="three models")
    assert figure.get_suptitle() == "three models"
    assert [a.get_title() for a in figure.axes] == ["ID vs near", "ID vs far"]
    for axis, ood_set in zip(figure.axes, ["near", "far"], strict=True):
        labels = [t.get_text() for t in axis.get_legend().get_texts()]
        aurocs = [reports[m][ood_set, "energy"]["auroc"] for m in reports]
        assert labels == [f"{m} ({a:.2f})" for m, a in zip(reports, aurocs, strict=True)]
        lines = axis.get_lines()[: len(reports)]
        # two models that end alike stay distinguishable: no two share style and width
        assert len({(ln.get_linestyle(), ln.get_linewidth()) for ln in lines}) == len(reports)
        assert axis.get_xlabel().startswith("FPR")
        assert axis.get_ylabel().startswith("TPR")
        assert legend_clear_of_axes(figure, axis)


def test_comparison_figure_refuses_mismatched_reports() -> None:
    other = Report.from_scores({"energy": np.zeros(3)}, {"elsewhere": {"energy": np.ones(3)}})
    with pytest.raises(ValueError, match="'b' does not share the OOD sets"):
        comparison_figure({"a": make_report(0.0), "b": other}, "energy")
    with pytest.raises(ValueError, match="scorer 'msp'"):
        comparison_figure({"a": make_report(0.0)}, "msp")
    with pytest.raises(ValueError, match="at least one report"):
        comparison_figure({}, "energy")


def test_from_scores_names_a_bare_array() -> None:
    with pytest.raises(
        TypeError, match="`id_scores` to be a dict keyed by scorer name, got ndarray"
    ):
        Report.from_scores(np.zeros(3), {"x": {"energy": np.ones(3)}})  # type: ignore[arg-type]
