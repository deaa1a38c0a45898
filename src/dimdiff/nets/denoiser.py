"""Wrap a network into a denoiser: (x_t, t) -> an estimate of the clean signal x0.

The network knows nothing about noise; the wrapper converts its output (eps, x0 or v) into
x0 through the process's named conversions, in float32 whatever precision the network ran in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dimdiff.process.parameterization import Parameterization

__all__ = ["Denoiser"]


class Denoiser(nn.Module):
    def __init__(
        self,
        net: nn.Module,  # (x_t, t) -> prediction, same shape as x_t
        process: Any,  # a dimdiff.process.base.DiffusionProcess
        parameterization: Parameterization,  # what the network predicts
        clip_x0: bool = True,  # clamp the x0 estimate to the data range (process.x0_bound)
        channels_last: bool = False,  # run the network in channels-last memory format
    ) -> None:
        super().__init__()
        self.net = net
        self.process = process
        self.parameterization = parameterization
        self.clip_x0 = clip_x0
        self.channels_last = channels_last

    def prediction(self, x_t: Tensor, t: Tensor, **net_kwargs: Any) -> Tensor:
        """The raw network output for x_t (B, C, H, W) at times t (B,)."""
        x_in = x_t.contiguous(memory_format=torch.channels_last) if self.channels_last else x_t
        return self.net(x_in, t.to(torch.float32), **net_kwargs).float()  # (B, C, H, W)

    def forward(self, x_t: Tensor, t: Tensor, **net_kwargs: Any) -> Tensor:
        out = self.prediction(x_t, t, **net_kwargs)  # (B, C, H, W)
        x0 = self.process.x0_from_prediction(x_t, out, t, self.parameterization)
        if not self.clip_x0:
            return x0
        times = t.reshape(-1).tolist()
        if len(set(times)) == 1:  # samplers: one time per batch
            bound = self.process.x0_bound(times[0])
            return x0.clamp(-bound, bound)
        bounds = torch.tensor([self.process.x0_bound(v) for v in times], device=x0.device, dtype=x0.dtype)
        bounds = bounds.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
        return torch.maximum(torch.minimum(x0, bounds), -bounds)
