"""Dataset base classes: every dataset yields float32 (C, H, W) tensors in [-1, 1]."""

from __future__ import annotations

import enum

import torch
from torch.utils.data import Dataset

from .errors import DataError

SUPPORTED_CHANNELS = (1, 3)


class DatasetName(str, enum.Enum):
    """The dataset kinds `load_dataset` knows."""

    DIGITS = "digits"      # scikit-learn's 8x8 handwritten digits (bundled)
    PATCHES = "patches"    # crops of scikit-image's bundled colour photographs
    FOLDER = "folder"      # a folder of image files, searched recursively
    CIFAR10 = "cifar10"    # CIFAR-10 python batches (tar.gz or extracted folder)
    NPZ = "npz"            # a .npz file holding an image array


class Split(str, enum.Enum):
    """Which part of a dataset to load; folders and .npz files have only ALL."""

    TRAIN = "train"
    TEST = "test"
    ALL = "all"


class ImageDataset(Dataset[torch.Tensor]):
    """Square images as float32 tensors of shape (channels, resolution, resolution) in [-1, 1].

    `__getitem__` returns the image only; class labels, where the source has them, are in
    `labels` (a long tensor aligned with the indices), otherwise `labels` is None.
    `skipped` lists the files left out because they could not be decoded.
    """

    def __init__(
        self,
        *,
        name: str,                              # dataset kind, e.g. "digits"
        channels: int,                          # 1 (grey) or 3 (RGB)
        resolution: int,                        # height == width of every image
        labels: torch.Tensor | None = None,     # (N,) long class labels, or None
        skipped: list[str] | None = None,       # files left out (undecodable)
    ) -> None:
        if channels not in SUPPORTED_CHANNELS:
            raise DataError(f"expected channels in {{1, 3}}, got {channels}")
        self.name = name
        self.channels = channels
        self.resolution = resolution
        self.labels = labels
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one item."""
        return (self.channels, self.resolution, self.resolution)

    def to_tensor(self) -> torch.Tensor:
        """All images stacked into one (N, C, H, W) float32 tensor (decodes every item)."""
        if len(self) == 0:
            return torch.empty(0, *self.shape)
        return torch.stack([self[i] for i in range(len(self))])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"channels={self.channels}, resolution={self.resolution})"
        )


class TensorImageDataset(ImageDataset):
    """An in-memory dataset; `tensor` holds every image as (N, C, H, W) float32 in [-1, 1]."""

    def __init__(
        self,
        tensor: torch.Tensor,                   # (N, C, R, R) float32 in [-1, 1]
        *,
        name: str,
        labels: torch.Tensor | None = None,     # (N,) class labels
    ) -> None:
        if tensor.ndim != 4 or tensor.shape[-1] != tensor.shape[-2]:
            raise DataError(f"expected images of shape (N, C, R, R), got {tuple(tensor.shape)}")
        if tensor.dtype != torch.float32:
            raise DataError(f"expected float32 images, got {tensor.dtype}")
        if labels is not None and labels.shape != (tensor.shape[0],):
            raise DataError(
                f"expected labels of shape ({tensor.shape[0]},), got {tuple(labels.shape)}"
            )
        super().__init__(
            name=name, channels=tensor.shape[1], resolution=tensor.shape[-1], labels=labels
        )
        self.tensor = tensor.contiguous()

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tensor[index]

    def to_tensor(self) -> torch.Tensor:
        return self.tensor
