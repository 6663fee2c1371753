"""Small real data sets that ship with the dependencies (nothing is downloaded)."""

from oodscore.data.demo import (
    DemoSets,
    blobs,
    multi_label_sets,
    single_label_sets,
    uniform_noise,
)
from oodscore.data.digits import DigitsSplit, load_digits_split, make_composites

__all__ = [
    "DemoSets",
    "DigitsSplit",
    "blobs",
    "load_digits_split",
    "make_composites",
    "multi_label_sets",
    "single_label_sets",
    "uniform_noise",
]
