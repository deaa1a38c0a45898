"""`npz`: images stored as one array in a `.npz` file.

The array is the one under the key "images", or the only array in the file. Layouts:
(N, H, W) grey, (N, H, W, C) or (N, C, H, W) with C in {1, 3}; an array whose axes 1 and 3
both have size 1 or 3 is ambiguous and refused. Values: uint8 0..255, or floats in [0, 1],
or floats in [-1, 1] (told apart by the minimum: below 0 means [-1, 1]; float data in
[-1, 1] that never goes below 0 is therefore read as [0, 1]). Non-square images are
centre-cropped to a square, then resized to `resolution`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .base import TensorImageDataset
from .errors import DataError
from .transforms import (
    center_crop_square,
    report_upscaled,
    resize_square,
    to_channels,
    uint8_to_signed,
    unit_to_signed,
)

IMAGES_KEY = "images"
EXPECTED_LAYOUTS = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}"
RANGE_TOLERANCE = 1e-3   # float values this far outside their range are clamped, not refused


def read_npz_array(path: str | Path) -> np.ndarray:
    """The image array of a .npz file (key "images", or its only array)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"npz file {path} does not exist")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a NumPy .npz archive: expected a zip of .npy arrays as numpy.savez "
                        f"writes it, got {_describe(path)}")  # fmt: skip
    key = None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            keys = list(arrays.keys())
            key = IMAGES_KEY if IMAGES_KEY in keys else keys[0] if len(keys) == 1 else None
            array = arrays[key] if key is not None else None
    except ValueError as err:  # numpy will not unpickle an array of Python objects (or a damaged header)
        what = "an array of Python objects (dtype object)" if "pickle" in str(err) else f"a damaged array ({err})"
        raise DataError(f"expected an array of numbers under {key!r} in {path}, got {what}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable NumPy .npz archive ({type(err).__name__}: {err})") from None
    if key is None:
        raise DataError(f"expected an array named {IMAGES_KEY!r} or a single array in {path}, got keys {keys}")
    if not isinstance(array, np.ndarray):
        raise DataError(f"expected .npy arrays in the npz file {path}, got the member {key!r} of another kind")
    return array


def _describe(path: Path) -> str:
    """What a file that is not a zip archive seems to hold, for the error message."""
    if path.is_dir():
        return "a folder"
    head = path.read_bytes()[:64]
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array (numpy.save): write it with numpy.savez(path, images=array)"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a truncated or damaged zip file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"other binary data (first bytes {head[:8].hex(' ')})"
    return "a text file"


def to_nchw(array: np.ndarray) -> np.ndarray:
    """View an accepted layout as (N, C, H, W); anything else is a DataError."""
    channel_sizes = (1, 3)
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        last, second = array.shape[3] in channel_sizes, array.shape[1] in channel_sizes
        if last and not second:
            return array.transpose(0, 3, 1, 2)
        if second and not last:
            return array
        reason = "ambiguous: axes 1 and 3 both" if last else "neither axis 1 nor axis 3"
        raise DataError(
            f"expected images as {EXPECTED_LAYOUTS}, got shape {array.shape} "
            f"({reason} could be channels)"
        )
    raise DataError(f"expected images as {EXPECTED_LAYOUTS}, got shape {array.shape}")


def to_signed(array: np.ndarray) -> torch.Tensor:
    """uint8 or float images -> float32 in [-1, 1] (see the module notes for the rule)."""
    if array.dtype == np.uint8:
        return uint8_to_signed(torch.from_numpy(array))
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"expected uint8 or float images, got dtype {array.dtype}")
    x = torch.from_numpy(array.astype(np.float32))
    if not torch.isfinite(x).all():
        raise DataError("expected finite float image values, got NaN or infinity")
    low, high = x.min().item(), x.max().item()
    lower = -1.0 if low < 0 else 0.0
    if low < lower - RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise DataError(
            f"expected float images in [0, 1] or [-1, 1], got values in [{low:g}, {high:g}]"
        )
    x = x.clamp_(lower, 1.0)
    return x if lower < 0 else unit_to_signed(x)


def load_npz_dataset(
    path: str | Path, *, resolution: int = 32, channels: int | None = None
) -> TensorImageDataset:
    """Images of a .npz file as (N, C, R, R) in [-1, 1]; channels None keeps the file's."""
    array = read_npz_array(path)
    if array.size == 0:
        raise DataError(f"expected at least one image in {path}, got shape {array.shape}")
    x = to_signed(np.ascontiguousarray(to_nchw(array)))        # (N, C, H, W)
    report_upscaled([min(x.shape[-2:])] * len(x), resolution, str(path))
    x = resize_square(center_crop_square(x).contiguous(), resolution)  # (N, C, R, R)
    return TensorImageDataset(to_channels(x, channels).contiguous(), name="npz")
