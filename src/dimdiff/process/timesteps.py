"""Timestep grids for samplers: the continuous times t_n > ... > t_1 > t_0 = 0 visited.

A model trained on T discrete steps is evaluated at t = (k + 1) / T for step indices
k in 0..T-1 (index k of diffusers' 0-based timesteps). The spacings follow DDIM and
Lin et al. 2023 ("Common diffusion noise schedules and sample steps are flawed"):
    linspace  k = round(linspace(0, T - 1, n))
    leading   k = (0, 1, ..., n - 1) * (T // n)            (DDIM's original; never reaches t = 1)
    trailing  k = round(T - j T / n) - 1,  j = 0..n-1       (always starts at t = 1)
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor

__all__ = ["Spacing", "timesteps"]


class Spacing(str, enum.Enum):
    LINSPACE = "linspace"
    LEADING = "leading"
    TRAILING = "trailing"


def timesteps(n: int, num_steps: int = 1000, spacing: Spacing = Spacing.TRAILING) -> Tensor:
    """n + 1 times in [0, 1], strictly decreasing, ending at 0 (float64)."""
    if not 1 <= n <= num_steps:
        raise ValueError(f"expected a step count in 1..{num_steps}, got {n}")
    if spacing is Spacing.LINSPACE:
        k = torch.linspace(num_steps - 1, 0, n, dtype=torch.float64).round()  # n = 1 starts at t = 1
    elif spacing is Spacing.LEADING:
        k = torch.arange(n, dtype=torch.float64) * (num_steps // n)
    elif spacing is Spacing.TRAILING:
        k = (num_steps - torch.arange(n, dtype=torch.float64) * (num_steps / n)).round() - 1
    else:
        raise ValueError(f"expected a spacing in {[s.value for s in Spacing]}, got {spacing!r}")
    t = (torch.sort(k, descending=True).values + 1) / num_steps
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])
