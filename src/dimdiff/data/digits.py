"""`digits`: scikit-learn's bundled handwritten digits (1,797 images, 8x8, values 0..16).

Fixed split, the same on every machine and for every seed: the images are ordered by class
(stable, so each class keeps the dataset's order) and every (1797 / 300)-th one goes to the
test set. That makes TEST_SIZE = 300 test and 1,497 train images, stratified within one image
per class, with no random number generator involved.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .base import Split, TensorImageDataset
from .errors import DataError
from .transforms import resize_square, to_channels, unit_to_signed

DIGITS_RESOLUTIONS = (8, 16, 32)
DIGITS_MAX_VALUE = 16.0
TEST_SIZE = 300


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float images in 0..16 and (1797,) labels, read once per process."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def digits_test_mask(labels: np.ndarray, test_size: int = TEST_SIZE) -> np.ndarray:
    """Boolean mask of the fixed test set: evenly spaced picks through the class-sorted order."""
    order = np.argsort(labels, kind="stable")
    rank = np.arange(labels.size)
    picked = (rank + 1) * test_size // labels.size > rank * test_size // labels.size
    mask = np.zeros(labels.size, dtype=bool)
    mask[order[picked]] = True
    return mask


def load_digits_dataset(
    *, resolution: int = 32, channels: int | None = None, split: Split = Split.TRAIN
) -> TensorImageDataset:
    """Digits as (N, C, R, R) in [-1, 1], R in {8, 16, 32}; labels kept."""
    if resolution not in DIGITS_RESOLUTIONS:
        raise DataError(f"expected resolution in {{8, 16, 32}} for digits, got {resolution}")
    images, labels = _raw_digits()
    if split is not Split.ALL:
        mask = digits_test_mask(labels)
        keep = mask if split is Split.TEST else ~mask
        images, labels = images[keep], labels[keep]
    x = unit_to_signed(torch.from_numpy(images / DIGITS_MAX_VALUE)).unsqueeze(1)  # (N, 1, 8, 8)
    x = to_channels(resize_square(x, resolution), channels)                      # (N, C, R, R)
    return TensorImageDataset(x, name="digits", labels=torch.from_numpy(labels.copy()))
