"""`cifar10`: the CIFAR-10 python batches, from the archive or the extracted folder.

`path` may be `cifar-10-python.tar.gz` (read in place, nothing is extracted), the folder
`cifar-10-batches-py`, or a folder that holds either of them. TRAIN reads data_batch_1..5
(50,000 images), TEST reads test_batch (10,000), ALL reads both. Each batch is a pickled
dict with b"data" (N, 3072) uint8 (1024 red, 1024 green, 1024 blue values, rows of 32) and
b"labels" (N ints). The batches are unpickled with an unpickler that only rebuilds numpy
arrays, so a file that is not a genuine batch cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .base import Split, TensorImageDataset
from .errors import DataError
from .transforms import report_upscaled, resize_square, to_channels, uint8_to_signed

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
CIFAR_RESOLUTION = 32

# The globals a CIFAR batch pickle refers to (numpy arrays), under numpy 1 and 2 names.
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain containers and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a CIFAR batch")


def _batch_names(split: Split) -> tuple[str, ...]:
    everything = TRAIN_BATCHES + TEST_BATCHES
    return {Split.TRAIN: TRAIN_BATCHES, Split.TEST: TEST_BATCHES, Split.ALL: everything}[split]


def _parse_batch(stream: IO[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and (N,) labels from one pickled batch."""
    try:
        batch = _BatchUnpickler(stream, encoding="bytes").load()
    except Exception as err:  # unpickling reports bad data with many exception types
        raise DataError(f"cannot read CIFAR-10 batch {where}: {type(err).__name__}: {err}") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"expected a dict with b'data' and b'labels' in {where}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"expected b'data' uint8 (N, 3072) in {where}, got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"expected {data.shape[0]} labels in {where}, got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_archive(archive: Path, names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read batches straight out of the tar archive (matched by file name)."""
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if name not in members:
                    raise DataError(f"CIFAR-10 batch file {name} is missing from {archive}")
            return [
                _parse_batch(io.BytesIO(tar.extractfile(members[name]).read()), f"{archive}:{name}")
                for name in names
            ]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read archive {archive}: {type(err).__name__}: {err}") from err


def _read_folder(folder: Path, names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read batches from the extracted folder."""
    for name in names:
        if not (folder / name).is_file():
            raise DataError(f"CIFAR-10 batch file {name} is missing from {folder}")
    batches = []
    for name in names:
        with open(folder / name, "rb") as stream:
            batches.append(_parse_batch(stream, str(folder / name)))
    return batches


def read_cifar10(path: str | Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels of `split`."""
    path = Path(path)
    names = _batch_names(split)
    if not path.exists():
        raise DataError(f"CIFAR-10 path {path} does not exist")
    if path.is_file():
        batches = _read_archive(path, names)
    elif any((path / name).exists() for name in TRAIN_BATCHES + TEST_BATCHES):
        batches = _read_folder(path, names)
    elif (path / FOLDER_NAME).is_dir():
        batches = _read_folder(path / FOLDER_NAME, names)
    elif (path / ARCHIVE_NAME).is_file():
        batches = _read_archive(path / ARCHIVE_NAME, names)
    else:
        raise DataError(
            f"expected {ARCHIVE_NAME}, the folder {FOLDER_NAME} or the batch files "
            f"(data_batch_1..5, test_batch) at {path}; found none of them"
        )
    images, labels = zip(*batches, strict=True)
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10_dataset(
    path: str | Path,
    *,
    resolution: int = CIFAR_RESOLUTION,
    channels: int | None = None,
    split: Split = Split.TRAIN,
) -> TensorImageDataset:
    """CIFAR-10 as (N, C, R, R) in [-1, 1] with labels; other resolutions are resized."""
    images, labels = read_cifar10(path, split)
    report_upscaled([CIFAR_RESOLUTION] * len(images), resolution, str(path))
    x = resize_square(torch.from_numpy(images), resolution)     # (N, 3, R, R) uint8
    x = to_channels(uint8_to_signed(x), channels)               # (N, C, R, R) float32
    return TensorImageDataset(x, name="cifar10", labels=torch.from_numpy(labels))
