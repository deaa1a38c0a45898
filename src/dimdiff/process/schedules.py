"""Noise schedules of the variance-preserving (VP) process as pure functions of continuous time.

Symbols (Ho et al. 2020; Kingma et al. 2021):
    t          continuous diffusion time in [0, 1]; t = 0 clean, t = 1 (almost) pure noise
    alpha_t    signal coefficient, sqrt(alpha_bar_t) in DDPM's notation
    sigma_t    noise coefficient, sqrt(1 - alpha_bar_t);  alpha_t^2 + sigma_t^2 = 1
    log_snr    log(alpha_t^2 / sigma_t^2), strictly decreasing in t

Every schedule is computed in float64 from ``log_alpha2(t) = log(alpha_bar_t)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

__all__ = ["ScheduleName", "Schedule", "LinearBetaSchedule", "CosineSchedule", "make_schedule"]


class ScheduleName(str, enum.Enum):
    LINEAR = "linear"  # DDPM: beta linear from 1e-4 to 0.02 over 1000 steps
    COSINE = "cosine"  # Nichol & Dhariwal 2021


def _as_f64(t: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class Schedule:
    """Base class: subclasses define ``log_alpha2(t)`` (log alpha_bar_t) in float64."""

    def log_alpha2(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """alpha_t = sqrt(alpha_bar_t), float64."""
        return torch.exp(0.5 * self.log_alpha2(_as_f64(t)))

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma_t = sqrt(1 - alpha_bar_t), float64 (computed with expm1 for accuracy near t = 0)."""
        return torch.sqrt(-torch.expm1(self.log_alpha2(_as_f64(t))))

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.alpha(t), self.sigma(t)

    def log_snr(self, t: torch.Tensor | float) -> torch.Tensor:
        """log(alpha_t^2 / sigma_t^2); +inf at t = 0."""
        la2 = self.log_alpha2(_as_f64(t))
        return la2 - torch.log(-torch.expm1(la2))

    def snr(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.exp(self.log_snr(t))

    def t_from_log_snr(self, log_snr: torch.Tensor | float, iterations: int = 80) -> torch.Tensor:
        """Inverse of ``log_snr`` by bisection (log_snr is monotone), float64."""
        target = _as_f64(log_snr)
        lo = torch.zeros_like(target)
        hi = torch.ones_like(target)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target  # still too clean: move right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)


@dataclass(frozen=True)
class LinearBetaSchedule(Schedule):
    """DDPM's linear-beta schedule made continuous.

    beta_i = beta_start + (beta_end - beta_start) (i - 1) / (T - 1), i = 1..T, and
    log alpha_bar is the cumulative sum of log(1 - beta_i), linearly interpolated between
    the grid points t_i = i / T. The schedule is therefore exactly DDPM's at every integer
    step and strictly monotone in between.
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"expected 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        betas = torch.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=torch.float64)
        cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        object.__setattr__(self, "_cumulative", {cumulative.device: cumulative})  # log alpha_bar at i / T, per device

    def log_alpha2(self, t: torch.Tensor) -> torch.Tensor:
        x = t.clamp(0.0, 1.0) * self.num_steps
        i = torch.clamp(torch.floor(x), max=self.num_steps - 1).long()
        frac = x - i
        tables = self._cumulative  # type: ignore[attr-defined]
        if t.device not in tables:  # t on a GPU: copy the table there once, not on every call
            tables[t.device] = next(iter(tables.values())).to(t.device)
        c = tables[t.device]
        return c[i] + frac * (c[i + 1] - c[i])


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """Nichol & Dhariwal's cosine schedule: alpha_bar_t = cos^2(phi(t)) / cos^2(phi(0)),
    phi(t) = (t + s) / (1 + s) * pi / 2.

    alpha_bar reaches 0 at t = 1; like the discrete schedule's beta clipping, log-SNR is
    clamped from below at ``log_snr_min`` so alpha_t never vanishes (x0 stays recoverable).
    """

    offset: float = 0.008
    log_snr_min: float = -15.0

    def log_alpha2(self, t: torch.Tensor) -> torch.Tensor:
        s = self.offset
        phi = (t.clamp(0.0, 1.0) + s) / (1 + s) * (math.pi / 2)
        phi0 = s / (1 + s) * (math.pi / 2)
        la2 = 2 * (torch.log(torch.cos(phi).clamp_min(1e-300)) - math.log(math.cos(phi0)))
        # clamp log-SNR at log_snr_min, i.e. log alpha_bar at -softplus(-log_snr_min)
        floor = -math.log1p(math.exp(-self.log_snr_min))
        return la2.clamp(floor, 0.0)  # rounding must never make alpha_bar exceed 1


def make_schedule(name: ScheduleName) -> Schedule:
    """The schedule for a configuration choice."""
    if name is ScheduleName.LINEAR:
        return LinearBetaSchedule()
    if name is ScheduleName.COSINE:
        return CosineSchedule()
    raise ValueError(f"expected a schedule in {[n.value for n in ScheduleName]}, got {name!r}")
