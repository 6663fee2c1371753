"""The four metrics (FPR rule "first") of `Ranked` scores, in one pass over sorted positions.

The groups of `oodscore.metrics._kernels`, read off positions (`group_ends`): the group
that ends just before sorted position $E_g$ with $C_g$ ID scores before that position has
$E_g$ scores and $F_g = E_g - C_g$ OOD scores at or below it, and it holds
$C_g - C_{g-1}$ ID and $F_g - F_{g-1}$ OOD scores. So, per group:

* ID scores at or above it: $P - C_{g-1}$, all scores at or above it: $n - E_{g-1}$;
* OOD scores at or below it: $F_g$, all scores at or below it: $E_g$;
* ID–OOD pairs it wins, twice, plus those it ties: $(C_g - C_{g-1}) (F_{g-1} + F_g)$.

The pass adds each block's part of the sums as the groups come, so that nothing the size of
the scores is built beyond the sorted keys. The counts are floats holding integers: a
block's sums are exact while they stay below 2**53, which ``2 * P * N < 2**53`` guarantees
(the pair sums reach $2PN$, the other counts $n$); beyond that the pairs are summed in int64.
"""

from __future__ import annotations

import numpy as np

from oodscore.metrics._kernels import (
    Metrics,
    auroc_of_wins,
    average_precision,
    false_positive_rate,
    pairs,
    precision_sum,
    threshold_rank,
)
from oodscore.metrics._ranking import Ranked, block_size, group_ends

__all__ = ["EXACT_FLOAT_SUMS", "metrics_of_ranked"]

EXACT_FLOAT_SUMS = 2**53
"""Pair sums below this are exact in float64 (larger ones are summed in int64)."""


def metrics_of_ranked(ranked: Ranked, tpr: float) -> Metrics:
    """The four metrics, with the FPR of rule "first" at ``tpr``."""
    block = block_size()
    n_id, n_ood = ranked.n_id, ranked.n_ood
    n = n_id + n_ood
    rank = threshold_rank(tpr, n_id)
    exact_in_floats = 2 * n_id * n_ood < EXACT_FLOAT_SUMS
    doubled_wins = 0  # twice the ID-OOD pairs with the ID score above, plus the tied pairs
    precision_in = precision_out = 0.0
    ood_below_threshold = -1
    # Room for each block's per-group terms, reused.
    oods, id_gain, ood_gain, both, hits, total, terms = np.empty((7, block + 2))
    for ends, ids in group_ends(ranked, block):
        count = ends.shape[0] - 1
        ood = np.subtract(ends, ids, out=oods[: count + 1])  # F: OOD scores before each end
        gained = np.subtract(ids[1:], ids[:-1], out=id_gain[:count])
        ood_gained = np.subtract(ood[1:], ood[:-1], out=ood_gain[:count])
        around = np.add(ood[:-1], ood[1:], out=both[:count])  # F_{g-1} + F_g
        if exact_in_floats:
            doubled_wins += pairs(gained, around)
        else:
            doubled_wins += pairs(gained.astype(np.int64), around.astype(np.int64))
        np.subtract(n_id, ids[:-1], out=hits[:count])  # ID scores at or above each group
        np.subtract(n, ends[:-1], out=total[:count])  # all scores at or above
        precision_in += precision_sum(gained, hits[:count], total[:count], out=terms[:count])
        precision_out += precision_sum(ood_gained, ood[1:], ends[1:], out=terms[:count])
        if ood_below_threshold < 0 and ids[-1] > rank:  # this block holds the threshold
            group = int(np.searchsorted(ids[1:], rank, side="right"))
            ood_below_threshold = int(ood[group])
    return Metrics(
        auroc_of_wins(doubled_wins, n_id, n_ood),
        average_precision(precision_in, n_id),
        average_precision(precision_out, n_ood),
        false_positive_rate(n_ood - ood_below_threshold, n_ood),
    )
