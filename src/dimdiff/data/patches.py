"""`patches`: random square crops of the colour photographs bundled with scikit-image.

Natural-image statistics (fine detail carries real energy) with no download.

Split: each photograph is cut by columns; crops for TRAIN come from the left 80 % of the
columns and crops for TEST from the right 20 %, so no test crop shares a pixel with any
train crop. ALL crops from the whole photograph.

Scales (a documented choice): each crop takes a square window of `s * resolution` pixels,
s log-uniform in [1, max_scale] (default 4, capped per photograph so the window fits its
region), and resizes it to `resolution` with the shared antialiased resize. Patches thus
hold content at several scales instead of only the photographs' native pixel scale.
max_scale=1 gives plain crops at native scale.

Randomness: a torch.Generator seeded by `seed` for TRAIN and ALL, and by the fixed TEST_SEED
for TEST, so the test patches never change. The photograph of each crop is drawn uniformly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .base import Split, TensorImageDataset
from .errors import DataError
from .transforms import resize_square, to_channels, uint8_to_signed

# Colour photographs shipped inside the scikit-image package ("cat" is the same image as
# "chelsea", so it is left out; stereo_motorcycle contributes its left view).
PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
MIN_PHOTOGRAPHS = 3
TRAIN_FRACTION = 0.8
MAX_SCALE = 4.0
TEST_SEED = 20_240_601


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, (H, W, 3) uint8) for every bundled photograph that loads offline."""
    import skimage.data

    loaded, failed = [], []
    for name in PHOTOGRAPHS:
        try:
            image = getattr(skimage.data, name)()
        except Exception as err:  # a missing file may surface as any error from skimage/pooch
            failed.append(f"{name} ({type(err).__name__}: {err})")
            continue
        image = image[0] if isinstance(image, tuple) else image
        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            loaded.append((name, np.ascontiguousarray(image)))
        else:
            failed.append(f"{name} (expected (H, W, 3) uint8, got {image.shape} {image.dtype})")
    if len(loaded) < MIN_PHOTOGRAPHS:
        raise DataError(
            f"expected at least {MIN_PHOTOGRAPHS} bundled scikit-image photographs, "
            f"loaded {len(loaded)}; failed: {'; '.join(failed)}"
        )
    return tuple(loaded)


def available_photographs() -> list[str]:
    """Names of the photographs that `patches` crops from on this machine."""
    return [name for name, _ in _photographs()]


def split_columns(width: int, split: Split) -> tuple[int, int]:
    """The [start, stop) column range of a photograph that `split` crops from."""
    cut = round(TRAIN_FRACTION * width)
    return {Split.TRAIN: (0, cut), Split.TEST: (cut, width), Split.ALL: (0, width)}[split]


def sample_boxes(
    regions: list[tuple[int, int]],     # (height, width) of each photograph's region
    num: int,                           # number of crops
    resolution: int,                    # output size; the smallest window
    max_scale: float,                   # largest window / resolution
    generator: torch.Generator,
) -> torch.Tensor:
    """(num, 4) long boxes (photograph, top, left, window) inside the regions."""
    sides = torch.tensor([min(h, w) for h, w in regions], dtype=torch.float64)
    eligible = torch.nonzero(sides >= resolution).flatten()
    if eligible.numel() == 0:
        raise DataError(
            f"expected resolution <= {int(sides.max())} for patches of this split, "
            f"got {resolution}"
        )
    picks = torch.randint(eligible.numel(), (num,), generator=generator)
    photo = eligible[picks]
    log_cap = torch.log((sides[photo] / resolution).clamp(max=max_scale))
    scale = torch.exp(torch.rand(num, generator=generator, dtype=torch.float64) * log_cap)
    window = torch.minimum((scale * resolution).floor(), sides[photo]).long()
    heights = torch.tensor([h for h, _ in regions])[photo]
    widths = torch.tensor([w for _, w in regions])[photo]
    top = (torch.rand(num, generator=generator, dtype=torch.float64) * (heights - window + 1))
    left = (torch.rand(num, generator=generator, dtype=torch.float64) * (widths - window + 1))
    return torch.stack([photo, top.long(), left.long(), window], dim=1)


class PatchesDataset(TensorImageDataset):
    """Crops in `tensor`; `boxes[i]` = (photograph, top, left, window) in full-image pixels,
    `sources[photograph]` its scikit-image name."""

    def __init__(
        self, tensor: torch.Tensor, *, boxes: torch.Tensor, sources: tuple[str, ...]
    ) -> None:
        super().__init__(tensor, name="patches")
        self.boxes = boxes
        self.sources = sources


def load_patches_dataset(
    *,
    resolution: int = 32,
    channels: int | None = None,
    split: Split = Split.TRAIN,
    seed: int = 0,
    num_patches: int = 10000,
    max_scale: float = MAX_SCALE,
) -> PatchesDataset:
    """`num_patches` crops (N, C, R, R) in [-1, 1]; channels None -> 3 (RGB), 1 -> grey."""
    if num_patches < 1:
        raise DataError(f"expected num_patches >= 1, got {num_patches}")
    if not (math.isfinite(max_scale) and max_scale >= 1.0):
        raise DataError(f"expected max_scale >= 1, got {max_scale}")
    photos = _photographs()
    columns = [split_columns(image.shape[1], split) for _, image in photos]
    regions = [
        (image.shape[0], stop - start)
        for (_, image), (start, stop) in zip(photos, columns, strict=True)
    ]
    generator = torch.Generator().manual_seed(TEST_SEED if split is Split.TEST else seed)
    boxes = sample_boxes(regions, num_patches, resolution, max_scale, generator)
    boxes[:, 2] += torch.tensor([start for start, _ in columns])[boxes[:, 0]]
    crops = _cut_and_resize([image for _, image in photos], boxes, resolution)
    sources = tuple(name for name, _ in photos)
    return PatchesDataset(to_channels(crops, channels), boxes=boxes, sources=sources)


def _cut_and_resize(images: list[np.ndarray], boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """Cut every box out of its photograph and resize it: (N, 3, R, R) in [-1, 1].

    Boxes are processed grouped by window size (one batched resize per size), then put
    back in their drawn order.
    """
    order = torch.argsort(boxes[:, 3], stable=True)
    windows, counts = torch.unique_consecutive(boxes[order, 3], return_counts=True)
    groups = torch.split(boxes[order], counts.tolist())
    chunks = []
    for window, group in zip(windows.tolist(), groups, strict=True):
        cuts = np.stack([
            images[p][t : t + window, l : l + window] for p, t, l, _ in group.tolist()
        ])                                                            # (k, w, w, 3) uint8
        x = torch.from_numpy(cuts).permute(0, 3, 1, 2)                # (k, 3, w, w) channels-last
        chunks.append(resize_square(x, resolution).contiguous())      # (k, 3, R, R) uint8
    crops = torch.cat(chunks).index_select(0, torch.argsort(order))   # (N, 3, R, R) drawn order
    return uint8_to_signed(crops)
