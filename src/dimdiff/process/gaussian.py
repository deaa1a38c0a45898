"""The Gaussian variance-preserving process of DDPM/DDIM (the baseline).

    q(x_t | x0)      = N(alpha_t x0, sigma_t^2 I)
    q(x_t | x_s)     = N(r x_s, var_st I), s < t (``forward_transition``)
    q(x_s | x_t, x0) = N(mean, var I), s < t, with r = alpha_t / alpha_s,
                       var_st = sigma_t^2 - r^2 sigma_s^2 (= the s -> t transition variance),
                       mean = (r sigma_s^2 / sigma_t^2) x_t + (alpha_s var_st / sigma_t^2) x0,
                       var  = var_st sigma_s^2 / sigma_t^2
    DDIM(eta) step   x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,
                       c^2 = eta^2 var;  eta = 1 is exactly the posterior above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dimdiff.ops.combine import batch_coefficient, linear_combination
from dimdiff.process.base import CrossHook, ReverseNoise, TimeLike, TrainingLevel, broadcast_time, check_level
from dimdiff.process.parameterization import Parameterization, target_coefficients, x0_coefficients
from dimdiff.process.schedules import LinearBetaSchedule, Schedule
from dimdiff.process.timesteps import Spacing, timesteps

__all__ = ["GaussianOptions", "GaussianProcess", "ddim_combine", "ddim_coefficients", "step_coefficients"]


@dataclass(frozen=True)
class GaussianProcess:
    data_shape: tuple[int, int, int]  # (C, H, W) of x0
    schedule: Schedule = field(default_factory=LinearBetaSchedule)
    num_steps: int = 1000  # T: discrete steps that sampler timestep grids refer to

    refills_on_crossing = True  # vacuous: the resolution never changes

    # ----------------------------------------------------------------- shapes and priors
    def shape_at(self, t: float) -> tuple[int, int, int]:
        return self.data_shape

    def prior_sample(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        return torch.randn((n, *self.shape_at(1.0)), generator=generator, device=device)

    def sample_training_t(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
        level: int | None = None,
    ) -> Tensor:
        """t ~ U[1/T, 1]: the continuous range that the sampler grids cover (one level: ``level`` 0 or None)."""
        check_level(level, 1)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        t_min = 1.0 / self.num_steps
        return t_min + (1.0 - t_min) * u

    def training_levels(self) -> tuple[TrainingLevel, ...]:
        """One level, the data resolution, with every t in [1/T, 1]."""
        return (TrainingLevel(1.0, 1.0 / self.num_steps, 1.0),)

    # ------------------------------------------------------------------ forward process
    def alpha_sigma(self, t: TimeLike, like: Tensor) -> tuple[Tensor, Tensor]:
        """alpha_t, sigma_t, float64, shape () or (B,) for a batch ``like`` (B, ...)."""
        return self.schedule.alpha_sigma(broadcast_time(t, like))

    def log_snr(self, t: TimeLike) -> Tensor:
        return self.schedule.log_snr(t)

    def forward_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(t, x0)
        return linear_combination([(x0, alpha), (noise, sigma)])

    def noise_like(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def forward_transition(self, x_s: Tensor, s: float, t: float, noise: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x_s) for s < t: x_t = r x_s + sqrt(var_st) noise, r = alpha_t / alpha_s,
        var_st = sigma_t^2 - r^2 sigma_s^2 (``noise`` of the shape of x_s)."""
        if s >= t:
            raise ValueError(f"forward_transition expects s < t, got s={s}, t={t}")
        alpha_s, sigma_s = self.alpha_sigma(s, x_s)
        alpha_t, sigma_t = self.alpha_sigma(t, x_s)
        c = step_coefficients(alpha_t, sigma_t, alpha_s, sigma_s)
        return linear_combination([(x_s, c["r"]), (noise, c["var_st"].sqrt())])  # (B, C, H, W)

    # ------------------------------------------------------------- parameterizations
    def x0_from_prediction(self, x_t: Tensor, prediction: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        if kind is Parameterization.X0:
            return prediction
        w_x, w_pred = x0_coefficients(kind, *self.alpha_sigma(t, x_t))
        return linear_combination([(x_t, w_x), (prediction, w_pred)])

    def training_target(self, x0: Tensor, noise: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        if kind is Parameterization.X0:
            return x0
        if kind is Parameterization.EPS:
            return noise
        w_noise, w_x0 = target_coefficients(kind, *self.alpha_sigma(t, x0))
        return linear_combination([(noise, w_noise), (x0, w_x0)])

    # ------------------------------------------------------------------ reverse process
    def _step_coefficients(self, t: TimeLike, s: TimeLike, like: Tensor) -> dict[str, Tensor]:
        """float64 coefficients of the s <- t step, shape () or (B,)."""
        tt, ss = broadcast_time(t, like), broadcast_time(s, like)
        if bool((ss >= tt).any()):
            raise ValueError(f"reverse_step expects s < t, got t={tt.max().item()}, s={ss.min().item()}")
        alpha_t, sigma_t = self.schedule.alpha_sigma(tt)
        alpha_s, sigma_s = self.schedule.alpha_sigma(ss)
        return step_coefficients(alpha_t, sigma_t, alpha_s, sigma_s)

    def timesteps(self, n: int, spacing: Spacing = Spacing.TRAILING) -> Tensor:
        """DDPM/DDIM's grids on the T integer steps (see process.timesteps)."""
        return timesteps(n, self.num_steps, spacing)

    def x0_bound(self, t: float) -> float:
        """Largest |x0| of data in [-1, 1] (what a denoiser may clip its estimate to)."""
        return 1.0

    def target_shape_at(self, t: float) -> tuple[int, int, int]:
        return self.data_shape

    def net_shapes(self) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
        return ((self.data_shape, self.data_shape),)

    def loss_dim(self, target_shape: tuple[int, int, int]) -> int:
        """C * H * W: the loss is the mean squared error per pixel."""
        return math.prod(self.data_shape)

    def state_scale(self, t: float) -> float:
        return 1.0

    def posterior(self, x_t: Tensor, x0: Tensor, t: TimeLike, s: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and (isotropic, per-sample) variance of q(x_s | x_t, x0)."""
        c = self._step_coefficients(t, s, x_t)
        k_t = c["r"] * c["sigma_s"] ** 2 / c["sigma_t"] ** 2
        k_0 = c["alpha_s"] * c["var_st"] / c["sigma_t"] ** 2
        mean = linear_combination([(x_t, k_t), (x0, k_0)])
        return mean, batch_coefficient(c["var"], x_t)

    def reverse_step(
        self,
        x_t: Tensor,
        x0_hat: Tensor,
        t: TimeLike,
        s: TimeLike,
        *,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise: ReverseNoise | None = None,
        on_cross: CrossHook | None = None,  # never called: the dimension never changes
    ) -> Tensor:
        """The DDIM(eta) step s <- t; ``noise``, if given, is the standard normal z of the step, of the
        shape of x_t (the dimension never changes, so never a pair), replacing the draw from ``generator``."""
        if noise is not None and not isinstance(noise, Tensor):
            raise ValueError(f"the Gaussian process never changes resolution: expected noise as one tensor of shape "
                             f"{tuple(x_t.shape)}, got {type(noise)!r}")  # fmt: skip
        c = self._step_coefficients(t, s, x_t)
        return ddim_combine(x_t, x0_hat, c, eta=eta, generator=generator, noise=noise)


def step_coefficients(alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor) -> dict[str, Tensor]:
    """Coefficients of a reverse step s <- t for a signal of gain alpha (float64):
    r = alpha_t / alpha_s (0 where alpha_s = 0), var_st = sigma_t^2 - r^2 sigma_s^2 (the s -> t transition
    variance), var = var_st sigma_s^2 / sigma_t^2 (the posterior variance)."""
    r = torch.where(alpha_s > 0, alpha_t / torch.where(alpha_s > 0, alpha_s, 1.0), 0.0)
    var_st = (sigma_t**2 - r**2 * sigma_s**2).clamp_min(0.0)
    return {
        "alpha_t": alpha_t, "sigma_t": sigma_t, "alpha_s": alpha_s, "sigma_s": sigma_s,
        "r": r, "var_st": var_st, "var": var_st * sigma_s**2 / sigma_t**2,
    }  # fmt: skip


def ddim_coefficients(c: dict[str, Tensor], eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """(w_x, w_x0, w_noise) of the DDIM(eta) step x_s = w_x x_t + w_x0 x0_hat + w_noise z, from
    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - eta^2 var) eps_hat + eta sqrt(var) z,
    eps_hat = (x_t - alpha_t x0_hat) / sigma_t. eta = 1 is the posterior q(x_s | x_t, x0_hat)."""
    c2 = eta**2 * c["var"]
    direction = torch.sqrt((c["sigma_s"] ** 2 - c2).clamp_min(0.0)) / c["sigma_t"]
    return direction, c["alpha_s"] - direction * c["alpha_t"], torch.sqrt(c2)


def ddim_combine(
    x_t: Tensor,
    x0_hat: Tensor,
    c: dict[str, Tensor],
    *,
    eta: float,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """The DDIM(eta) step of ``ddim_coefficients``; z is ``noise``, else drawn where eta^2 var > 0."""
    w_x, w_x0, w_noise = ddim_coefficients(c, eta)
    terms = [(x_t, w_x), (x0_hat, w_x0)]
    if bool(w_noise.any()):
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        terms.append((noise, w_noise))
    return linear_combination(terms)


@dataclass(frozen=True)
class GaussianOptions:
    """``process.kind = gaussian``: no options beyond the common ones; the state keeps the data's shape."""

    needs_fit = False

    def num_levels(self) -> int:
        return 1

    def parameterizations(self) -> tuple[Parameterization, ...]:
        return tuple(Parameterization)

    def fit(self, latents: Tensor) -> GaussianOptions:
        return self

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> GaussianProcess:
        return GaussianProcess(shape, schedule, num_steps)
