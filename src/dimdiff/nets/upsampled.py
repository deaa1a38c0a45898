"""A plain U-Net at the data's resolution serving every level by resizing: the input is upsampled to the
full size, the whole U-Net runs there, and its output is resized to the size asked for.

This is how scale-space diffusion runs without a Flexi-UNet (its authors compare the two: the same quality,
the Flexi-UNet faster): every step costs a full-resolution forward, so the process saves no network compute,
only the state's memory. Input: bilinear upsampling (align_corners false) by 2^l from level l; output: the
antialiased bilinear resize (`torch.nn.functional.interpolate` with antialias, the reference's) down to
out_size, none at full size. Level 0 in and out is the plain U-Net, bit for bit.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dimdiff.nets.base import Size
from dimdiff.nets.unet import UNet

__all__ = ["UpsampledNet"]


class UpsampledNet(nn.Module):
    def __init__(self, unet: UNet, *, full_size: Size, levels: int) -> None:
        """``unet``: runs at ``full_size`` (H, W); inputs and outputs at H / 2^l for l = 0..levels-1."""
        super().__init__()
        H, W = full_size
        if levels < 1 or H % 2 ** (levels - 1) or W % 2 ** (levels - 1):
            raise ValueError(f"expected levels >= 1 and a full size divisible by 2^(levels - 1), got {levels} "
                             f"levels for {H}x{W}")  # fmt: skip
        self.unet, self.full_size, self.levels = unet, (H, W), levels

    def _sizes(self) -> tuple[Size, ...]:
        return tuple((self.full_size[0] >> k, self.full_size[1] >> k) for k in range(self.levels))

    def out_sizes(self, in_size: Size) -> tuple[Size, ...]:
        """Every level's size, finest first, for an input at any level."""
        return self._sizes() if tuple(in_size) in self._sizes() else ()

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None, *,
                out_size: Size | None = None) -> Tensor:  # fmt: skip
        """x (B, C, H / 2^l, W / 2^l); out_size one of the levels' sizes (None: x's own)."""
        sizes = self._sizes()
        if tuple(x.shape[-2:]) not in sizes:
            raise ValueError(f"expected an input of size in {list(sizes)} (one per level), got {tuple(x.shape)}")
        out_size = tuple(x.shape[-2:]) if out_size is None else tuple(out_size)
        if out_size not in sizes:
            raise ValueError(f"expected out_size in {list(sizes)}, got {out_size}")
        if tuple(x.shape[-2:]) != self.full_size:
            x = F.interpolate(x, size=self.full_size, mode="bilinear", align_corners=False)  # (B, C, H, W)
        y = self.unet(x, t, class_labels)  # (B, C_out, H, W)
        if out_size != self.full_size:
            y = F.interpolate(y, size=out_size, mode="bilinear", align_corners=False, antialias=True)
        return y.contiguous()
