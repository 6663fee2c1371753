"""scikit-learn's 1,797 handwritten 8×8 digits as an ID/OOD split, and multi-label composites."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import Tensor


@dataclass(frozen=True)
class DigitsSplit:
    """Digits of the ID classes split into train and test, and every digit of the other classes.

    Images are float32 in [0, 1] of shape (N, 8, 8); labels are int64 indices into
    ``id_classes`` (so they run from 0 to ``len(id_classes) - 1``).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_ood: Tensor
    y_ood: Tensor
    """Original digit values of the OOD images."""
    id_classes: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        """Number of ID classes."""
        return len(self.id_classes)


def load_digits_split(
    id_classes: Sequence[int] = (0, 1, 2, 3, 4, 5),
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> DigitsSplit:
    """Split scikit-learn's digits into ID train/test (``id_classes``) and OOD (the rest).

    Args:
        id_classes: Digits that are in-distribution; the others are near-OOD.
        test_fraction: Share of each ID class held out for testing, in (0, 1).
        seed: Seed of the stratified shuffle.

    Examples:
        >>> from oodscore.data import load_digits_split
        >>> split = load_digits_split()
        >>> split.x_train.shape[1:], split.num_classes, len(split.x_ood)
        (torch.Size([8, 8]), 6, 714)
    """
    ids = tuple(int(c) for c in id_classes)
    if not ids or len(set(ids)) != len(ids) or not set(ids) <= set(range(10)):
        raise ValueError(
            f"Expected `id_classes` to be distinct digits in 0..9, got {tuple(id_classes)!r}."
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"Expected `test_fraction` to be in (0, 1), got {test_fraction!r}.")
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    target = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for digit in ids:
        members = rng.permutation(np.flatnonzero(target == digit))
        n_test = round(len(members) * test_fraction)
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    remap = np.full(10, -1, dtype=np.int64)
    remap[list(ids)] = np.arange(len(ids))
    train = rng.permutation(np.concatenate(train_idx))
    test = np.concatenate(test_idx)
    ood = np.flatnonzero(remap[target] < 0)
    return DigitsSplit(
        x_train=torch.from_numpy(images[train]),
        y_train=torch.from_numpy(remap[target[train]]),
        x_test=torch.from_numpy(images[test]),
        y_test=torch.from_numpy(remap[target[test]]),
        x_ood=torch.from_numpy(images[ood]),
        y_ood=torch.from_numpy(target[ood]),
        id_classes=ids,
    )


def make_composites(
    images: Tensor,
    labels: Tensor,
    num_images: int,
    *,
    num_classes: int,
    grid: int = 2,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Tile random real images into ``grid × grid`` composites with multi-hot labels.

    Each composite holds ``grid**2`` images drawn at random (with replacement); its label
    vector marks every class present. The images are real, the layout is made.

    Args:
        images: (N, H, W) images.
        labels: (N,) class indices in ``0..num_classes-1``; use any value for unlabeled
            (OOD) images together with ``num_classes=0``.
        num_images: Number of composites to make.
        num_classes: Length of the multi-hot label vector.
        grid: Images per side.
        seed: Seed of the draw.

    Returns:
        Composites of shape (num_images, grid*H, grid*W) and float32 multi-hot labels of
        shape (num_images, num_classes).

    Examples:
        >>> from oodscore.data import load_digits_split, make_composites
        >>> split = load_digits_split()
        >>> x, y = make_composites(split.x_train, split.y_train, 5, num_classes=6)
        >>> tuple(x.shape), tuple(y.shape), bool((y.sum(1) >= 1).all())
        ((5, 16, 16), (5, 6), True)
    """
    if images.ndim != 3 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            "Expected `images` of shape (N, H, W) with N >= 1 and `labels` of shape (N,), "
            f"got {tuple(images.shape)} and {tuple(labels.shape)}."
        )
    if num_images < 0 or grid < 1:
        raise ValueError(f"Expected num_images >= 0 and grid >= 1, got {num_images}, {grid}.")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(images), (num_images, grid * grid), generator=generator)
    _, height, width = images.shape
    tiles = images[pick].reshape(num_images, grid, grid, height, width)
    composites = tiles.permute(0, 1, 3, 2, 4).reshape(num_images, grid * height, grid * width)
    multi_hot = torch.zeros(num_images, num_classes, dtype=torch.float32)
    if num_classes:
        multi_hot.scatter_(1, labels[pick], 1.0)
    return composites, multi_hot
