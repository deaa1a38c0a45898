"""Networks for processes with stages (DVDP, subspace diffusion): route each batch by its stage.

A batch of such a process holds one stage, so one resolution (the trainer buckets t by stage and
samplers take one t per step). Two choices besides the plain shared U-Net (DVDP.md section 6):
- a shared U-Net that is also told the stage k through a learned embedding (``class_labels = k``);
- one U-Net per stage, each trained only on its stage's times.
Either way the module keeps the (x_t, t) -> prediction signature of a plain network. The stage
is read from the input's resolution (H / 2^k), not from t: at a turning point the state is
already at the finer resolution, and t in float32 may round to either side of tau.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["StagedNet"]


class StagedNet(nn.Module):
    def __init__(self, nets: Sequence[nn.Module], *, resolution: int, num_stages: int) -> None:
        """``nets``: one per stage (per-stage networks), or one whose forward takes
        ``class_labels`` in range(num_stages) (shared network told the stage); ``resolution``:
        the data's height (stage k runs at resolution / 2^k)."""
        super().__init__()
        if len(nets) not in (1, num_stages):
            raise ValueError(f"expected 1 shared net or {num_stages} (one per stage), got {len(nets)}")
        self.nets = nn.ModuleList(nets)
        self.resolution = resolution
        self.num_stages = num_stages

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
        if self.per_stage:
            return self.nets[k](x, t)
        labels = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        return self.nets[0](x, t, class_labels=labels)
