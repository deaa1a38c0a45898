"""Image complexity from gradient magnitude (the complexity-weighted loss and adaptive steps).

    g_x = x[..., :, 1:] - x[..., :, :-1]    forward differences, replicate-padded to H x W
    g_y = x[..., 1:, :] - x[..., :-1, :]
    G   = sqrt(g_x^2 + g_y^2)                per channel

``complexity_map`` normalises G per image to mean 1 (so a loss weight lambda has the same
meaning at every resolution and batch size; the source normalised by the L2 norm of the whole
batch, which makes the weight depend on the batch size). ``complexity_score`` is the
un-normalised root-mean-square of G per image: flat images score 0, busy ones high.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gradient_magnitude", "complexity_map", "complexity_score"]


def gradient_magnitude(x: Tensor) -> Tensor:
    """G for a batch (B, C, H, W) -> (B, C, H, W)."""
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")  # (B, C, H+1, W+1)
    g_x = padded[..., :-1, 1:] - padded[..., :-1, :-1]  # (B, C, H, W)
    g_y = padded[..., 1:, :-1] - padded[..., :-1, :-1]  # (B, C, H, W)
    return torch.sqrt(g_x**2 + g_y**2)


def complexity_map(x: Tensor, eps: float = 1e-8) -> Tensor:
    """G normalised to mean 1 per image, (B, C, H, W)."""
    g = gradient_magnitude(x)
    return g / (g.mean(dim=(1, 2, 3), keepdim=True) + eps)


def complexity_score(x: Tensor) -> Tensor:
    """Root-mean-square gradient magnitude per image, (B,)."""
    return gradient_magnitude(x).pow(2).mean(dim=(1, 2, 3)).sqrt()
