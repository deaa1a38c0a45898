"""A network for a process whose state changes resolution: route each batch by its level.

A batch holds one level, so one resolution (the trainer draws one level's times per batch and
samplers take one t per step). Besides a plain shared network, which needs no wrapper:
- a shared network that is also told the level k through a learned embedding (``class_labels = k``);
- one network per level, each trained only on its level's times.
The level is read from the input's height (``heights[k]``, from the process's `net_shapes`), not
from t: at a turning point the state is already at the finer resolution, and t in float32 may round
to either side of the boundary. The module is a `nets.base.Net` like the networks it routes to (the
output size is theirs to check); any scaling of the state (pixel units) is the denoiser's (`nets.denoiser`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dimdiff.nets.base import Size

__all__ = ["StagedNet"]


class StagedNet(nn.Module):
    def __init__(self, nets: Sequence[nn.Module], *, heights: Sequence[int], tell_stage: bool = False) -> None:
        """``nets``: one shared network, or one per level; ``heights``: the state's height at each level
        k (distinct); ``tell_stage``: the shared network's forward takes ``class_labels`` in range(levels)."""
        super().__init__()
        levels = len(heights)
        if len(set(heights)) != levels:
            raise ValueError(f"expected one distinct state height per level, got {list(heights)}")
        if len(nets) not in (1, levels):
            raise ValueError(f"expected 1 shared net or {levels} (one per level), got {len(nets)}")
        if tell_stage and len(nets) > 1:
            raise ValueError("tell_stage applies to one shared net; per-level nets already know their level")
        self.nets = nn.ModuleList(nets)
        self.heights = tuple(heights)
        self.tell_stage = tell_stage

    def stage_of(self, x: Tensor) -> int:
        """k with x.shape[-2] = heights[k]."""
        if x.shape[-2] not in self.heights:
            heights = list(self.heights)
            raise ValueError(f"expected a state of height in {heights} (one per level), got {tuple(x.shape)}")
        return self.heights.index(x.shape[-2])

    @property
    def per_stage(self) -> bool:
        return len(self.nets) > 1

    @property
    def skips_parameters(self) -> bool:
        """Whether a batch leaves some parameters without gradient (one net per level): DDP must look for them."""
        return self.per_stage

    def net_at(self, k: int) -> nn.Module:
        """The network that runs level k's batches."""
        return self.nets[k] if self.per_stage else self.nets[0]

    def forward(self, x: Tensor, t: Tensor, *, out_size: Size | None = None) -> Tensor:
        """x: (B, C, h_k, w_k) at level k; t: (B,) times of that one level; out_size: passed to level k's net."""
        k = self.stage_of(x)
        net = self.net_at(k)
        if not self.tell_stage:
            return net(x, t, out_size=out_size)
        labels = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        return net(x, t, class_labels=labels, out_size=out_size)

    def out_sizes(self, in_size: Size) -> tuple[Size, ...]:
        """Level k's net's output sizes for an input of height heights[k]; () for any other height."""
        if in_size[0] not in self.heights:
            return ()
        return self.net_at(self.heights.index(in_size[0])).out_sizes(in_size)
