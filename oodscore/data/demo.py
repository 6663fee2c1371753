"""The data sets of ``oodscore demo``: digits as ID, held-out, inverted digits and noise as OOD."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from oodscore.data.digits import load_digits_split, make_composites


@dataclass(frozen=True)
class DemoSets:
    """Training and test data of one demo task, and its OOD sets.

    Images are float32 in [0, 1] (noise included) of shape (N, H, W). ``y_train`` and
    ``y_test`` are class indices (single-label) or float32 multi-hot rows (multi-label).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    ood: dict[str, Tensor]
    """``{name: images}`` of each OOD set, near first."""
    num_classes: int
    multi_label: bool
    descriptions: dict[str, str] = field(default_factory=dict)
    """One line per OOD set saying what it is made of."""


NEAR, INVERTED, NOISE = "digits 6-9", "inverted 6-9", "uniform noise"


def uniform_noise(num_images: int, shape: tuple[int, int], *, seed: int = 0) -> Tensor:
    """``num_images`` images of independent U(0, 1) pixels, float32 (N, H, W).

    Examples:
        >>> from oodscore.data import uniform_noise
        >>> x = uniform_noise(3, (8, 8), seed=1)
        >>> tuple(x.shape), bool((x >= 0).all() and (x < 1).all())
        ((3, 8, 8), True)
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((num_images, *shape), generator=generator, dtype=torch.float32)


def single_label_sets(*, seed: int = 0) -> DemoSets:
    """Digits 0-5 as ID (70% train, 30% test), and three OOD sets.

    - ``digits 6-9``: every digit 6, 7, 8 and 9 (714 images): near OOD, same pen, other
      classes.
    - ``inverted 6-9``: the same digits with ink and paper swapped (1 - x): other classes
      and a large shift of appearance, which logit-based scores famously miss.
    - ``uniform noise``: U(0, 1) pixels, as many as ID test images: far OOD.

    Examples:
        >>> from oodscore.data import single_label_sets
        >>> sets = single_label_sets()
        >>> len(sets.x_train), len(sets.x_test), {k: len(v) for k, v in sets.ood.items()}
        (758, 325, {'digits 6-9': 714, 'inverted 6-9': 714, 'uniform noise': 325})
    """
    split = load_digits_split(seed=seed)
    return DemoSets(
        x_train=split.x_train,
        y_train=split.y_train,
        x_test=split.x_test,
        y_test=split.y_test,
        ood={
            NEAR: split.x_ood,
            INVERTED: 1.0 - split.x_ood,
            NOISE: uniform_noise(len(split.x_test), (8, 8), seed=seed + 1),
        },
        num_classes=split.num_classes,
        multi_label=False,
        descriptions={
            NEAR: "every scikit-learn digit 6-9 (real digits of classes never trained on)",
            INVERTED: "the same digits 6-9 with ink and background swapped, 1 - x",
            NOISE: "U(0, 1) pixel noise (synthetic)",
        },
    )


def multi_label_sets(*, seed: int = 0, num_train: int = 3000, num_test: int = 600) -> DemoSets:
    """2×2 composites (16×16) of digits 0-5 with multi-hot labels as ID, and three OOD sets.

    Training composites tile ID training digits, test composites ID test digits (so no
    test digit was seen in training). OOD composites are built the same way:

    - ``digits 6-9``: composites of digits 6-9 only (no ID label present).
    - ``inverted 6-9``: those composites inverted (1 - x).
    - ``uniform noise``: 16×16 U(0, 1) noise.

    Args:
        seed: Seed of the digit split and of the composite draws.
        num_train: Number of training composites.
        num_test: Number of composites in the ID test set and in each OOD set.

    Examples:
        >>> from oodscore.data import multi_label_sets
        >>> sets = multi_label_sets(num_train=10, num_test=4)
        >>> tuple(sets.x_train.shape), tuple(sets.y_train.shape), sorted(sets.ood)
        ((10, 16, 16), (10, 6), ['digits 6-9', 'inverted 6-9', 'uniform noise'])
    """
    split = load_digits_split(seed=seed)
    c = split.num_classes
    x_train, y_train = make_composites(
        split.x_train, split.y_train, num_train, num_classes=c, seed=seed
    )
    x_test, y_test = make_composites(
        split.x_test, split.y_test, num_test, num_classes=c, seed=seed + 1
    )
    x_near, _ = make_composites(split.x_ood, split.y_ood, num_test, num_classes=0, seed=seed + 2)
    return DemoSets(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        ood={
            NEAR: x_near,
            INVERTED: 1.0 - x_near,
            NOISE: uniform_noise(num_test, (16, 16), seed=seed + 3),
        },
        num_classes=c,
        multi_label=True,
        descriptions={
            NEAR: "2×2 composites of digits 6-9 only (no ID label present)",
            INVERTED: "the same composites inverted, 1 - x",
            NOISE: "16×16 U(0, 1) pixel noise (synthetic)",
        },
    )


BLOB_DENSITY = 0.7
"""Probability that a pixel of the binary field is on before blurring."""

BLOB_SIGMA = 1.0
"""Standard deviation (pixels) of the Gaussian blur of a 16×16 blob image."""

BLOB_CUT = 0.75
"""Blurred values below this are set to 0 (the shapes' definite edges)."""


def blobs(num_images: int, shape: tuple[int, int], *, seed: int = 0) -> Tensor:
    r"""``num_images`` synthetic blob images, float32 (N, H, W) in [0, 1]: an outlier source.

    $$ b_{ij} \sim \operatorname{Bernoulli}(0.7), \qquad
       x = g_\sigma * b, \qquad x_{ij} \leftarrow 0 \text{ where } x_{ij} < 0.75 $$

    Amorphous bright shapes with definite edges on a dark background, made the way the
    synthetic *Blobs* set of Hendrycks, Mazeika & Dietterich (ICLR 2019) is made (a
    blurred Bernoulli field, cut at 0.75; $\sigma = 1$ for 16×16 images). They contain no
    digit and are neither inverted images nor uniform noise, so training on them as
    outliers leaks none of the demo's OOD test sets.

    Args:
        num_images: Number of images (>= 0).
        shape: Height and width.
        seed: Seed of the Bernoulli field.

    Examples:
        >>> from oodscore.data import blobs
        >>> x = blobs(4, (16, 16), seed=1)
        >>> tuple(x.shape), bool(((x == 0) | (x >= 0.75)).all()), bool((x <= 1).all())
        ((4, 16, 16), True, True)

    Source: the *Blobs* set of ``hendrycks/outlier-exposure`` (Hendrycks et al., ICLR 2019).
    """
    if num_images < 0:
        raise ValueError(f"Expected `num_images` >= 0, got {num_images}.")
    rng = np.random.default_rng(seed)
    field = rng.binomial(1, BLOB_DENSITY, size=(num_images, *shape)).astype(np.float32)
    # blur each image over its two pixel axes only (sigma 0 along the image axis)
    blurred = ndimage.gaussian_filter(field, sigma=(0.0, BLOB_SIGMA, BLOB_SIGMA), mode="reflect")
    blurred[blurred < BLOB_CUT] = 0.0
    return torch.from_numpy(np.ascontiguousarray(blurred, dtype=np.float32))
