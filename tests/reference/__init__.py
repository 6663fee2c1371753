"""Independent float64 reference formulas, written from the papers, one module per area.

Nothing here imports oodscore: a bug in the library cannot hide in its own reference.
"""
