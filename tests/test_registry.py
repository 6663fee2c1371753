"""The registry: names, duplicates, unknown names with suggestions, patterns."""

from __future__ import annotations

import pytest
import torch

from oodscore import Scorer, get_scorer, list_scorers, register_scorer, unregister_scorer
from oodscore._registry import Registry


def test_get_scorer_returns_a_configured_instance():
    scorer = get_scorer("msp", temperature=3.0)
    assert type(scorer).__name__ == "MSP"
    assert scorer.temperature == 3.0


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"Unknown scorer 'enrgy'. Did you mean 'energy'") as info:
        get_scorer("enrgy")
    assert "Known: " in str(info.value)
    assert "max_logit" in str(info.value)


def test_unknown_name_without_close_match_still_lists_known():
    with pytest.raises(ValueError, match=r"Unknown scorer 'zzz'\. Known: .*msp"):
        get_scorer("zzz")


def test_duplicate_name_is_an_error():
    with pytest.raises(
        ValueError, match=r"A scorer named 'energy' is already registered \(Energy\)"
    ):

        @register_scorer("energy")
        class Other(Scorer):
            def score(self, logits: torch.Tensor) -> torch.Tensor:
                return logits[:, 0]


@pytest.mark.parametrize("name", ["Energy", "max-logit", "1st", "", "a__b", "_x"])
def test_names_must_be_snake_case(name):
    with pytest.raises(ValueError, match="snake_case"):
        register_scorer(name)


def test_register_and_unregister_a_plugin():
    @register_scorer("test_first_logit")
    class FirstLogit(Scorer):
        """First logit."""

        def score(self, logits: torch.Tensor) -> torch.Tensor:
            return logits[:, 0]

    try:
        assert "test_first_logit" in list_scorers()
        assert FirstLogit.name == "test_first_logit"
        assert get_scorer("test_first_logit")(torch.tensor([[2.0, 1.0]])).tolist() == [2.0]
    finally:
        unregister_scorer("test_first_logit")
    assert "test_first_logit" not in list_scorers()


def test_list_pattern_uses_fnmatch():
    assert list_scorers("*energy") == ["energy", "joint_energy"]
    assert list_scorers("m?p") == ["msp"]
    assert list_scorers("nothing*") == []
    assert list_scorers() == sorted(list_scorers())


def test_generic_registry():
    registry: Registry[object] = Registry("widget")

    @registry.register("a_b")
    class Widget:
        pass

    assert Widget.name == "a_b"  # type: ignore[attr-defined]
    assert "a_b" in registry
    assert len(registry) == 1
    assert list(registry) == ["a_b"]
    with pytest.raises(ValueError, match=r"Unknown widget 'a_c'\. Did you mean 'a_b'"):
        registry.get_class("a_c")
