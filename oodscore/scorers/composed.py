"""Feature scorers that end in a logit scorer (ReAct, ASH, DICE, SCALE: shaping, then energy)."""

from __future__ import annotations

from torch import Tensor

from oodscore.scorers.base import Scorer, get_scorer


class ComposesLogitScorer:
    """Mixin of scorers that turn features into logits and score them with a logit scorer.

    The logit scorer is the constructor's ``scorer=`` argument: a registered name
    (``"energy"``, the default of the shaping methods' papers, or ``"joint_energy"`` for
    multi-label models) or a logit `oodscore.Scorer` instance with its own parameters.
    """

    scorer: str | Scorer
    _logit_scorer: Scorer

    def _init_logit_scorer(self, scorer: str | Scorer) -> None:
        """Check and store ``scorer`` (the constructor's argument)."""
        if isinstance(scorer, str):
            resolved = get_scorer(scorer)
        elif isinstance(scorer, Scorer):
            resolved = scorer
        else:
            raise TypeError(
                f"Expected `scorer` to be a registered logit scorer name or a Scorer, got "
                f"{type(scorer).__name__}."
            )
        if resolved.input_kind != "logits" or resolved.requires_fit:
            raise ValueError(
                f"Expected `scorer` to be a logit scorer that needs no fitting (e.g. 'energy', "
                f"'joint_energy', 'msp'), got {resolved!r} (input kind "
                f"{resolved.input_kind!r}{', fitted' if resolved.requires_fit else ''})."
            )
        self.scorer = scorer
        self._logit_scorer = resolved

    def score_logits(self, logits: Tensor) -> Tensor:
        """The logit scorer's scores (N,) of checked logits (N, C), after its own checks."""
        self._logit_scorer.check_input(logits)
        return self._logit_scorer.score(logits)
