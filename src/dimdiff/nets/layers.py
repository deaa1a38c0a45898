"""Building blocks of the DDPM/ADM-style U-Net.

Every block is layout-agnostic: it accepts NCHW tensors in either the contiguous or the
channels_last memory format and keeps the format it was given (the U-Net runs in
channels_last, which is the faster layout for oneDNN convolutions on CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a batch of (possibly fractional) timesteps, as in DDPM.

    t: (B,) float; returns (B, dim) = [sin(t w_0..w_{k-1}), cos(t w_0..w_{k-1})] with
    w_i = max_period^(-i / (k - 1)) and k = dim // 2; an odd dim is padded with one zero.
    """
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)  # (half,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (B, 2*half)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides channels (GroupNorm needs a divisor)."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-5)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, with the time embedding injected between the convs.

    scale_shift=False adds a projection of the embedding to the features (DDPM);
    scale_shift=True modulates the second norm as norm(h) * (1 + scale) + shift (ADM).
    The second conv starts at zero, so a fresh block is the identity (or its 1x1 skip).
    """

    def __init__(
        self,
        in_channels: int,  # channels of the input feature map
        out_channels: int,  # channels of the output feature map
        emb_channels: int,  # width of the time (and class) embedding
        dropout: float = 0.0,  # dropout before the second conv
        scale_shift: bool = True,  # ADM scale-shift norm instead of additive injection
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels * (2 if scale_shift else 1))
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Identity() if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Co, H, W)
        e = self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, Co or 2Co, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)  # (B, Co, 1, 1) each
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # (B, Co, H, W)
        else:
            h = self.norm2(h + e)  # (B, Co, H, W)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, Co, H, W)
        return self.skip(x) + h  # (B, Co, H, W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection.

    The output projection starts at zero, so a fresh block is the identity.
    """

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"expected channels divisible by num_heads={num_heads}, "
                             f"got {channels} channels")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        n, d = self.num_heads, C // self.num_heads
        qkv = self.qkv(self.norm(x)).permute(0, 2, 3, 1)  # (B, H, W, 3C), a view if NHWC
        qkv = qkv.reshape(B, H * W, 3, n, d).permute(2, 0, 3, 1, 4)  # (3, B, n, HW, d)
        q, k, v = qkv.unbind(0)  # (B, n, HW, d) each
        h = F.scaled_dot_product_attention(q, k, v)  # (B, n, HW, d)
        h = h.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
        return x + self.proj(h)  # (B, C, H, W)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double the resolution with nearest-neighbour repetition followed by a conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(h)  # (B, C, 2H, 2W)
