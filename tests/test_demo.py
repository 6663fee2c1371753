"""`oodscore demo`: deterministic tables on the embedded digits, explicit scorers, plots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oodscore.cli import main
from oodscore.commands.demo import run_task


def table_rows(section: str) -> dict[tuple[str, str], list[float]]:
    rows = {}
    for line in section.splitlines():
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


def test_task_plot_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--task", "multi", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "## Single-label" not in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["demo", "--quick", "--task", "multi", "--plot", str(plot)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    _, seed_0 = run_task("single", seed=0, quick=True)
    _, seed_2 = run_task("single", seed=2, quick=True)
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
