"""Image data sets with discrete pixel levels: scikit-learn's bundled 8x8 digits.

Images are integer tensors ``(N, C, H, W)`` of pixel levels ``0..levels-1``; dequantize
them (:func:`flowforge.transforms.dequantize.uniform_dequantize`) before fitting a flow and
report :func:`~flowforge.transforms.dequantize.bits_per_dim`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DIGITS_LEVELS", "ImageData", "digits"]

DIGITS_LEVELS = 17


@dataclass(frozen=True)
class ImageData:
    """A train/validation/test split of images (``torch.long`` levels) with their class labels.

    Attributes:
        train, val, test: images ``(N, C, H, W)``, values in ``0..levels-1``.
        train_labels, val_labels, test_labels: class labels ``(N,)``.
        levels: the number of pixel levels.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor
    levels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape ``(C, H, W)``."""
        return tuple(self.train.shape[1:])  # type: ignore[return-value]


def digits(*, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1) -> ImageData:
    """The 1,797 handwritten digits of scikit-learn (UCI optdigits) as ``(N, 1, 8, 8)``, 17 levels.

    Each pixel counts the set bits of a 4x4 block of the original 32x32 bitmap, so levels
    are ``0..16``. The split is a random permutation drawn from ``seed``; the data ship
    with scikit-learn, so nothing is downloaded.

    Args:
        seed: the seed of the split.
        val_fraction: the share of images in the validation split.
        test_fraction: the share in the test split.

    References:
        Alpaydin & Kaynak. "Optical Recognition of Handwritten Digits". UCI repository, 1998.

    Examples:
        >>> data = digits(seed=0)
        >>> data.train.shape, data.levels, int(data.train.max())
        (torch.Size([1437, 1, 8, 8]), 17, 16)
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.long).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    n = images.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    parts = torch.split(order, [n - n_val - n_test, n_val, n_test])
    return ImageData(*(images[p] for p in parts), *(labels[p] for p in parts), levels=DIGITS_LEVELS)
