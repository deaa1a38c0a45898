"""The training images a configuration names (its ``[data]`` section and the training seed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dimdiff.data import ImageDataset, load_dataset

if TYPE_CHECKING:  # config imports data; data needs config only for the type
    from dimdiff.config import Config

__all__ = ["training_data"]


def training_data(config: Config) -> ImageDataset:
    """The configured training images."""
    data = config.data
    return load_dataset(data.name, path=data.path, resolution=data.resolution, channels=data.channels,
                        seed=config.train.seed, num_patches=data.num_patches,
                        skip_bad_files=data.skip_bad_files)  # fmt: skip
