"""DDPM/ADM-style U-Net: x_t and t in, a same-shaped map out. It knows nothing about noise.

Level l of the U-Net works at resolution (H / 2^l, W / 2^l) with C_l = base_channels *
channel_mult[l] channels. Attention is placed by level index, not by pixel size, so one net
runs at every resolution divisible by 2^(len(channel_mult) - 1).

The net is built from per-level stages (`EncoderLevel`, `DecoderLevel`) that a caller may enter
at any level l_in and leave at any level l_out through `UNet.embed`, `stem`, `encode`, `middle`,
`decode` and `head` (see `UNet`); `forward` is their composition at l_in = l_out = 0.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

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


class EncoderLevel(nn.Module):
    """Level l on the way down, at (H/2^l, W/2^l): ``blocks`` (UNetBlocks to width C_l), then
    ``downsample`` to level l + 1 (None at the coarsest level).

    forward(h, emb) -> (h_out, skips): skips = [h, the output of each block] (the level's entry and
    its blocks, in the order they were made); h_out is the last block's output, downsampled (but at the
    coarsest level).
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int, *, downsample: bool, **block: Any) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleList(
            UNetBlock(in_channels if i == 0 else channels, channels, **block) for i in range(num_blocks)
        )
        self.out_channels = channels if num_blocks else in_channels
        self.downsample = Downsample(self.out_channels) if downsample else None
        self.skip_channels = (in_channels, *[channels] * num_blocks)  # the width of each skip, in order

    def forward(self, h: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = [h]  # (B, c, H/2^l, W/2^l) each
        for block in self.blocks:
            h = block(h, emb)  # (B, C_l, H/2^l, W/2^l)
            skips.append(h)
        return (h if self.downsample is None else self.downsample(h)), skips


class DecoderLevel(nn.Module):
    """Level l on the way up: ``blocks`` (one UNetBlock per skip of encoder level l, each taking
    cat([h, skip]) and giving width C_l), then ``upsample`` to level l - 1 (None at level 0).

    ``skip_channels`` holds the width of each skip in the encoder's order (the blocks consume them
    last first), so that a level with no encoder counterpart can run on zeros of the right shape.
    """

    def __init__(self, in_channels: int, channels: int, skip_channels: Sequence[int], *, upsample: bool,
                 **block: Any) -> None:  # fmt: skip
        super().__init__()
        self.skip_channels = tuple(skip_channels)
        widths = [in_channels] + [channels] * (len(self.skip_channels) - 1)  # of h before each block
        skips = reversed(self.skip_channels)  # the blocks consume the skips last first
        self.blocks = nn.ModuleList(
            UNetBlock(ch + skip, channels, **block) for ch, skip in zip(widths, skips, strict=True)
        )
        self.upsample = Upsample(channels) if upsample else None
        self.out_channels = channels

    def zero_skips(self, h: Tensor) -> list[Tensor]:
        """Zero skips for h (B, ., h_l, w_l) at this level, in the encoder's order."""
        B, _, H, W = h.shape
        return [h.new_zeros(B, c, H, W).contiguous(memory_format=torch.channels_last) for c in self.skip_channels]

    def forward(self, h: Tensor, emb: Tensor, skips: list[Tensor] | None = None, *,
                upsample: bool = True) -> Tensor:  # fmt: skip
        """h: (B, c, h_l, w_l); skips: encoder level l's skips (None: zeros), consumed: the list is emptied as
        the blocks run, so that at inference each skip is freed once used; upsample=False ends at this level."""
        skips = self.zero_skips(h) if skips is None else skips
        if len(skips) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} skips at this level, got {len(skips)}")
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C_l, h_l, w_l)
        if upsample and self.upsample is not None:
            h = self.upsample(h)  # (B, C_l, 2 h_l, 2 w_l)
        return h


def _remap_legacy_keys_hook(module: UNet, state_dict: MutableMapping[str, Any], prefix: str, *_: Any) -> None:
    module.remap_legacy_keys(state_dict, prefix)


class UNet(nn.Module):
    """The U-Net of DDPM (Ho et al. 2020) with the ADM options (scale-shift norm, heads).

    Features run in the channels_last memory format (faster oneDNN convolutions on CPU: about
    1.5x forward, 1.1x forward+backward on the benchmark machine); inputs may come in either
    format, the output is an ordinary contiguous NCHW tensor, and parameters keep the
    default layout (so state_dict tensors stay contiguous for safetensors).

    Levels l = 0 .. l_max (l_max = len(channel_mult) - 1), level l at (H/2^l, W/2^l) with C_l =
    base_channels * channel_mult[l] channels: ``encoder[l]`` is an `EncoderLevel`, ``decoder[str(l)]`` a
    `DecoderLevel` (a ModuleDict keyed by level, filled coarsest first: the order the decoder runs and the
    order of ``parameters()``). To enter at level l_in and leave at level l_out (l_in >= l_out: an input
    2^(l_in - l_out) times coarser than the output):

        emb = net.embed(t, class_labels)                 # (B, 4 base)
        h = net.stem(x)                                  # (B, base, h, w), channels_last
        h = adapt_in(h)                                  # the caller's: base to entry_channels(l_in)
        h, skips = net.encode(h, emb, level=l_in)        # encoder levels l_in .. l_max; skips: {l: [...]}
        h = net.decode(net.middle(h, emb), skips, emb, level=l_out)  # decoder levels l_max .. l_out
        h = adapt_out(h)                                 # the caller's: exit_channels(l_out) to exit_channels(0)
        out = net.head(h)                                # (B, out_channels, 2^(l_in - l_out) (h, w))

    Decoder levels with no skips (levels below l_in) run on zero skips. ``forward`` is this at l_in =
    l_out = 0 with no adapters. State dicts saved before the net had levels (keys ``down.i``, ``up.i``) load:
    `remap_legacy_keys` renames them, on every ``load_state_dict`` (a pre-hook) and in
    `dimdiff.checkpoint.load_state_dict_strict`.
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
        block = dict(emb_channels=emb, num_heads=num_heads, dropout=dropout, scale_shift=scale_shift)
        widths = [base_channels * mult for mult in channel_mult]  # C_l
        attention = [level in attention_levels for level in range(len(channel_mult))]

        # Modules are made (seeded initial weights) and registered (parameter order, optimizer state)
        # in the order of the flat U-Net this one replaced.
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.class_embed = nn.Embedding(num_classes, emb) if num_classes > 0 else None
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.encoder = self._build_encoder(widths, num_res_blocks, attention, block)
        ch = self.encoder[-1].out_channels
        self.mid = UNetBlock(ch, ch, attention=True, **block)
        self.mid_res = ResBlock(ch, ch, emb, dropout, scale_shift)
        self.decoder = self._build_decoder(widths, attention, block)
        self.output_norm = group_norm(widths[0])
        self.output_conv = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)
        self._register_load_state_dict_pre_hook(_remap_legacy_keys_hook, with_module=True)

    def _build_encoder(self, widths: list[int], num_blocks: int, attention: list[bool],
                       block: dict[str, Any]) -> nn.ModuleList:  # fmt: skip
        encoder, ch = nn.ModuleList(), self.base_channels
        for level, width in enumerate(widths):
            encoder.append(EncoderLevel(ch, width, num_blocks, downsample=level < len(widths) - 1,
                                        attention=attention[level], **block))  # fmt: skip
            ch = encoder[-1].out_channels
        return encoder

    def _build_decoder(self, widths: list[int], attention: list[bool], block: dict[str, Any]) -> nn.ModuleDict:
        decoder, ch = nn.ModuleDict(), self.encoder[-1].out_channels
        for level in reversed(range(len(widths))):  # coarsest first
            decoder[str(level)] = DecoderLevel(ch, widths[level], self.encoder[level].skip_channels,
                                               upsample=level > 0, attention=attention[level], **block)  # fmt: skip
            ch = widths[level]
        return decoder

    @property
    def levels(self) -> int:
        """l_max + 1, the number of levels (resolutions)."""
        return len(self.encoder)

    def entry_channels(self, level: int) -> int:
        """The width of h that `encode` takes at ``level`` l: base_channels for l = 0, else C_{l-1}."""
        return self.encoder[self._level(level)].in_channels

    def exit_channels(self, level: int) -> int:
        """The width of h that `decode` returns when it leaves at ``level`` l: C_l."""
        return self.decoder[str(self._level(level))].out_channels

    def embed(self, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The embedding (B, 4 base) of times t (B,) in [0, 1] and, with num_classes > 0, class_labels (B,)."""
        emb = self.time_embed(timestep_embedding(t * TIME_EMBEDDING_SCALE, self.base_channels))  # (B, E)
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels)  # (B, E)
        return emb

    def stem(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W), either memory format -> (B, base, H, W), channels_last."""
        return self.input_conv(x.contiguous(memory_format=torch.channels_last))

    def encode(self, h: Tensor, emb: Tensor, *, level: int = 0) -> tuple[Tensor, dict[int, list[Tensor]]]:
        """Encoder levels ``level`` .. l_max on h (B, entry_channels(level), ., .) at level ``level``'s resolution:
        (h (B, C_lmax, ., .) at level l_max, {l: level l's skips, in the encoder's order})."""
        if h.shape[1] != self.entry_channels(level):
            raise ValueError(f"expected h of {self.entry_channels(level)} channels to enter at level {level}, "
                             f"got {tuple(h.shape)}")
        skips: dict[int, list[Tensor]] = {}
        for lvl in range(level, self.levels):
            h, skips[lvl] = self.encoder[lvl](h, emb)  # (B, c, ., .)
        return h, skips

    def middle(self, h: Tensor, emb: Tensor) -> Tensor:
        """The bottleneck at level l_max: (B, C_lmax, ., .) -> same shape."""
        return self.mid_res(self.mid(h, emb), emb)

    def decode(self, h: Tensor, skips: MutableMapping[int, list[Tensor]], emb: Tensor, *, level: int = 0) -> Tensor:
        """Decoder levels l_max .. ``level`` on h (B, C_lmax, ., .), with ``skips`` as `encode` returns them (a level
        missing from them runs on zeros; skips of levels below ``level`` are not used): (B, exit_channels(level),
        ., .) at level ``level``'s resolution, not upsampled past it. The levels it runs are taken out of
        ``skips`` and their lists emptied (each skip is freed once used, as in the flat U-Net: 13 % less peak
        memory at inference than keeping them to the end)."""
        self._level(level)
        for lvl in reversed(range(level, self.levels)):
            h = self.decoder[str(lvl)](h, emb, skips.pop(lvl, None), upsample=lvl > level)  # (B, C_lvl, ., .)
        return h

    def head(self, h: Tensor) -> Tensor:
        """(B, C_0, H, W) -> (B, out_channels, H, W), in h's memory format."""
        return self.output_conv(F.silu(self.output_norm(h)))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None, *,
                out_size: tuple[int, int] | None = None) -> Tensor:  # fmt: skip
        """x: (B, C, H, W); t: (B,) diffusion time in [0, 1]; class_labels: (B,) or None; out_size: None or (H, W)."""
        self.check_inputs(x, t, class_labels, out_size)
        emb = self.embed(t, class_labels)  # (B, E)
        h, skips = self.encode(self.stem(x), emb)  # (B, C_lmax, H/2^lmax, W/2^lmax), NHWC in memory
        h = self.decode(self.middle(h, emb), skips, emb)  # (B, c_0, H, W)
        return self.head(h).contiguous()  # (B, out_channels, H, W), NCHW in memory

    def out_sizes(self, in_size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """The output sizes for an input of size (H, W): (H, W) itself where both are divisible by `divisor`."""
        H, W = in_size
        return ((H, W),) if H > 0 and W > 0 and H % self.divisor == 0 and W % self.divisor == 0 else ()

    def remap_legacy_keys(self, state: MutableMapping[str, Any], prefix: str = "") -> None:
        """Rename, in place, the keys of a state dict saved by the flat U-Net (before levels) for this net at
        ``prefix``: ``down.i`` is the i-th block or downsample of the encoder levels in order, ``up.i`` the i-th
        block or upsample of the decoder levels coarsest first. Keys of another architecture stay as they are
        (a strict load then names them)."""
        old = [key for key in state if key.startswith((f"{prefix}down.", f"{prefix}up."))]
        if not old:
            return
        names = self._legacy_names()
        for key in old:
            section, index, rest = key[len(prefix):].split(".", 2)
            new = names.get(f"{section}.{index}")
            if new is not None:
                state[f"{prefix}{new}.{rest}"] = state.pop(key)

    def _legacy_names(self) -> dict[str, str]:
        """{"down.3": "encoder.1.blocks.0", ...}: the flat U-Net's module names of the levels' blocks and resamplers."""
        names = {}
        for old, container in (("down", "encoder"), ("up", "decoder")):
            units = [name for name, module in getattr(self, container).named_modules()
                     if isinstance(module, (UNetBlock, Downsample, Upsample))]  # in registration order
            names.update({f"{old}.{i}": f"{container}.{name}" for i, name in enumerate(units)})
        return names

    def _level(self, level: int) -> int:
        if not 0 <= level < self.levels:
            raise ValueError(f"expected a level in range(0, {self.levels}), got {level}")
        return level

    def check_inputs(self, x: Tensor, t: Tensor, class_labels: Tensor | None,
                     out_size: tuple[int, int] | None = None, *, level: int = 0) -> None:  # fmt: skip
        """Refuse inputs the net cannot take (a ValueError naming expected and received); ``level``: the
        level x enters at (its size must halve l_max - level more times)."""
        if x.ndim != 4 or x.shape[1] != self.input_conv.in_channels:
            raise ValueError(f"expected x of shape (B, {self.input_conv.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        B, _, H, W = x.shape
        divisor = self.divisor >> self._level(level)
        if H % divisor or W % divisor:
            raise ValueError(f"expected height and width divisible by {divisor}, "
                             f"got {H}x{W}")
        if out_size is not None and tuple(out_size) != (H, W):
            raise ValueError(f"expected out_size None or {(H, W)} (this U-Net outputs at its input's size), "
                             f"got {tuple(out_size)}")
        if t.shape != (B,):
            raise ValueError(f"expected t of shape ({B},), got {tuple(t.shape)}")
        self._check_labels(class_labels, B)

    def _check_labels(self, class_labels: Tensor | None, B: int) -> None:
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
