"""DDPM/ADM-style U-Net: x_t and t in, a same-shaped map out. It knows nothing about noise.

Level l of the U-Net works at resolution (H / 2^l, W / 2^l) with base_channels *
channel_mult[l] channels. Attention is placed by level index, not by pixel size, so one net
runs at every resolution divisible by 2^(len(channel_mult) - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dimdiff.nets.layers import (
    Downsample,
    ResBlock,
    SelfAttention,
    Upsample,
    group_norm,
    timestep_embedding,
)

# t in [0, 1] is fed to the sinusoidal embedding as t * 1000, the DDPM step index it stands for:
# the embedding's frequencies (max period 10000) were chosen for integer steps 0..1000. Every
# trained dimdiff model depends on this value; changing it invalidates all checkpoints.
TIME_EMBEDDING_SCALE = 1000.0

UNET_PRESETS: dict[str, dict] = {
    # About 1.0M parameters (982,681 for 1 channel): a CPU-sized net for tests and demos.
    "tiny": dict(
        in_channels=1, out_channels=1, base_channels=24, channel_mult=(1, 2, 2),
        num_res_blocks=2, attention_levels=(1,), num_heads=4, dropout=0.0, scale_shift=True,
    ),
    # Ho et al. 2020, CIFAR-10 (35,746,307 parameters): attention at 16 px for 32 px input.
    "ddpm-cifar10": dict(
        in_channels=3, out_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
        num_res_blocks=2, attention_levels=(1,), num_heads=1, dropout=0.1, scale_shift=False,
    ),
}


def num_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of a module (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())


class UNetBlock(nn.Module):
    """A ResBlock, optionally followed by self-attention."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        attention: bool,
        num_heads: int,
        dropout: float,
        scale_shift: bool,
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_channels, dropout, scale_shift)
        self.attn = SelfAttention(out_channels, num_heads) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)  # (B, Co, H, W)
        return h if self.attn is None else self.attn(h)  # (B, Co, H, W)


class UNet(nn.Module):
    """The U-Net of DDPM (Ho et al. 2020) with the ADM options (scale-shift norm, heads).

    Features run in the channels_last memory format (faster oneDNN convolutions on CPU: about
    1.5x forward, 1.1x forward+backward on the benchmark machine); inputs may come in either
    format, the output is an ordinary contiguous NCHW tensor, and parameters keep the
    default layout (so state_dict tensors stay contiguous for safetensors).
    """

    def __init__(
        self,
        *,
        in_channels: int,                           # channels of x
        out_channels: int,                          # channels of the output
        base_channels: int = 64,                    # channels at level 0
        channel_mult: tuple[int, ...] = (1, 2, 2),  # channels of level l = base * mult[l]
        num_res_blocks: int = 2,                    # ResBlocks per level on the way down
        attention_levels: tuple[int, ...] = (1,),   # level indices with self-attention
        num_heads: int = 4,                         # attention heads
        dropout: float = 0.0,                       # dropout inside the ResBlocks
        scale_shift: bool = True,                   # ADM scale-shift norm, else additive
        num_classes: int = 0,                       # > 0: learned class/stage embedding
    ) -> None:
        super().__init__()
        bad_levels = [lvl for lvl in attention_levels if not 0 <= lvl < len(channel_mult)]
        if bad_levels:
            raise ValueError(f"expected attention_levels in range(0, {len(channel_mult)}), "
                             f"got {tuple(attention_levels)}")
        self.base_channels = base_channels
        self.num_classes = num_classes
        self.divisor = 2 ** (len(channel_mult) - 1)
        emb = 4 * base_channels
        block = dict(emb_channels=emb, num_heads=num_heads, dropout=dropout,
                     scale_shift=scale_shift)

        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.class_embed = nn.Embedding(num_classes, emb) if num_classes > 0 else None
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                attention = level in attention_levels
                self.down.append(UNetBlock(ch, base_channels * mult, attention=attention, **block))
                ch = base_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)

        self.mid = UNetBlock(ch, ch, attention=True, **block)
        self.mid_res = ResBlock(ch, ch, emb, dropout, scale_shift)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                attention = level in attention_levels
                cin = ch + skip_channels.pop()
                self.up.append(UNetBlock(cin, base_channels * mult, attention=attention, **block))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))

        self.output_norm = group_norm(ch)
        self.output_conv = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W); t: (B,) diffusion time in [0, 1]; class_labels: (B,) or None."""
        self._check_inputs(x, t, class_labels)
        emb = self.time_embed(timestep_embedding(t * TIME_EMBEDDING_SCALE, self.base_channels))  # (B, E)
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels)  # (B, E)
        x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), NHWC in memory
        h = self.input_conv(x)  # (B, c0, H, W)
        skips = [h]  # one entry per down block, (B, c_l, H/2^l, W/2^l)
        for block in self.down:
            h = block(h, emb) if isinstance(block, UNetBlock) else block(h)  # (B, c_l, ., .)
            skips.append(h)
        h = self.mid_res(self.mid(h, emb), emb)  # (B, c_L, H/2^L, W/2^L)
        for block in self.up:
            if isinstance(block, UNetBlock):
                h = block(torch.cat([h, skips.pop()], dim=1), emb)  # (B, c_l, ., .)
            else:
                h = block(h)  # (B, c_l, 2 * ., 2 * .)
        h = self.output_conv(F.silu(self.output_norm(h)))  # (B, out_channels, H, W)
        return h.contiguous()  # (B, out_channels, H, W), NCHW in memory

    def _check_inputs(self, x: Tensor, t: Tensor, class_labels: Tensor | None) -> None:
        if x.ndim != 4 or x.shape[1] != self.input_conv.in_channels:
            raise ValueError(f"expected x of shape (B, {self.input_conv.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        B, _, H, W = x.shape
        if H % self.divisor or W % self.divisor:
            raise ValueError(f"expected height and width divisible by {self.divisor}, "
                             f"got {H}x{W}")
        if t.shape != (B,):
            raise ValueError(f"expected t of shape ({B},), got {tuple(t.shape)}")
        if self.class_embed is None:
            if class_labels is not None:
                raise ValueError("got class_labels, but the net was built with num_classes=0")
            return
        if class_labels is None or class_labels.shape != (B,):
            got = None if class_labels is None else tuple(class_labels.shape)
            raise ValueError(f"expected class_labels of shape ({B},), got {got}")
        if B == 0:
            return
        low, high = int(class_labels.min()), int(class_labels.max())
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"expected class_labels in range(0, {self.num_classes}), "
                             f"got values from {low} to {high}")
