"""Flexi-UNet: one U-Net that serves every resolution level, running only the part a level needs.

An input at level l_in (size H / 2^l_in of the full H) goes through the U-Net's shared stem at its own
size, a 1x1 adapter from the stem's width to the width level l_in's encoder expects (one adapter per
width, shared by the levels that need it), the encoder from level l_in down, the middle, and the decoder
up to the output's level l_out <= l_in; decoder levels below l_in have no encoder counterpart and run on
zero skips. A 1x1 adapter maps level l_out's width to level 0's, and the U-Net's shared, zero-initialised
head gives the output. l_in = l_out = 0 is the plain U-Net, bit for bit (no adapter). Scale-space
diffusion's resolution-preserving steps take l_out = l_in, its change steps l_out = l_in - 1.

The U-Net's levels and how they are entered and left: `nets.unet.UNet`. Adapters exist only for levels
up to ``levels - 1``, so every parameter is run by some path; a batch runs one path, so data-parallel
training must look for unused parameters (``skips_parameters``).
"""

from __future__ import annotations

from torch import Tensor, nn

from dimdiff.nets.base import Size
from dimdiff.nets.unet import UNet

__all__ = ["FlexiUNet"]


class FlexiUNet(nn.Module):
    skips_parameters = True  # a path leaves the adapters of other levels (and the finest encoder levels) unused

    def __init__(self, unet: UNet, *, full_size: Size, levels: int) -> None:
        """``unet``: the shared U-Net; ``full_size``: (H, W) of level 0; ``levels``: input levels 0..levels-1
        served (at most the U-Net's levels)."""
        super().__init__()
        if not 1 <= levels <= unet.levels:
            raise ValueError(f"expected 1 to {unet.levels} levels (the U-Net's), got {levels}")
        H, W = full_size
        if H % unet.divisor or W % unet.divisor:  # level l enters at H / 2^l, the encoder goes on to H / divisor
            raise ValueError(f"expected a full size divisible by the U-Net's {unet.divisor}, got {H}x{W}")
        self.unet, self.full_size, self.levels = unet, (H, W), levels
        base, finest = unet.entry_channels(0), unet.exit_channels(0)
        widths_in = sorted({unet.entry_channels(k) for k in range(1, levels)} - {base})
        widths_out = sorted({unet.exit_channels(k) for k in range(1, levels)} - {finest})
        self.adapt_in = nn.ModuleDict({str(c): nn.Conv2d(base, c, 1) for c in widths_in})
        self.adapt_out = nn.ModuleDict({str(c): nn.Conv2d(c, finest, 1) for c in widths_out})

    def level_of(self, size: Size) -> int | None:
        """l with size = full_size / 2^l for l < levels, else None."""
        for level in range(self.levels):
            if (self.full_size[0] >> level, self.full_size[1] >> level) == tuple(size):
                return level
        return None

    def out_sizes(self, in_size: Size) -> tuple[Size, ...]:
        """Level l_in's input gives outputs at every level 0..l_in (finest first)."""
        level = self.level_of(in_size)
        if level is None:
            return ()
        return tuple((self.full_size[0] >> j, self.full_size[1] >> j) for j in range(level + 1))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None, *,
                out_size: Size | None = None) -> Tensor:  # fmt: skip
        """x (B, C, H / 2^l_in, W / 2^l_in); out_size: (H / 2^l_out, W / 2^l_out), l_out <= l_in (None: l_in)."""
        l_in = self.level_of(tuple(x.shape[-2:]))
        sizes = self.out_sizes(tuple(x.shape[-2:]))
        if l_in is None:
            levels = [(self.full_size[0] >> k, self.full_size[1] >> k) for k in range(self.levels)]
            raise ValueError(f"expected an input of size in {levels} (one per level), got {tuple(x.shape)}")
        l_out = l_in if out_size is None else next((j for j, s in enumerate(sizes) if s == tuple(out_size)), None)
        if l_out is None:
            raise ValueError(f"expected out_size in {list(sizes)} for an input at level {l_in}, got {out_size}")
        if l_in == 0:
            return self.unet(x, t, class_labels)  # the plain U-Net
        unet = self.unet
        unet.check_inputs(x, t, class_labels, level=l_in)
        emb = unet.embed(t, class_labels)
        h = unet.stem(x)  # (B, base, h, w)
        if h.shape[1] != unet.entry_channels(l_in):
            h = self.adapt_in[str(unet.entry_channels(l_in))](h)  # (B, C_{l_in - 1}, h, w)
        h, skips = unet.encode(h, emb, level=l_in)
        h = unet.decode(unet.middle(h, emb), skips, emb, level=l_out)  # (B, C_{l_out}, ., .)
        if h.shape[1] != unet.exit_channels(0):
            h = self.adapt_out[str(h.shape[1])](h)  # (B, C_0, ., .)
        return unet.head(h).contiguous()  # (B, out_channels, *out_size), NCHW
