"""Image files: sample grids and individual PNGs, `.npz` arrays, and the loss-curve plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["quantise_8bit", "to_uint8", "make_grid", "save_grid", "save_images", "save_npz", "plot_loss_curve"]


def _levels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the 8-bit levels 0..255 (float, rounded)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()


def quantise_8bit(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the 8-bit grid, as a PNG round trip would."""
    return _levels(images) / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return _levels(images.cpu()).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows * (H + pad) + pad, ...) image with a dark border."""
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def _to_pil(array: np.ndarray, scale: int = 1) -> Image.Image:
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_grid(path: str | Path, images: torch.Tensor, ncols: int | None = None) -> Path:
    """A grid PNG of images in [-1, 1]; small images are enlarged (nearest) to stay visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 64 // images.shape[-1])
    _to_pil(make_grid(to_uint8(images), ncols), scale).save(path)
    return path


def save_images(folder: str | Path, images: torch.Tensor, start: int = 0) -> list[Path]:
    """One PNG per image: folder/000000.png, ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(to_uint8(images)):
        paths.append(folder / f"{start + i:06d}.png")
        _to_pil(array).save(paths[-1])
    return paths


def save_npz(path: str | Path, images: torch.Tensor) -> Path:
    """uint8 (N, H, W, C) under the key ``images`` (readable by the npz dataset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=to_uint8(images))
    return path


def plot_loss_curve(records: Sequence[dict[str, Any]], out_path: str | Path) -> Path | None:
    """Loss against step from metrics records (`train.logging.read_metrics`); None when they hold no loss yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for record in records:
        if "loss" in record and "step" in record:
            steps.append(record["step"])
            losses.append(record["loss"])
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=0.8, alpha=0.4, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)
    return Path(out_path)
