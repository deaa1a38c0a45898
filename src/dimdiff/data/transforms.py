"""Shared image helpers: value scaling, centre crop, resize, channel conversion.

Tensor helpers work on batches (N, C, H, W), float32 already scaled to [-1, 1] unless a
helper says it also takes uint8.

Resizing (one choice for every tensor dataset): downsizing uses bilinear interpolation with
antialiasing (a triangle filter widened by the scale factor, defined for any factor);
upsizing uses plain bilinear interpolation with `align_corners=False`. Results are clamped
to [-1, 1]. Image folders are resized by PIL instead (bicubic, which antialiases when
downsizing), because they are decoded one PIL image at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError

# ITU-R BT.601 luma weights, the ones PIL uses for "RGB" -> "L".
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
MAX_UPSCALE = 2   # images enlarged by more than this factor to the resolution are reported

log = logging.getLogger(__name__)


def uint8_to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map uint8 values 0..255 to float32 in [-1, 1]."""
    if x.dtype != torch.uint8:
        raise DataError(f"expected uint8 values, got {x.dtype}")
    return x.to(torch.float32).mul_(1.0 / 127.5).sub_(1.0)


def unit_to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map floats in [0, 1] to float32 in [-1, 1]."""
    return x.to(torch.float32).mul(2.0).sub_(1.0)


def center_crop_square(x: torch.Tensor) -> torch.Tensor:
    """Crop (..., H, W) to its central (..., S, S) square, S = min(H, W)."""
    height, width = x.shape[-2:]
    size = min(height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]


def resize_square(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize square images (N, C, S, S) to (N, C, resolution, resolution).

    `x` is float in [-1, 1] (clamped back into it) or uint8 (rounded by torch; its
    antialiased uint8 kernel is many times faster than float on CPU).
    """
    size = x.shape[-1]
    if x.shape[-2] != size:
        raise DataError(f"expected square images, got {tuple(x.shape[-2:])}")
    if size == resolution:
        return x
    y = F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False,
        antialias=resolution < size,
    )
    return y.clamp_(-1.0, 1.0) if y.is_floating_point() else y


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma; weights sum to 1, so [-1, 1] is kept."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def to_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert (N, C, H, W) with C in {1, 3} to `channels` (None keeps C)."""
    have = x.shape[1]
    if channels is None or channels == have:
        return x
    if have == 3 and channels == 1:
        return rgb_to_grey(x)
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise DataError(f"expected channels in {{1, 3}}, got {channels} (images have {have})")


def report_upscaled(sides: Sequence[int], resolution: int, source: str) -> int:
    """Log one warning when images whose squares have the side lengths `sides` are enlarged more than
    MAX_UPSCALE times to `resolution`; returns how many are."""
    small = [side for side in sides if MAX_UPSCALE * side < resolution]
    if small:
        least = min(small)
        log.warning(
            "%d of %d images in %s are upscaled more than %dx (smallest %dx%d px) to %d px; they will look like "
            "blobs: use a lower resolution or larger images", len(small), len(sides), source, MAX_UPSCALE, least,
            least, resolution,
        )
    return len(small)


def check_resolution(resolution: int) -> None:
    """Reject resolutions that are not a positive integer of at least 2."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise DataError(f"expected an integer resolution >= 2, got {resolution!r}")


def check_channels(channels: int | None) -> None:
    """Reject channel counts other than None, 1 or 3."""
    if channels not in (None, 1, 3):
        raise DataError(f"expected channels in {{1, 3}} or None, got {channels!r}")


def fit_pil_image(image: Image.Image, resolution: int, channels: int) -> torch.Tensor:
    """Centre-crop a PIL image to a square, resize it, and return (C, R, R) in [-1, 1]."""
    image = _to_8bit(image).convert("L" if channels == 1 else "RGB")
    width, height = image.size
    size = min(width, height)
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))   # crop first: no bleed from outside
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, channels)
    return uint8_to_signed(torch.from_numpy(array.copy()).permute(2, 0, 1))


def _to_8bit(image: Image.Image) -> Image.Image:
    """Rescale 16-bit grey ("I;16", or "I" as older PIL opens 16-bit PNG) to 8-bit "L".

    PIL's own conversion would clip every value above 255 to white.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image).astype(np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    return image
