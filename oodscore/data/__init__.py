"""Small real data sets that ship with the dependencies (nothing is downloaded)."""

from oodscore.data.digits import DigitsSplit, load_digits_split, make_composites

__all__ = ["DigitsSplit", "load_digits_split", "make_composites"]
