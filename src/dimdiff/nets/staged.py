"""Networks for processes with stages (DVDP, subspace diffusion): route each batch by its stage.

A batch of such a process holds one stage, so one resolution (the trainer buckets t by stage and
samplers take one t per step). Besides the plain shared U-Net (DVDP.md section 6):
- a shared U-Net that is also told the stage k through a learned embedding (``class_labels = k``);
- one U-Net per stage, each trained only on its stage's times.
The stage is read from the input's resolution (H / 2^k), not from t: at a turning point the state
is already at the finer resolution, and t in float32 may round to either side of tau.

Pixel units. A stage-k state is in orthonormal pooled coordinates, 2^k times average-pooled
pixels (DVDP.md section 1), and so are the targets: x0, and v, which is mostly -x0 at high noise.
With ``pixel_units`` the network sees z / 2^k and its output is multiplied by 2^k, so it meets
the data's own scale at every stage (the noise it sees is sigma_t / 2^k, the k ln 4 log-SNR
shift). The loss and every formula of the process stay in the orthonormal coordinates.
Measured on 32 px digits (0.3M-parameter shared U-Net, 2500 steps): fd-digits 5.29 -> 2.54.
Either way the module keeps the (x_t, t) -> prediction signature of a plain network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["StagedNet"]


class StagedNet(nn.Module):
    def __init__(self, nets: Sequence[nn.Module], *, resolution: int, num_stages: int, tell_stage: bool = False,
                 pixel_units: bool = True) -> None:  # fmt: skip
        """``nets``: one shared network, or one per stage; ``tell_stage``: the shared network's
        forward takes ``class_labels`` in range(num_stages); ``resolution``: the data's height
        (stage k runs at resolution / 2^k); ``pixel_units``: scale states and outputs by 2^-k / 2^k."""
        super().__init__()
        if len(nets) not in (1, num_stages):
            raise ValueError(f"expected 1 shared net or {num_stages} (one per stage), got {len(nets)}")
        if tell_stage and len(nets) > 1:
            raise ValueError("tell_stage applies to one shared net; per-stage nets already know their stage")
        self.nets = nn.ModuleList(nets)
        self.resolution = resolution
        self.num_stages = num_stages
        self.tell_stage = tell_stage
        self.pixel_units = pixel_units

    def stage_of(self, x: Tensor) -> int:
        """k with x.shape[-2] = resolution / 2^k."""
        heights = [self.resolution >> k for k in range(self.num_stages)]
        if x.shape[-2] not in heights:
            raise ValueError(f"expected a state of height in {heights} (one per stage), got {tuple(x.shape)}")
        return heights.index(x.shape[-2])

    @property
    def per_stage(self) -> bool:
        return len(self.nets) > 1

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, C, H / 2^k, W / 2^k) at stage k; t: (B,) times of that one stage."""
        k = self.stage_of(x)
        scaled = self.pixel_units and k > 0
        net = self.nets[k] if self.per_stage else self.nets[0]
        x_in = x * 2.0**-k if scaled else x
        if self.tell_stage:
            labels = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            out = net(x_in, t, class_labels=labels)
        else:
            out = net(x_in, t)
        return out * 2.0**k if scaled else out
