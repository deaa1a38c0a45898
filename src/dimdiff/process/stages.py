"""DVDP's attenuation windows, turning points and stages (docs/dvdp.md sections 3, 4 and 7).

Symbols:
    K                  number of levels dropped; components c_0 (finest) .. c_K (coarse image)
    tau_1 < ... < tau_K  turning points; component j dies (lambda_j = 0) at tau_{j+1}
    lambda_j(t)        attenuation of component j: 1 before its window, falling to 0 at
                       tau_{j+1}, 0 after; lambda_K = 1 (the coarse image is never attenuated)
    a_j(t)             alpha_t * lambda_j(t), the signal coefficient of component j
    stage k            the time span where components 0..k-1 are dead and the state lives at
                       resolution H / 2^k: tau_k < t <= tau_{k+1} (tau_0 = 0, tau_{K+1} = 1)

Convention at a turning point: the design writes stage k as tau_k <= t < tau_{k+1}; at t = tau_k
component k-1 has a_{k-1} = 0, so the state is exact at either resolution. dimdiff puts
t = tau_k in the finer stage k-1, so a reverse step that lands on tau_k crosses up at once and
the next network call already runs at the finer resolution.

Windows (u = (t - start_j) / (tau_{j+1} - start_j) in [0, 1] inside the window):
    linear   lambda = 1 - u
    cosine   lambda = cos(pi u / 2)
    snr      lambda^2 = (SNR(t) - SNR(tau)) / (SNR(start) - SNR(tau)): the component's SNR
             lambda^2 SNR(t) falls from SNR(start) to exactly 0 at tau, smoothly in log-SNR
    none     lambda = 1 throughout, no widths: the turning points are plain switch times and the
             dropped components still carry signal there (subspace diffusion, docs/dvdp.md section 8)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dimdiff.process.schedules import Schedule

__all__ = ["Window", "Stages"]


class Window(str, enum.Enum):
    LINEAR = "linear"
    COSINE = "cosine"
    SNR = "snr"
    NONE = "none"


@dataclass(frozen=True)
class Stages:
    turning_points: tuple[float, ...]  # tau_1 < ... < tau_K, in (0, 1)
    window_widths: tuple[float, ...]  # width of component j's window, ending at tau_{j+1}
    window: Window = Window.COSINE  # shape of lambda_j inside its window

    def __post_init__(self) -> None:
        taus = self.turning_points
        if any(not 0.0 < tau < 1.0 for tau in taus) or any(a >= b for a, b in zip(taus, taus[1:], strict=False)):
            raise ValueError(f"expected turning points strictly increasing in (0, 1), got {list(taus)}")
        if self.window is Window.NONE:
            if self.window_widths:
                raise ValueError(f"expected no window widths without attenuation, got {list(self.window_widths)}")
            return
        if len(self.window_widths) != len(taus):
            raise ValueError(f"expected one window width per turning point ({len(taus)}), "
                             f"got {len(self.window_widths)}")  # fmt: skip
        for j, (tau, width) in enumerate(zip(taus, self.window_widths, strict=True)):
            if not 0.0 < width <= tau:
                raise ValueError(f"window of component {j}: expected a width in (0, tau_{j + 1} = {tau}], got {width}")
            if self.window is Window.SNR and width >= tau:  # the base SNR is infinite at t = 0
                raise ValueError(f"window of component {j}: an snr window must start after t = 0 (its shape is "
                                 f"relative to the base SNR there, which is infinite): expected a width < "
                                 f"tau_{j + 1} = {tau}, got {width}")  # fmt: skip

    @property
    def num_levels(self) -> int:
        """K: how many times the resolution halves."""
        return len(self.turning_points)

    def boundaries(self) -> tuple[float, ...]:
        """(tau_0 = 0, tau_1, ..., tau_K, tau_{K+1} = 1)."""
        return (0.0, *self.turning_points, 1.0)

    # ------------------------------------------------------------------ attenuation
    def attenuation(self, j: int, t: Tensor, schedule: Schedule | None = None) -> Tensor:
        """lambda_j(t), float64, same shape as t. The SNR window needs the base schedule."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if not 0 <= j <= self.num_levels:
            raise ValueError(f"expected a component index in 0..{self.num_levels}, got {j}")
        if j == self.num_levels or self.window is Window.NONE:
            return torch.ones_like(t)
        tau = self.turning_points[j]
        start = tau - self.window_widths[j]
        u = ((t - start) / (tau - start)).clamp(0.0, 1.0)
        if self.window is Window.LINEAR:
            return 1.0 - u
        if self.window is Window.COSINE:
            return torch.cos(0.5 * math.pi * u).clamp_min(0.0).where(u < 1.0, torch.zeros_like(u))
        if schedule is None:
            raise ValueError("the snr window needs the base noise schedule")
        snr_t, snr_start, snr_tau = schedule.snr(t.clamp(start, tau)), schedule.snr(start), schedule.snr(tau)
        return ((snr_t - snr_tau) / (snr_start - snr_tau)).clamp(0.0, 1.0).sqrt()

    # ------------------------------------------------------------------ stages
    def stage(self, t: float) -> int:
        """k with tau_k < t <= tau_{k+1} (t = 0 is stage 0)."""
        return sum(1 for tau in self.turning_points if t > tau)

    def stage_of_batch(self, t: Tensor | float) -> int:
        """The one stage of a time or a batch of times (a batch must not mix resolutions)."""
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        k_lo, k_hi = self.stage(float(tt.min())), self.stage(float(tt.max()))
        if k_lo != k_hi:
            raise ValueError(f"expected a batch of times in one stage, got times in stages {k_lo} to {k_hi} "
                             f"(turning points {list(self.turning_points)})")  # fmt: skip
        return k_lo

    def shape_at(self, t: float, data_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H / 2^k, W / 2^k) for the stage k of t."""
        c, h, w = data_shape
        k = self.stage(t)
        return (c, h >> k, w >> k)

    def check_data_shape(self, data_shape: tuple[int, int, int]) -> None:
        c, h, w = data_shape
        divisor = 2**self.num_levels
        if h % divisor or w % divisor:
            raise ValueError(f"{self.num_levels} turning points halve the resolution {self.num_levels} times: "
                             f"expected height and width divisible by {divisor}, got {h}x{w}")  # fmt: skip

    def step_counts(self, n: int) -> list[int]:
        """Steps per stage (stage 0 first) for an n-step sampler: proportional to the stage's
        length in t (largest remainders), at least one per stage, summing to n."""
        bounds = self.boundaries()
        if n < len(bounds) - 1:
            raise ValueError(f"expected at least one step per stage ({len(bounds) - 1}), got {n}")
        lengths = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
        exact = [n * length for length in lengths]
        counts = [max(1, math.floor(e)) for e in exact]
        by_remainder = sorted(range(len(counts)), key=lambda k: exact[k] - math.floor(exact[k]), reverse=True)
        i = 0
        while sum(counts) != n:
            k = by_remainder[i % len(counts)]
            if sum(counts) < n:
                counts[k] += 1
            elif counts[k] > 1:
                counts[k] -= 1
            i += 1
        return counts

    def timesteps(self, n: int) -> Tensor:
        """n + 1 decreasing times from 1 to 0 that include every turning point, stage k
        getting ``step_counts(n)[k]`` evenly spaced steps (float64)."""
        bounds, counts = self.boundaries(), self.step_counts(n)
        pieces = [torch.linspace(bounds[k + 1], bounds[k], counts[k] + 1, dtype=torch.float64)[:-1]
                  for k in reversed(range(len(counts)))]  # fmt: skip
        return torch.cat([*pieces, torch.zeros(1, dtype=torch.float64)])

    def cost_bound(self, n: int) -> float:
        """sum_k (n_k / N) 4^-k: a conv net's sampling cost relative to full resolution."""
        return sum(count / n * 4.0**-k for k, count in enumerate(self.step_counts(n)))
