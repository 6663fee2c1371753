"""Start-up: ``import oodscore`` and registering a subcommand load nothing heavy."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import oodscore
from oodscore.commands import COMMANDS

HEAVY = ("sklearn", "scipy", "pandas", "matplotlib")
"""Never loaded by ``oodscore score --help`` nor by scoring with energy."""

ARRAYS = ("torch", "numpy")
"""Not loaded until a command runs."""


def loaded_by(code: str, *args: str) -> list[str]:
    """The top-level packages in ``sys.modules`` after running ``code`` in a fresh process."""
    script = textwrap.dedent(code) + (
        "\nimport json, sys\n"
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_score_help_loads_no_heavy_package() -> None:
    loaded = loaded_by(
        """
        from oodscore.cli import main
        assert main(["score", "--help"]) == 0
        """
    )
    assert [m for m in (*HEAVY, *ARRAYS) if m in loaded] == []


def test_scoring_loads_only_what_it_uses(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.random.default_rng(0).normal(size=(50, 4)))
    loaded = loaded_by(
        """
        import sys
        from oodscore.cli import main
        assert main(["score", "energy", sys.argv[1], "-o", sys.argv[2]]) == 0
        """,
        str(tmp_path / "l.npy"),
        str(tmp_path / "s.csv"),
    )
    assert [m for m in HEAVY if m in loaded] == []
    assert (tmp_path / "s.csv").read_text().startswith("scores\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_registering_a_command_imports_no_arrays(command: str) -> None:
    """Each command imports NumPy, torch and what it computes with when it runs."""
    loaded = loaded_by(
        f"""
        import argparse, importlib
        parser = argparse.ArgumentParser()
        module = importlib.import_module("oodscore.commands.{command}")
        module.register(parser.add_subparsers())
        """
    )
    assert [m for m in (*HEAVY, *ARRAYS) if m in loaded] == []


def test_import_oodscore_is_lazy_and_complete() -> None:
    assert [m for m in (*HEAVY, *ARRAYS) if m in loaded_by("import oodscore")] == []
    every = loaded_by(
        """
        import oodscore
        assert set(oodscore.__all__) <= set(dir(oodscore))
        for name in oodscore.__all__:
            getattr(oodscore, name)
        from oodscore import Energy, evaluate_logits  # noqa: F401
        assert oodscore.metrics.ood_metrics is oodscore.ood_metrics
        """
    )
    assert "torch" in every


def test_the_lazy_table_matches_all() -> None:
    table = {name for names in oodscore._EXPORTS.values() for name in names}
    assert table == set(oodscore.__all__) - {"__version__"}
    for module, names in oodscore._EXPORTS.items():
        defined = importlib.import_module(module)
        for name in names:
            assert getattr(oodscore, name) is getattr(defined, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = oodscore.nope  # type: ignore[attr-defined]


def test_the_light_eval_module_reserves_the_report_mean() -> None:
    from oodscore.commands import eval as eval_command
    from oodscore.report import MEAN

    assert eval_command.MEAN == MEAN


def test_score_help_describes_the_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    from oodscore.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for part in ("NAME[:KEY=VALUE,...]", "PATH::KEY", "--device", "- for CSV on stdout"):
        assert part in text
    assert isinstance(build_parser(), argparse.ArgumentParser)
