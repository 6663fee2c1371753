"""Train-time OOD losses; each returns its weighted term: ``loss = task_loss + reg(...)``."""

from oodscore.regularizers.base import (
    Regularizer,
    get_regularizer,
    list_regularizers,
    register_regularizer,
    unregister_regularizer,
)

__all__ = [
    "Regularizer",
    "get_regularizer",
    "list_regularizers",
    "register_regularizer",
    "unregister_regularizer",
]
