"""`oodscore demo`: deterministic tables on the embedded digits, explicit scorers, plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from oodscore.cli import main
from oodscore.commands.demo_tasks import MULTI_LABEL_RECIPES, run_task


def table_rows(section: str) -> dict[tuple[str, str], list[float]]:
    """The rows of the section's first table (the plain model's report)."""
    rows = {}
    first_table = section.split("### The remedies")[0].split("## From scores to decisions")[0]
    for line in first_table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "OOD set":
            rows[cells[0], cells[1]] = [float(c) for c in cells[2:]]
    return rows


def test_same_seed_same_tables_and_what_they_show(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    assert main(["demo", "--quick", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert torch.get_num_threads() == threads
    assert main(["demo", "--quick", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first

    single, multi = first.split("## Multi-label")
    single_rows, multi_rows = table_rows(single), table_rows(multi)
    sets = ["digits 6-9", "inverted 6-9", "uniform noise", "mean"]
    assert {k for k in single_rows} == {
        (s, n) for s in sets for n in ("msp", "max_logit", "energy", "entropy", "gen")
    }
    assert {k for k in multi_rows} == {(s, n) for s in sets for n in ("joint_energy", "max_logit")}
    assert "softmax scorers (msp, energy, entropy, gen) assume" in multi
    # Even briefly trained, the classifier separates held-out digits from ID digits.
    assert single_rows["digits 6-9", "energy"][0] > 0.85
    assert "accuracy 0.9" in single
    assert "mAP 0." in multi


def comparison_rows(section: str) -> dict[str, list[float]]:
    table = section.split("### The remedies")[1].split("Reading:")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "training":
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_multilabel_remedies_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--task", "multi"]) == 0
    out = capsys.readouterr().out
    rows = comparison_rows(out)
    assert list(rows) == [r.label for r in MULTI_LABEL_RECIPES]
    # columns: ID mAP, AUROC on digits 6-9, inverted 6-9, uniform noise, mean FPR95
    plain, outlier_exposure = rows["plain"], rows["outlier exposure"]
    plain_report = table_rows(out)
    assert plain[1:4] == [
        plain_report[s, "joint_energy"][0] for s in ("digits 6-9", "inverted 6-9", "uniform noise")
    ]
    # the failure the plain model shows, and the remedy: far OOD goes from ranked above
    # every ID input to separated
    assert max(plain[2:4]) < 0.3
    assert min(outlier_exposure[2:4]) > 0.95
    assert outlier_exposure[4] < plain[4]
    assert "synthetic blob images" in out
    assert "no OOD test set is seen in training" in out
    reading = out.split("Reading: ")[1]
    assert f"{plain[2]:.2f}/{plain[3]:.2f} trained plainly" in reading


def test_task_plot_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--task", "multi", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "## Single-label" not in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["demo", "--quick", "--task", "multi", "--plot", str(plot)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    seed_0 = run_task("single", seed=0, quick=True).reports["plain"]
    seed_2 = run_task("single", seed=2, quick=True).reports["plain"]
    assert seed_0.to_markdown() != seed_2.to_markdown()


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="'single' or 'multi', got 'both'"):
        run_task("both")


def test_plot_paths_of_both_tasks() -> None:
    from oodscore.commands.demo import _plot_paths

    assert _plot_paths(Path("out/demo.png"), ["single", "multi"]) == {
        "single": Path("out/demo.png"),
        "multi": Path("out/demo-multilabel.png"),
    }
    assert _plot_paths(Path("d.svg"), ["multi"]) == {"multi": Path("d.svg")}
    assert _plot_paths(None, ["single"]) == {}


def test_conformal_gate_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--task", "single"]) == 0
    out = capsys.readouterr().out
    section = out.split("## From scores to decisions")[1]
    n = int(re.search(r"split at random: (\d+) calibrate", section).group(1))  # type: ignore[union-attr]
    k = int(re.search(r"= (\d+)-th lowest calibration score", section).group(1))  # type: ignore[union-attr]
    assert k == int(0.05 * (n + 1))
    promised = float(re.search(r"at most k/\(n\+1\) = ([0-9.]+)", section).group(1))  # type: ignore[union-attr]
    assert promised == pytest.approx(k / (n + 1), abs=5e-5)
    mean, error = map(
        float, re.search(r"averages ([0-9.]+) \(± ([0-9.]+) standard error", section).groups()
    )  # type: ignore[union-attr]
    # the achieved rate over random splits agrees with the promise (5 standard errors)
    assert abs(mean - k / (n + 1)) < 5 * error
    for name in ("digits 6-9", "inverted 6-9", "uniform noise"):
        assert f"- {name}: OOD detection rate: " in section
