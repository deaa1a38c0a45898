"""Datasets: float32 (C, H, W) images in [-1, 1], built by `load_dataset`.

Two are always there with no download: `digits` (scikit-learn) and `patches`
(scikit-image photographs). User data: an image folder, CIFAR-10 python batches, a .npz
array. Batching belongs to the trainer; in-memory datasets expose `.tensor` for it.
"""

from __future__ import annotations

import enum
import os
from typing import TypeVar

from .base import DatasetName, ImageDataset, Split, TensorImageDataset
from .cifar import load_cifar10_dataset
from .digits import DIGITS_RESOLUTIONS, load_digits_dataset
from .errors import DataError
from .folder import IMAGE_EXTENSIONS, FolderDataset
from .npz import load_npz_dataset
from .patches import PatchesDataset, available_photographs, load_patches_dataset
from .transforms import check_channels, check_resolution

__all__ = [
    "DIGITS_RESOLUTIONS",
    "IMAGE_EXTENSIONS",
    "DataError",
    "DatasetName",
    "FolderDataset",
    "ImageDataset",
    "PatchesDataset",
    "Split",
    "TensorImageDataset",
    "available_photographs",
    "load_dataset",
]

_E = TypeVar("_E", bound=enum.Enum)
_NEEDS_PATH = (DatasetName.FOLDER, DatasetName.CIFAR10, DatasetName.NPZ)


def load_dataset(
    name: DatasetName | str,
    *,
    path: str | os.PathLike[str] | None = None,   # folder / CIFAR archive or folder / .npz file
    resolution: int = 32,                         # output height and width
    channels: int | None = None,                  # 1 or 3; None: the source's own (folder: 3)
    split: Split | str = Split.TRAIN,             # ignored by folder and npz (always ALL)
    seed: int = 0,                                # patches: crop positions of TRAIN / ALL
    num_patches: int = 10000,                     # patches: number of crops
    skip_bad_files: bool = False,                 # folder: drop undecodable files up front
) -> ImageDataset:
    """Build a dataset by name; every failure is a DataError naming the expectation."""
    name = _parse_enum(DatasetName, name, "dataset")
    split = _parse_enum(Split, split, "split")
    check_resolution(resolution)
    check_channels(channels)
    if name in _NEEDS_PATH and path is None:
        raise DataError(f"dataset {name.value!r} needs a path, got none")
    if name not in _NEEDS_PATH and path is not None:
        raise DataError(f"dataset {name.value!r} is built in and takes no path, got {path}")
    if name is DatasetName.DIGITS:
        return load_digits_dataset(resolution=resolution, channels=channels, split=split)
    if name is DatasetName.PATCHES:
        return load_patches_dataset(
            resolution=resolution, channels=channels, split=split, seed=seed,
            num_patches=num_patches,
        )
    if name is DatasetName.FOLDER:
        return FolderDataset(
            path, resolution=resolution, channels=channels, skip_bad_files=skip_bad_files
        )
    if name is DatasetName.CIFAR10:
        return load_cifar10_dataset(path, resolution=resolution, channels=channels, split=split)
    return load_npz_dataset(path, resolution=resolution, channels=channels)


def _parse_enum(kind: type[_E], value: object, what: str) -> _E:
    """`kind(value)`, or a DataError listing the valid values."""
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise DataError(f"expected {what} in {{{valid}}}, got {value!r}") from None
