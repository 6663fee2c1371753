"""Report: rows, mean rows, markdown/CSV/JSON/pandas output, safe writing, plots."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from oodscore import Report
from tests.reference import evaluation as ref


@pytest.fixture
def report(rng: np.random.Generator) -> Report:
    id_scores = {"a": rng.normal(1.0, 1.0, 60), "b": rng.normal(0.5, 1.0, 60)}
    ood_scores = {
        "near": {"a": rng.normal(0.5, 1.0, 40), "b": rng.normal(0.3, 1.0, 40)},
        "far": {"a": rng.normal(-1.0, 1.0, 25), "b": rng.normal(-2.0, 1.0, 25)},
    }
    return Report.from_scores(id_scores, ood_scores, id_metrics={"accuracy": 0.9})


def test_rows_follow_the_reference_and_means_average_sets(report: Report) -> None:
    rows = report.rows()
    assert [(s, n) for s, n, _ in rows] == [
        ("near", "a"),
        ("near", "b"),
        ("far", "a"),
        ("far", "b"),
        ("mean", "a"),
        ("mean", "b"),
    ]
    for ood_set in report.ood_sets:
        for scorer in report.scorers:
            expected = ref.ood_metrics(report.id_scores[scorer], report.ood_scores[ood_set][scorer])
            assert report[ood_set, scorer] == pytest.approx(expected, abs=1e-12)
    for scorer in report.scorers:
        mean = report["mean", scorer]
        for column in report.columns:
            per_set = [report[s, scorer][column] for s in report.ood_sets]
            assert mean[column] == pytest.approx(sum(per_set) / 2, abs=1e-15)


def test_one_ood_set_has_no_mean_row() -> None:
    single = Report({("o", "msp"): {"auroc": 0.7}})
    assert single.rows() == [("o", "msp", {"auroc": 0.7})]
    assert single.mean("msp") == {"auroc": 0.7}
    assert single.to_markdown().splitlines()[-1] == "| o | msp | 0.7000 |"


def test_markdown(report: Report) -> None:
    lines = report.to_markdown(digits=3).splitlines()
    assert lines[0] == ("ID: 60 samples, accuracy 0.900. OOD sets (samples): near (40), far (25).")
    assert lines[2] == "| OOD set | scorer | AUROC ↑ | AUPR-In ↑ | AUPR-Out ↑ | FPR@95TPR ↓ |"
    assert lines[3] == "|---|---|---:|---:|---:|---:|"
    values = report["far", "b"]
    expected = " | ".join(f"{values[c]:.3f}" for c in report.columns)
    assert lines[7] == f"| far | b | {expected} |"
    assert len(lines) == 4 + 6


def test_csv_round_trips_full_precision(report: Report, tmp_path: Path) -> None:
    text = report.to_csv()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == ["ood_set", "scorer", "auroc", "aupr_in", "aupr_out", "fpr95"]
    assert len(parsed) == 6
    for row in parsed:
        expected = report[row["ood_set"], row["scorer"]]
        assert {c: float(row[c]) for c in report.columns} == expected  # exact: repr round-trips
    path = tmp_path / "report.csv"
    assert report.to_csv(path) == text
    assert path.read_text() == text


def test_json(report: Report, tmp_path: Path) -> None:
    data = json.loads(report.to_json())
    assert data["id_metrics"] == {"accuracy": 0.9}
    assert data["num_samples"] == {"id": 60, "near": 40, "far": 25}
    assert data["columns"] == ["auroc", "aupr_in", "aupr_out", "fpr95"]
    assert data["rows"][1] == {"ood_set": "near", "scorer": "b", **report["near", "b"]}
    assert data["mean"][0] == {"scorer": "a", **report.mean("a")}
    nan_report = Report({("o", "s"): {"auroc": math.nan}})
    assert json.loads(nan_report.to_json(indent=None))["rows"][0]["auroc"] is None
    report.to_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == data


def test_writing_is_safe(report: Report, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(FileExistsError, match="pass force=True"):
        report.to_csv(path)
    assert path.read_text() == "old"
    source = tmp_path / "logits.npy"
    source.write_text("input")
    with pytest.raises(ValueError, match="Refusing to overwrite the input"):
        report.to_json(source, force=True, inputs=[source])
    assert source.read_text() == "input"
    report.to_csv(path, force=True)
    assert path.read_text().startswith("ood_set,scorer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.npy", "out.csv"]  # no temp


def test_to_pandas(report: Report, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    frame = report.to_pandas()
    assert list(frame.index.names) == ["ood_set", "scorer"]
    assert frame.loc[("far", "a"), "auroc"] == report["far", "a"]["auroc"]
    assert frame.loc[("mean", "b"), "fpr95"] == report.mean("b")["fpr95"]
    assert frame.attrs["id_metrics"] == {"accuracy": 0.9}
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        report.to_pandas()


def test_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    report = Report.from_scores({"s": np.arange(5.0)}, {"o": {"s": np.arange(3.0) - 1}})
    roc_axis = report.figure().axes[1]
    assert roc_axis.get_title() == "s: ROC (ID positive)"
    # The plotted ROC curve is scikit-learn's (ID positive, every threshold).
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(
        np.r_[np.ones(5), np.zeros(3)],
        np.r_[np.arange(5.0), np.arange(3.0) - 1],
        drop_intermediate=False,
    )
    np.testing.assert_allclose(roc_axis.lines[0].get_xydata(), np.c_[fpr, tpr])
    assert roc_axis.get_legend().get_texts()[0].get_text() == "o (0.867)"  # 13 of 15 pairs
    path = tmp_path / "plot.png"
    report.plot(path, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        report.plot(path)
    report.plot(tmp_path / "plot.svg", bins=5)
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:500]
    with pytest.raises(ValueError, match=r"expected an extension among .*\.png"):
        report.plot(tmp_path / "plot.xyz")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install oodscore\[plot\]"):
        report.plot(tmp_path / "again.png")


def test_plot_needs_scores() -> None:
    with pytest.raises(ValueError, match="holds no scores"):
        Report({("o", "s"): {"auroc": 0.5}}).plot("never.png")


def test_lookup_errors(report: Report) -> None:
    with pytest.raises(KeyError, match="No row \\('mid', 'a'\\)"):
        report["mid", "a"]
    with pytest.raises(KeyError, match="No scorer 'c'"):
        report.mean("c")


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ({}, ValueError, "at least one"),
        ({("o",): {"auroc": 1.0}}, TypeError, "string pairs"),
        ({("mean", "s"): {"auroc": 1.0}}, ValueError, "reserved"),
        ({("o", "s"): {"auroc": 1.0}, ("p", "t"): {"auroc": 1.0}}, ValueError, "no entry"),
        ({("o", "s"): {"auroc": 1.0}, ("p", "s"): {"fpr95": 1.0}}, ValueError, "to hold"),
    ],
)
def test_constructor_checks(metrics: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Report(metrics)


def test_from_scores_checks() -> None:
    with pytest.raises(ValueError, match="have scores of"):
        Report.from_scores({"a": np.ones(2)}, {"o": {"b": np.ones(2)}})
    with pytest.raises(ValueError, match="1-D"):
        Report.from_scores({"a": np.ones((2, 2))}, {"o": {"a": np.ones(2)}})
    with pytest.raises(ValueError, match="NaN"):
        Report.from_scores({"a": np.array([np.nan, 1.0])}, {"o": {"a": np.ones(2)}})
    with pytest.raises(TypeError, match="real numbers"):
        Report.from_scores({"a": np.array(["x"])}, {"o": {"a": np.ones(2)}})


def test_markdown_escapes_pipes_and_scores_must_cover_rows() -> None:
    report = Report({("a|b", "s"): {"auroc": 0.5}})
    assert report.to_markdown().splitlines()[-1] == "| a\\|b | s | 0.5000 |"
    with pytest.raises(ValueError, match=r"1 are missing \(first: \('o', 's'\)\)"):
        Report({("o", "s"): {"auroc": 0.5}}, id_scores={"s": np.ones(2)}, ood_scores={})


def test_feature_layer_is_carried_and_shown(report: Report) -> None:
    assert report.feature_layer is None
    assert "Features" not in report.to_markdown()
    assert report.to_dict()["feature_layer"] is None
    assert "feature_layer" not in repr(report)
    layered = Report.from_scores(
        report.id_scores,
        report.ood_scores,
        id_metrics={"accuracy": 0.9},
        feature_layer="fc (input)",
    )
    assert layered.feature_layer == "fc (input)"
    assert layered.rows() == report.rows()  # nothing else changes
    assert layered.to_markdown().splitlines()[0] == (
        "ID: 60 samples, accuracy 0.9000. OOD sets (samples): near (40), far (25). "
        "Features: fc (input)."
    )
    assert layered.to_markdown().splitlines()[1:] == report.to_markdown().splitlines()[1:]
    assert json.loads(layered.to_json())["feature_layer"] == "fc (input)"
    assert repr(layered).endswith("feature_layer='fc (input)')")
    only = Report({("o", "s"): {"auroc": 0.5}}, feature_layer="a|b (output)")
    assert only.to_markdown().splitlines()[0] == "Features: a\\|b (output)."
    with pytest.raises(TypeError, match="`feature_layer` to be a str or None, got int"):
        Report({("o", "s"): {"auroc": 0.5}}, feature_layer=3)  # type: ignore[arg-type]


def test_to_pandas_carries_the_feature_layer() -> None:
    pytest.importorskip("pandas")
    report = Report({("o", "s"): {"auroc": 0.5}}, feature_layer="fc (input)")
    assert report.to_pandas().attrs["feature_layer"] == "fc (input)"


def test_json_has_null_for_a_nan_id_metric() -> None:
    report = Report({("o", "s"): {"auroc": 0.5}}, id_metrics={"map": math.nan, "accuracy": 0.5})
    data = json.loads(report.to_json())
    assert data["id_metrics"] == {"map": None, "accuracy": 0.5}


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_text_cells_cannot_be_formulas(start: str) -> None:
    label = f'{start}HYPERLINK("http://x")'
    report = Report({(label, f"{start}cmd"): {"auroc": -0.5}})
    rows = list(csv.reader(io.StringIO(report.to_csv(), newline="")))
    assert rows[1] == [f"'{label}", f"'{start}cmd", "-0.5"]  # numbers stay numbers
    assert rows[0] == ["ood_set", "scorer", "auroc"]


def test_plot_clips_infinite_scores(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = Report.from_scores(
        {"s": np.array([1.0, np.inf, 2.0, 3.0])}, {"o": {"s": np.array([-np.inf, 0.0, 1.5])}}
    )
    figure = report.figure()
    histogram = figure.axes[0]
    notes = [t.get_text() for t in histogram.texts]
    assert notes == ["scores: 1 at -inf drawn at 0; 1 at +inf drawn at 3"]
    low, high = histogram.get_xlim()
    assert np.isfinite([low, high]).all()
    report.plot(tmp_path / "inf.png", dpi=30)
    assert (tmp_path / "inf.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("label", ["a,b", 'say "hi"', "two\nlines", "car\rriage", "plain"])
def test_csv_text_cells_read_back(label: str) -> None:
    report = Report({(label, "s"): {"auroc": 0.25}})
    rows = list(csv.reader(io.StringIO(report.to_csv(), newline="")))
    assert rows == [["ood_set", "scorer", "auroc"], [label, "s", "0.25"]]
