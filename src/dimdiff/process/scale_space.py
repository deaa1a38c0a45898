"""Scale Space Diffusion (Mukhopadhyay et al.): a diffusion whose forward process also downsamples.

    q(x_t | x0) = N(alpha_t M_{0:k(t)} x0, sigma_t^2 I)      at resolution R / 2^k(t)

M_{0:k} chains k 2x downsamplings (`ops.resize`: the 2x2 average, "area", or antialiased bilinear, the
reference's); the state of level k lives at (C, H / 2^k, W / 2^k) in pixel units. Levels k = 0..L-1 change
at the boundaries b_1 < ... < b_{L-1}: the state is at level k for b_k < t <= b_{k+1} (b_0 = 0, b_L = 1), so
b_k itself is at the finer level.

Resolution schedule (the reference's, on its T discrete steps n = 0..T-1, our t = (n + 1) / T): step n is at
level min(floor(u L), L - 1) with u = 1 - (1 - n / (T - 1))^gamma ("convex", gamma = 0.5 keeps full
resolution longest) or u = n / (T - 1) ("equal"). Level k starts at the step n_k = ceil(tau_k (T - 1)),
tau_k = 1 - (1 - k / L)^(1 / gamma), so b_k = n_k / T (the time of step n_k - 1) and the first time of
level k, c_k = b_k + 1 / T, is its resolution-changing step: the network predicts x0 at the next finer or
equal resolution, so at c_k at level k - 1 and everywhere else at its own level. Every sampling grid holds
each c_k and b_k, so a grid step either stays in one level or is the change step c_k -> b_k.

Transition (s < t, j = k(t) - k(s) levels, c = alpha_t / alpha_s, M = M_{k(s):k(t)}):
    q(x_t | x_s) = N(c M x_s, sigma_t^2 I - c^2 sigma_s^2 M M^T).
Posterior (exact under the isotropic marginals, rho = sigma_s^2 / sigma_t^2):
    mean = mu_s + rho c M^T (x_t - c M mu_s),  cov = sigma_s^2 (I - rho c^2 M^T M),  mu_s = alpha_s x0_s,
x0_s the x0 estimate at level k(s). In the singular coordinates of M = U diag(g) V_s^T (`ops.resize_basis`;
area: g = 2^-j everywhere and V_s^T = D_j, orthonormal pooling) the step is, per seen direction i, the
Gaussian DDIM(eta) step of a signal of gain alpha_t g_i at t and alpha_s at s, and the directions M cannot
see, (I - V_s V_s^T), get alpha_s x0_s plus fresh noise of std sigma_s. eta = 1 is the posterior above,
exactly (its covariance is diagonal there); eta = 0 is deterministic within a level and draws only those
unseen directions at a change (as DVDP's crossing does). At s = 0 the step returns the x0 estimate.

Parameterizations: x0 everywhere (the reference's); eps and v within a level, where the target and x_t
share a resolution (at a change step they have no meaning: a clear error).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dimdiff.errors import ConfigError, check_option
from dimdiff.ops.combine import linear_combination
from dimdiff.ops.resize import Resize, down
from dimdiff.ops.resize_basis import ResizeBasis, resize_basis
from dimdiff.process.base import CrossHook, ReverseNoise, TimeLike, TrainingLevel, broadcast_time, check_level
from dimdiff.process.gaussian import ddim_combine, step_coefficients
from dimdiff.process.parameterization import Parameterization, target_coefficients, x0_coefficients
from dimdiff.process.schedules import LinearBetaSchedule, Schedule
from dimdiff.process.timesteps import Spacing, timesteps

__all__ = ["ResolutionSchedule", "ScaleSpaceOptions", "ScaleSpaceProcess", "level_starts"]


class ResolutionSchedule(str, enum.Enum):
    CONVEX = "convex"  # u = 1 - (1 - tau)^gamma: full resolution kept longest for gamma < 1
    EQUAL = "equal"  # u = tau: every level the same number of steps


def level_starts(levels: int, num_steps: int, schedule: ResolutionSchedule, gamma: float) -> tuple[int, ...]:
    """n_1 < ... < n_{L-1}: the first discrete step (0-based, of num_steps) of each coarser level."""
    taus = [k / levels for k in range(1, levels)]
    if schedule is ResolutionSchedule.CONVEX:
        taus = [1.0 - (1.0 - tau) ** (1.0 / gamma) for tau in taus]
    starts = tuple(math.ceil(tau * (num_steps - 1) - 1e-9) for tau in taus)
    if any(b - a < 2 for a, b in zip((0, *starts), (*starts, num_steps), strict=True)):
        raise ValueError(f"expected every one of {levels} levels to hold at least two of {num_steps} steps, got "
                         f"level starts {list(starts)}")  # fmt: skip
    return starts


@dataclass(frozen=True)
class ScaleSpaceProcess:
    data_shape: tuple[int, int, int]  # (C, H, W) of x0
    levels: int = 3  # L resolutions R / 2^k, k = 0..L-1
    schedule: Schedule = field(default_factory=LinearBetaSchedule)
    num_steps: int = 1000  # T
    resolution_schedule: ResolutionSchedule = ResolutionSchedule.CONVEX
    gamma: float = 0.5  # of the convex schedule
    resize: Resize = Resize.AREA  # the 2x downsampling M

    refills_on_crossing = False  # a step onto a finer level needs the x0 estimate at that level

    def __post_init__(self) -> None:
        C, H, W = self.data_shape
        divisor = 2 ** (self.levels - 1)
        if self.levels < 1 or H % divisor or W % divisor:
            raise ValueError(f"expected levels >= 1 and a resolution divisible by 2^(levels - 1) = {divisor}, got "
                             f"levels = {self.levels} for {H}x{W}")  # fmt: skip
        if not self.gamma > 0:
            raise ValueError(f"expected gamma > 0, got {self.gamma}")
        starts = level_starts(self.levels, self.num_steps, self.resolution_schedule, self.gamma)
        object.__setattr__(self, "boundaries", tuple(n / self.num_steps for n in starts))  # b_1 .. b_{L-1}
        object.__setattr__(self, "change_times", tuple((n + 1) / self.num_steps for n in starts))  # c_1 .. c_{L-1}

    # ----------------------------------------------------------------- levels and shapes
    def level(self, t: float) -> int:
        """k(t): how many boundaries b_k lie below t."""
        return sum(1 for b in self.boundaries if b < t)

    def _batch_levels(self, t: TimeLike) -> tuple[tuple[int, int], tuple[int, int]]:
        """((min, max) of k(t), (min, max) of the target level) over a batch of times (B,) or (), computed on
        t's device and read from it at once."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)  # (B, 1)
        b = torch.tensor(self.boundaries, dtype=torch.float64, device=t.device)  # (L - 1,)
        c = torch.tensor(self.change_times, dtype=torch.float64, device=t.device)
        level = (t > b).sum(-1)  # (B,)
        target = level - ((t - c).abs() < 0.25 / self.num_steps).any(-1).long()  # one finer at a change step
        both = torch.stack([level, target])  # (2, B)
        (lo, hi), (target_lo, target_hi) = torch.stack([both.amin(-1), both.amax(-1)], dim=-1).tolist()
        return (lo, hi), (target_lo, target_hi)

    def _levels_of(self, t: Tensor) -> int:
        """The one level of a batch of times (B,) or (); a ValueError for a batch that mixes levels."""
        (lo, hi), _ = self._batch_levels(t)
        if lo != hi:
            raise ValueError(f"expected the times of one batch at one resolution level, got levels {lo} to {hi}")
        return lo

    def _shape(self, k: int) -> tuple[int, int, int]:
        C, H, W = self.data_shape
        return (C, H >> k, W >> k)

    def shape_at(self, t: float) -> tuple[int, int, int]:
        return self._shape(self.level(t))

    def target_level(self, t: float) -> int:
        """The level of the x0 estimate at t: one finer at a change step c_k, else k(t)."""
        k = self.level(t)
        if k > 0 and abs(t - self.change_times[k - 1]) < 0.25 / self.num_steps:
            return k - 1
        return k

    def target_shape_at(self, t: float) -> tuple[int, int, int]:
        return self._shape(self.target_level(t))

    def net_shapes(self) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
        """(level k, level k) for k = 0..L-1, then the change steps (level k, level k - 1) for k = 1..L-1."""
        keep = tuple((self._shape(k), self._shape(k)) for k in range(self.levels))
        return keep + tuple((self._shape(k), self._shape(k - 1)) for k in range(1, self.levels))

    def loss_dim(self, target_shape: tuple[int, int, int]) -> int:
        """The target's own dimension: a mean per pixel at the target's resolution (the reference's loss), so
        that every level weighs alike (pixel units, where a coarser level's error is not a projected part of
        the full-resolution one as in DVDP's orthonormal coordinates)."""
        return math.prod(target_shape)

    def state_scale(self, t: float) -> float:
        return 1.0  # average pooling keeps pixel units

    def x0_bound(self, t: float) -> float:
        return 1.0

    def log_snr(self, t: TimeLike) -> Tensor:
        return self.schedule.log_snr(t)

    def timesteps(self, n: int, spacing: Spacing = Spacing.TRAILING) -> Tensor:
        """DDPM/DDIM's n-step grid with every boundary b_k and change step c_k added (up to 2 (L - 1) more
        steps), so that no step skips a level or crosses a change from anywhere but c_k."""
        grid = timesteps(n, self.num_steps, spacing)
        extra = torch.tensor([*self.boundaries, *self.change_times], dtype=torch.float64)
        return torch.unique(torch.cat([grid, extra])).flip(0)

    # ----------------------------------------------------------------- training times
    def training_levels(self) -> tuple[TrainingLevel, ...]:
        """One per entry of `net_shapes`: level k's own steps (t in (c_k, b_{k+1}], from 1/T at level 0),
        then each change step c_k alone; each with the share of the T discrete steps it holds."""
        T = self.num_steps
        starts, ends = (1.0 / T, *self.change_times), (*self.boundaries, 1.0)
        keep = [TrainingLevel((round(b * T) - round(a * T) + (k == 0)) / T, a + (0.5 / T if k else 0.0), b)
                for k, (a, b) in enumerate(zip(starts, ends, strict=True))]  # fmt: skip
        return (*keep, *(TrainingLevel(1.0 / T, c, c) for c in self.change_times))

    def sample_training_t(self, n: int, *, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", level: int | None = None) -> Tensor:  # fmt: skip
        """One training level per batch (drawn with its share of steps, or ``level``), then t uniform in it."""
        levels = self.training_levels()
        check_level(level, len(levels))
        if level is None:
            shares = torch.tensor([lv.probability for lv in levels], dtype=torch.float64, device=device)
            level = int(torch.multinomial(shares, 1, generator=generator))
        lo, hi = levels[level].t_low, levels[level].t_high
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return hi - (hi - lo) * u

    # ----------------------------------------------------------------- forward process
    def prior_sample(self, n: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:  # fmt: skip
        return torch.randn((n, *self.shape_at(1.0)), generator=generator, device=device)

    def forward_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(broadcast_time(t, x0))
        return linear_combination([(down(x0, self.resize, self._levels_of(t)), alpha), (noise, sigma)])

    def noise_like(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        shape = self._shape(self._levels_of(t))
        return torch.randn((x0.shape[0], *shape), generator=generator, device=x0.device, dtype=x0.dtype)

    def forward_transition(self, x_s: Tensor, s: float, t: float, noise: Tensor) -> Tensor:
        """x_t = c M x_s + U sqrt(sigma_t^2 - c^2 sigma_s^2 g^2) V_s^T noise, j levels apart, in M's singular
        coordinates (area: sqrt(sigma_t^2 - c^2 sigma_s^2 / 4^j) D_j noise): ``noise`` of the shape of x_s,
        whose seen coordinates V_s^T noise are standard normal at the coarser level."""
        if s >= t:
            raise ValueError(f"forward_transition expects s < t, got s={s}, t={t}")
        j = self.level(t) - self.level(s)
        if j == 0:
            c = self._coefficients(t, s, x_s)
            return linear_combination([(x_s, c["r"]), (noise, c["var_st"].sqrt())])
        basis = self._basis(self.level(s), j)
        std = self._coefficients(t, s, x_s, basis.gain)["var_st"].sqrt()  # per direction: r^2 g^2 in var_st
        r = self._coefficients(t, s, x_s)["r"]
        seen_noise = basis.from_observed(linear_combination([(basis.seen(noise), std)]))  # (B, C, h, w)
        return linear_combination([(down(x_s, self.resize, j), r)]) + seen_noise

    # ----------------------------------------------------------------- parameterization
    def _target_level_of(self, t: TimeLike, kind: Parameterization) -> int:
        """The one target level of a batch's times; eps and v only where it is the state's own level."""
        (lo, hi), (target_lo, target_hi) = self._batch_levels(t)
        if target_lo != target_hi:
            raise ValueError(f"expected the times of one batch to share one target level, got levels {target_lo} "
                             f"to {target_hi}")  # fmt: skip
        if kind is not Parameterization.X0 and (lo, hi) != (target_lo, target_lo):
            raise ValueError(f"at a change step the target is x0 one level finer than x_t, where {kind.value} has "
                             f"no meaning: expected parameterization x0, got {kind.value}")  # fmt: skip
        return target_lo

    def training_target(self, x0: Tensor, noise: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        """x0 at the level of the x0 estimate at t (`target_level`); eps or v within a level."""
        x0_k = down(x0, self.resize, self._target_level_of(t, kind))
        if kind is Parameterization.X0:
            return x0_k
        if kind is Parameterization.EPS:
            return noise
        w_noise, w_x0 = target_coefficients(kind, *self.schedule.alpha_sigma(broadcast_time(t, x0)))
        return linear_combination([(noise, w_noise), (x0_k, w_x0)])

    def x0_from_prediction(self, x_t: Tensor, prediction: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        self._target_level_of(t, kind)
        if kind is Parameterization.X0:
            return prediction
        w_x, w_pred = x0_coefficients(kind, *self.schedule.alpha_sigma(broadcast_time(t, x_t)))
        return linear_combination([(x_t, w_x), (prediction, w_pred)])

    # ----------------------------------------------------------------- reverse process
    def _basis(self, k: int, j: int) -> ResizeBasis:
        """The singular coordinates of M_{k:k+j} on level k's images."""
        return resize_basis(self.resize, j, self._shape(k)[1:])

    def _coefficients(self, t: TimeLike, s: TimeLike, like: Tensor, gain: float | Tensor = 1.0) -> dict[str, Tensor]:
        """float64 step coefficients for a signal of gain alpha_t g at t and alpha_s at s, in M's singular
        coordinates: g one number (shapes () or (B,)) or one per direction (h, w) (shapes (B or 1, 1, h, w))."""
        tt, ss = broadcast_time(t, like), broadcast_time(s, like)
        if bool((ss >= tt).any()):
            raise ValueError(f"reverse_step expects s < t, got t={tt.max().item()}, s={ss.min().item()}")
        alpha_t, sigma_t = self.schedule.alpha_sigma(tt)
        alpha_s, sigma_s = self.schedule.alpha_sigma(ss)
        if isinstance(gain, Tensor):
            alpha_t, sigma_t, alpha_s, sigma_s = (v.reshape(-1, 1, 1, 1) for v in (alpha_t, sigma_t, alpha_s, sigma_s))
            return step_coefficients(alpha_t * gain.to(alpha_t.device, non_blocking=True), sigma_t, alpha_s, sigma_s)
        return step_coefficients(alpha_t * gain if gain != 1.0 else alpha_t, sigma_t, alpha_s, sigma_s)

    def reverse_step(
        self,
        x_t: Tensor,
        x0_hat: Tensor,
        t: float,
        s: float,
        *,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise: ReverseNoise | None = None,
        on_cross: CrossHook | None = None,
    ) -> Tensor:
        """The DDIM(eta) step s <- t (eta = 1: the posterior). ``x0_hat`` at `target_shape_at(t)`, which must
        be at least as fine as the state at s (always so on the process's own grids); ``noise``: one
        standard normal tensor of shape (B, *shape_at(s)) (never a pair: no step skips a change)."""
        k_t, k_s, k_0 = self.level(t), self.level(s), self.target_level(t)
        if k_0 > k_s:
            raise ValueError(f"a step from t={t} to s={s} ends at level {k_s}, finer than the x0 estimate taken "
                             f"at t (level {k_0}): expected s at level {k_0} or above (use the process's timesteps)")
        if noise is not None and not isinstance(noise, Tensor):
            raise ValueError(f"expected noise as one tensor of shape {(x_t.shape[0], *self._shape(k_s))}, got a pair")
        x0_s = down(x0_hat, self.resize, k_s - k_0)  # (B, C, H_s, W_s)
        if k_t == k_s:
            return ddim_combine(x_t, x0_s, self._coefficients(t, s, x_t), eta=eta, generator=generator, noise=noise)
        x_s = self.step_across(x_t, x0_s, t, s, eta=eta, generator=generator, noise=noise)
        return on_cross(x_s, s) if on_cross is not None else x_s

    def step_across(self, x_t: Tensor, x0_s: Tensor, t: TimeLike, s: TimeLike, *, eta: float = 1.0,
                    generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:  # fmt: skip
        """The DDIM(eta) step s <- t from x_t (B, C, h, w) at a coarser level than x0_s (B, C, H, W), j >= 1
        levels apart (read off the shapes), in M_{k:k+j}'s singular coordinates; ``noise`` of x0_s's shape."""
        k_s = self.data_shape[1].bit_length() - x0_s.shape[-2].bit_length()
        j = x0_s.shape[-2].bit_length() - x_t.shape[-2].bit_length()
        if j < 1 or self._shape(k_s)[1:] != tuple(x0_s.shape[-2:]) or self._shape(k_s + j)[1:] != tuple(x_t.shape[-2:]):
            raise ValueError(f"expected x_t at a coarser level than x0_s, got {tuple(x_t.shape)} and "
                             f"{tuple(x0_s.shape)}")  # fmt: skip
        basis = self._basis(k_s, j)
        c = self._coefficients(t, s, x_t, basis.gain)
        if noise is None:
            noise = torch.randn(x0_s.shape, generator=generator, device=x0_s.device, dtype=x0_s.dtype)
        seen = ddim_combine(basis.observed(x_t), basis.seen(x0_s), c, eta=eta, noise=basis.seen(noise))
        unseen = basis.unseen(linear_combination([(x0_s, c["alpha_s"]), (noise, c["sigma_s"])]))
        return basis.from_seen(seen) + unseen  # (B, C, H, W)


@dataclass(frozen=True)
class ScaleSpaceOptions:
    """``process.kind = ssd``: levels, the resolution schedule and its gamma (area degradation)."""

    levels: int = 3  # L resolutions R / 2^k, k = 0..L-1; the data resolution must be divisible by 2^(L-1)
    resolution_schedule: ResolutionSchedule = ResolutionSchedule.CONVEX  # how the T steps are split into levels
    gamma: float = 0.5  # convex: u = 1 - (1 - tau)^gamma (< 1 keeps full resolution longest)
    degradation: Resize = Resize.AREA  # the 2x downsampling: area (2x2 average) or bilinear (the reference's)

    needs_fit = False

    def __post_init__(self) -> None:
        check_option(self.levels >= 1, "process.levels", "an integer >= 1", self.levels)
        check_option(self.gamma > 0, "process.gamma", "a value > 0", self.gamma)

    def num_levels(self) -> int:
        return self.levels

    def parameterizations(self) -> tuple[Parameterization, ...]:
        return (Parameterization.X0,)  # a change step's target is one level finer than x_t: no eps or v there

    def fit(self, latents: Tensor) -> ScaleSpaceOptions:
        return self

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> ScaleSpaceProcess:
        try:
            return ScaleSpaceProcess(shape, self.levels, schedule, num_steps, self.resolution_schedule, self.gamma,
                                     self.degradation)  # fmt: skip
        except ValueError as exc:
            raise ConfigError(f"process.levels: {exc}") from None
