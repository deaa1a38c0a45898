"""A network made into a denoiser: it owns the x0 estimate for sampling and the loss for training.

    output = c_out * net(x_t / c_in, t, out_size=(h', w'))
                          c_in = c_out = process.state_scale(t) in pixel units, else 1
                          (C', h', w') = head.output_shape(process.target_shape_at(t)), the shape output must have
    forward(x_t, t)       -> head.x0_estimate(process, x_t, output, t), clipped to the data range
    loss(x0, t, noise)    -> head.loss(process, x0, x_t, t, noise, output), x_t = forward_sample(x0, t, noise)

The network knows nothing about noise (EDM's preconditioned denoiser, k-diffusion's
``Denoiser.loss``); the head knows the output format (`heads`); the process knows the noise math.
The trainer and the training bench call ``loss``, the samplers call the denoiser: one step of
training and one x0 estimate exist once. The output's shape is checked against what the process
and the head declare, so a network of the wrong width fails with a clear error, never a broadcast.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from dimdiff.heads.base import Head, LossParts
from dimdiff.process.base import DiffusionProcess

__all__ = ["Denoiser"]


class Denoiser(nn.Module):
    def __init__(
        self,
        net: nn.Module,                        # a `nets.base.Net`: (x, t, *, out_size) -> output
        process: DiffusionProcess,             # the forward process and its reverse step
        head: Head,                            # output format, x0 estimate and loss
        *,
        clip_x0: bool = True,                  # clamp the x0 estimate to the data range (process.x0_bound)
        channels_last: bool = False,           # feed the network channels-last tensors
        pixel_units: bool = False,             # net sees x_t / state_scale(t), output times state_scale(t)
        autocast: torch.dtype | None = None,   # run the network under autocast in this dtype
    ) -> None:  # fmt: skip
        super().__init__()
        self.net = net
        self.process = process
        self.head = head
        self.clip_x0 = clip_x0
        self.channels_last = channels_last
        self.pixel_units = pixel_units
        self.autocast = autocast

    def with_head(self, head: Head) -> Denoiser:
        """This denoiser (the same network, process and settings) with another head; itself if it is the same."""
        if head is self.head:
            return self
        return Denoiser(self.net, self.process, head, clip_x0=self.clip_x0, channels_last=self.channels_last,
                        pixel_units=self.pixel_units, autocast=self.autocast)  # fmt: skip

    def net_output(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The network's output for x_t (B, C, h, w) at times t (B,), in float32 and the state's units."""
        t0 = float(t.reshape(-1)[0])  # a batch holds one resolution level: its first time stands for all
        expected = (x_t.shape[0], *self.head.output_shape(self.process.target_shape_at(t0)))  # (B, C_out, h', w')
        scale = self.process.state_scale(t0) if self.pixel_units else 1.0
        x_in = x_t * (1.0 / scale) if scale != 1.0 else x_t
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        context = torch.autocast(x_t.device.type, self.autocast) if self.autocast else contextlib.nullcontext()
        with context:
            out = self.net(x_in, t.to(torch.float32), out_size=expected[-2:])  # (B, C_out, h', w')
        out = out * scale if scale != 1.0 else out
        if tuple(out.shape) != expected:
            raise ValueError(f"the network's output for a state of shape {tuple(x_t.shape)}: expected shape "
                             f"{expected}, got {tuple(out.shape)} (a net built for another process or head?)")
        return out.float()

    def forward(self, x_t: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The x0 estimate (B, *process.target_shape_at(t)) at x_t, t (B,)."""
        x0 = self.head.x0_estimate(self.process, x_t, self.net_output(x_t, t), t, generator=generator)
        return self._clip(x0, t) if self.clip_x0 else x0

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, LossParts]:
        """The training loss of clean data x0 (B, C, H, W) at times t (B,) with the forward noise ``noise``."""
        x_t = self.process.forward_sample(x0, t, noise)  # (B, C', h, w)
        return self.head.loss(self.process, x0, x_t, t, noise, self.net_output(x_t, t))

    def _clip(self, x0: Tensor, t: Tensor) -> Tensor:
        times = t.reshape(-1).tolist()
        if len(set(times)) == 1:  # samplers: one time per batch
            bound = self.process.x0_bound(times[0])
            return x0.clamp(-bound, bound)
        bounds = torch.tensor([self.process.x0_bound(v) for v in times], device=x0.device, dtype=x0.dtype)
        bounds = bounds.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
        return torch.maximum(torch.minimum(x0, bounds), -bounds)

    def extra_repr(self) -> str:
        return f"head={self.head}, pixel_units={self.pixel_units}, clip_x0={self.clip_x0}"
