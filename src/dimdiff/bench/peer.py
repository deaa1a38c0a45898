"""The peer in every speed comparison: diffusers' `UNet2DModel` with our widths and its
`DDIMScheduler` sampling loop, adapted at the edge (diffusers is an optional dependency).

Widths, levels, ResBlocks per level, attention levels, time-embedding width and time injection
follow our U-Net, so parameter counts agree within a fraction of a percent; diffusers takes one
GroupNorm group count for the whole net, where ours takes the largest divisor <= 32 per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dimdiff.config import ProcessConfig, SampleConfig
from dimdiff.nets.layers import num_groups
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.schedules import ScheduleName

__all__ = ["MISSING_NOTE", "load_diffusers", "diffusers_unet", "diffusers_scheduler", "diffusers_ddim_sampler"]

MISSING_NOTE = "diffusers is not installed; the peer row is skipped (pip install 'dimdiff[bench]' to add it)"

_PREDICTION = {Parameterization.EPS: "epsilon", Parameterization.X0: "sample", Parameterization.V: "v_prediction"}
_SCHEDULE = {ScheduleName.LINEAR: "linear", ScheduleName.COSINE: "squaredcos_cap_v2"}


def load_diffusers() -> ModuleType | None:
    """The diffusers module, or None when it cannot be imported."""
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers


def diffusers_unet(
    diffusers: ModuleType,
    *,
    channels: int,                      # image channels in and out
    resolution: int,                    # data resolution (px)
    base_channels: int,                 # width of level 0
    channel_mult: tuple[int, ...],      # width multiplier per level
    num_res_blocks: int,                # ResBlocks per level on the way down
    attention_levels: tuple[int, ...],  # level indices with self-attention
    num_heads: int,                     # attention heads (of the first attention level)
    scale_shift: bool,                  # ADM scale-shift norm, else additive time injection
) -> nn.Module:
    """diffusers' UNet2DModel shaped like dimdiff's UNet with the same arguments."""
    widths = tuple(base_channels * m for m in channel_mult)
    attn = [level in attention_levels for level in range(len(widths))]
    head_level = attention_levels[0] if attention_levels else len(widths) - 1
    return diffusers.UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        block_out_channels=widths, layers_per_block=num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=widths[head_level] // num_heads,
        norm_num_groups=num_groups(math.gcd(*widths)), freq_shift=1, flip_sin_to_cos=False,
        resnet_time_scale_shift="scale_shift" if scale_shift else "default",
    )  # fmt: skip


def diffusers_scheduler(diffusers: ModuleType, process: ProcessConfig, sample: SampleConfig) -> Any:
    """A DDIMScheduler with our schedule, parameterization, x0 clipping and timestep spacing."""
    return diffusers.DDIMScheduler(
        num_train_timesteps=process.num_steps, beta_schedule=_SCHEDULE[process.schedule],
        prediction_type=_PREDICTION[process.parameterization], clip_sample=sample.clip_x0,
        timestep_spacing=sample.spacing.value,
    )  # fmt: skip


def diffusers_ddim_sampler(
    unet: nn.Module, scheduler: Any, shape: tuple[int, int, int], batch: int, steps: int, *,
    seed: int = 0, eta: float = 0.0, device: torch.device | str = "cpu",
) -> Callable[..., Tensor]:  # fmt: skip
    """A function that runs diffusers' whole ``steps``-step DDIM loop on one batch:
    set_timesteps(N), then N times unet(x, t).sample -> scheduler.step(...).prev_sample."""

    @torch.inference_mode()
    def sample(callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn((batch, *shape), generator=generator, device=device)  # (B, C, H, W)
        scheduler.set_timesteps(steps, device=device)
        for i, t in enumerate(scheduler.timesteps):
            if callback is not None:
                callback({"step": i, "t": float(t) / scheduler.config.num_train_timesteps, "x_t": x})
            output = unet(x, t).sample  # (B, C, H, W)
            x = scheduler.step(output, t, x, eta=eta, generator=generator).prev_sample  # (B, C, H, W)
        return x

    return sample
