"""The Dimensionality-Varying Diffusion Process (docs/dvdp.md): each orthogonal component of the
image is attenuated at its own rate while noise is added, and dropped at its turning point.

In stage k (tau_k < t <= tau_{k+1}, see `stages.py`) the state lives in reduced coordinates
z = D_k x at resolution H / 2^k, with components comp_i(z) = D_k c_{i+k}(x):

    z_t = sum_{j >= k} a_j(t) comp_{j-k}(z0) + sigma_t eps,   z0 = D_k x0,  a_j = alpha_t lambda_j(t)

Reverse step s <- t (per component j, with r_j = a_j(t) / a_j(s), var_st_j = sigma_t^2 - r_j^2 sigma_s^2):
    DDIM(eta)  comp_j(z_s) = a_j(s) comp_j(x0_hat) + sqrt(sigma_s^2 - eta^2 var_j) comp_j(eps_hat)
                             + eta sqrt(var_j) comp_j(noise),  var_j = var_st_j sigma_s^2 / sigma_t^2
    eps_hat = (z_t - sum_j a_j(t) comp_j(x0_hat)) / sigma_t; eta = 1 is the exact posterior.
Upward crossing at tau_k (stage k -> k-1): x = U z + s_c (n - U D n), n ~ N(0, I) at the
finer resolution, s_c^2 = a_{k-1}(tau_k)^2 s_perp_k^2 + sigma_tau^2: D x = z exactly. With
attenuation a_{k-1}(tau_k) = 0, so s_c = sigma_tau and the new complement is exactly the pure noise
it is in q. Without attenuation (window ``none``: Subspace Diffusion, docs/dvdp.md section 8) the
complement still holds signal at tau_k, modelled as N(0, s_perp_k^2) per dimension
(`dvdp_options.estimate_complement_std`): an approximate crossing, optionally refined by Langevin steps
(`samplers.corrector`) that use `score`.

Parameterizations: x0 (the reduced clean image), v per component with the gains normalised to
a_j^2 + sigma^2 (finite where a_j = 0), and eps with the guard that components whose a_j(t) is
below ``eps_tolerance`` are predicted as x0 instead (never dividing by a vanishing a_j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dimdiff.ops.pool import mix_components, pool, project_complement, unpool
from dimdiff.process.base import CrossHook, ReverseNoise, TimeLike, TrainingLevel, broadcast_time, check_level
from dimdiff.process.gaussian import ddim_coefficients, step_coefficients
from dimdiff.process.parameterization import Parameterization, target_coefficients, x0_coefficients
from dimdiff.process.schedules import LinearBetaSchedule, Schedule
from dimdiff.process.stages import Stages
from dimdiff.process.timesteps import Spacing

__all__ = ["DimensionVaryingProcess"]


@dataclass(frozen=True)
class DimensionVaryingProcess:
    data_shape: tuple[int, int, int]  # (C, H, W) of x0
    stages: Stages  # turning points and attenuation windows
    schedule: Schedule = field(default_factory=LinearBetaSchedule)
    num_steps: int = 1000  # T: discrete steps that sampler grids refer to
    eps_tolerance: float = 1e-2  # eps-prediction: components with a_j(t) below this predict x0
    # s_perp_k per turning point: rms per dimension of the component dropped at tau_k (c_{k-1} of
    # the data); used where that component still carries signal at tau_k; () means all 0
    complement_std: tuple[float, ...] = ()

    refills_on_crossing = True  # an upward crossing refills the dropped detail (`cross_up`)

    def __post_init__(self) -> None:
        self.stages.check_data_shape(self.data_shape)
        if self.complement_std and (len(self.complement_std) != self.stages.num_levels
                                    or min(self.complement_std) < 0):  # fmt: skip
            raise ValueError(f"expected {self.stages.num_levels} complement standard deviations >= 0 (one per "
                             f"turning point), got {list(self.complement_std)}")  # fmt: skip

    # ----------------------------------------------------------------- shapes and times
    def shape_at(self, t: float) -> tuple[int, int, int]:
        return self.stages.shape_at(t, self.data_shape)

    def stage_of(self, t: TimeLike) -> int:
        """The one stage of a time or a batch of times (a batch must not mix resolutions)."""
        return self.stages.stage_of_batch(t)

    def timesteps(self, n: int, spacing: Spacing = Spacing.TRAILING) -> Tensor:
        """Steps per stage in proportion to its length, every turning point on the grid
        (``spacing`` does not apply: the grid is continuous in t)."""
        return self.stages.timesteps(n)

    def x0_bound(self, t: float) -> float:
        """Data in [-1, 1] is within [-2^k, 2^k] in the reduced coordinates of stage k."""
        return float(2 ** self.stages.stage(t))

    def target_shape_at(self, t: float) -> tuple[int, int, int]:
        return self.shape_at(t)

    def net_shapes(self) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
        """One pair per stage k = 0..K: the state and its x0 share the shape (C, H / 2^k, W / 2^k)."""
        C, H, W = self.data_shape
        return tuple(((C, H >> k, W >> k),) * 2 for k in range(self.stages.num_levels + 1))

    def loss_dim(self, target_shape: tuple[int, int, int]) -> int:
        """C * H * W of the clean data at every stage: a stage-k squared error in orthonormal coordinates
        divided by it is the projected full-resolution error per pixel (Parseval; docs/dvdp.md section 6)."""
        return math.prod(self.data_shape)

    def state_scale(self, t: float) -> float:
        """2^k in stage k: orthonormal pooled coordinates are 2^k times average-pooled pixels."""
        return float(2 ** self.stages.stage(t))

    def prior_sample(self, n: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:  # fmt: skip
        return torch.randn((n, *self.shape_at(1.0)), generator=generator, device=device)

    def _stage_times(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """(lo, hi, probability) per stage, float64: stage k trains on t in (lo_k, hi_k] (t >= 1/T), with
        probability equal to its length."""
        bounds = torch.tensor(self.stages.boundaries(), dtype=torch.float64, device=device)
        lo, hi = bounds[:-1].clamp_min(1.0 / self.num_steps), bounds[1:]
        lengths = (hi - lo).clamp_min(0.0)
        return lo, hi, lengths / lengths.sum()

    def sample_training_t(self, n: int, *, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", level: int | None = None) -> Tensor:  # fmt: skip
        """One stage per batch, drawn with probability equal to its length in t (or the stage ``level``),
        then t uniform in it: overall t ~ U[1/T, 1], while every batch holds one resolution."""
        check_level(level, self.stages.num_levels + 1)
        lo, hi, probability = self._stage_times(device)
        k = torch.multinomial(probability, 1, generator=generator).squeeze(0) if level is None else level
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return hi[k] - (hi[k] - lo[k]) * u  # in (lo, hi]: stage k under the (tau_k, tau_{k+1}] convention

    def training_levels(self) -> tuple[TrainingLevel, ...]:
        """Stage k = 0..K (finest first), drawn with probability equal to its length in t."""
        lo, hi, probability = self._stage_times("cpu")
        return tuple(TrainingLevel(float(p), float(a), float(b)) for p, a, b in zip(probability, lo, hi, strict=True))

    def log_snr(self, t: TimeLike) -> Tensor:
        return self.schedule.log_snr(t)

    # ----------------------------------------------------------------- coefficients
    def gains(self, t: TimeLike, k: int, like: Tensor) -> list[Tensor]:
        """a_j(t) for the components j = k..K kept in stage k, float64, shape () or (B,)."""
        tt = broadcast_time(t, like)
        alpha = self.schedule.alpha(tt)
        return [alpha * self.stages.attenuation(j, tt, self.schedule) for j in range(k, self.stages.num_levels + 1)]

    def _mix(self, k: int, terms: list[tuple[Tensor, list[Tensor]]]) -> Tensor:
        """sum over (z, w) in ``terms`` of sum_i w[i] comp_i(z), for stage-k states z with one coefficient
        per component kept (j = k..K). No component is formed: where a term's coefficients are all
        equal (outside the attenuation windows, and always without attenuation) it is the state whole,
        and otherwise each coarser level costs one pooling (`mix_components`)."""
        return mix_components(terms, self.stages.num_levels - k)

    # ----------------------------------------------------------------- forward process
    def forward_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        k = self.stage_of(t)
        z0 = pool(x0, k)  # (B, C, H/2^k, W/2^k)
        gains, sigma = self.gains(t, k, x0), self.schedule.sigma(broadcast_time(t, x0))
        return self._mix(k, [(z0, gains), (noise, [sigma] * len(gains))])  # (B, C, H/2^k, W/2^k)

    def noise_like(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        shape = (x0.shape[0], *self.shape_at(float(torch.as_tensor(t).reshape(-1)[0])))
        return torch.randn(shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def forward_transition(self, z_s: Tensor, s: float, t: float, noise: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x_s) for s < t: per component c_j(x_t) = r_j c_j(x_s) + sqrt(var_st_j) c_j(n),
        r_j = a_j(t) / a_j(s), var_st_j = sigma_t^2 - r_j^2 sigma_s^2, at the resolution of stage(s)
        (``noise`` of that shape); the components dead at t are then dropped (pooled to stage(t))."""
        if s >= t:
            raise ValueError(f"forward_transition expects s < t, got s={s}, t={t}")
        k_s, k_t = self.stages.stage(s), self.stages.stage(t)
        sigma_s, sigma_t = self.schedule.sigma(torch.tensor(s, dtype=torch.float64)), self.schedule.sigma(t)
        pairs = zip(self.gains(t, k_s, z_s), self.gains(s, k_s, z_s), strict=True)
        coefficients = [step_coefficients(a_t, sigma_t, a_s, sigma_s) for a_t, a_s in pairs]
        gains, noise_scales = [c["r"] for c in coefficients], [c["var_st"].sqrt() for c in coefficients]
        z_t = self._mix(k_s, [(z_s, gains), (noise, noise_scales)])
        return pool(z_t, k_t - k_s)

    def score(self, z_t: Tensor, x0_hat: Tensor, t: float) -> Tensor:
        """grad log p_t at z_t by Tweedie's formula, per component: (a_j(t) c_j(x0_hat) - c_j(z_t)) / sigma_t^2
        (exact when x0_hat = E[z0 | z_t]); both in the reduced coordinates of stage(t)."""
        k = self.stages.stage(t)
        sigma2 = self.schedule.sigma(torch.tensor(t, dtype=torch.float64)) ** 2
        gains = self.gains(t, k, z_t)
        return self._mix(k, [(x0_hat, [a / sigma2 for a in gains]), (z_t, [-1.0 / sigma2] * len(gains))])

    # ----------------------------------------------------------------- parameterizations
    def training_target(self, x0: Tensor, noise: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        k = self.stage_of(t)
        z0 = pool(x0, k)  # (B, C, h, w)
        if kind is Parameterization.X0:
            return z0
        sigma = self.schedule.sigma(broadcast_time(t, x0))
        pairs = [target_coefficients(kind, a, sigma, self.eps_tolerance) for a in self.gains(t, k, x0)]
        return self._mix(k, [(noise, [w for w, _ in pairs]), (z0, [w for _, w in pairs])])

    def x0_from_prediction(self, x_t: Tensor, prediction: Tensor, t: TimeLike, kind: Parameterization) -> Tensor:
        if kind is Parameterization.X0:
            return prediction
        k = self.stage_of(t)
        sigma = self.schedule.sigma(broadcast_time(t, x_t))
        pairs = [x0_coefficients(kind, a, sigma, self.eps_tolerance) for a in self.gains(t, k, x_t)]
        return self._mix(k, [(x_t, [w for w, _ in pairs]), (prediction, [w for _, w in pairs])])

    # ----------------------------------------------------------------- reverse process
    def cross_up(self, z: Tensor, scale: float, *, generator: torch.Generator | None = None,
                 noise: Tensor | None = None) -> Tensor:  # fmt: skip
        """One level finer: x = U z + scale (n - U D n), so that D x = z exactly."""
        shape = (z.shape[0], z.shape[1], 2 * z.shape[2], 2 * z.shape[3])
        n = torch.randn(shape, generator=generator, device=z.device, dtype=z.dtype) if noise is None else noise
        return unpool(z) + scale * project_complement(n, 1)

    def _complement_model(self, k: int) -> tuple[float, float, float]:
        """(a, s_perp, sigma) at tau_k for the component dropped there: its detail in x_tau is
        a c + sigma n with c ~ N(0, s_perp^2) per dimension (a = 0 under attenuation)."""
        tau = self.stages.turning_points[k - 1]
        at_tau = torch.tensor(tau, dtype=torch.float64)  # float64: a float32 tau lies just inside the window
        a = float(self.schedule.alpha(tau) * self.stages.attenuation(k - 1, at_tau, self.schedule))
        if not self.complement_std and a > 0.0:
            raise ValueError(f"crossing tau_{k} = {tau:g}, where the dropped component still holds signal (no "
                             f"attenuation), needs complement_std (s_perp per turning point, estimated from the "
                             f"training data by estimate_complement_std), got none")  # fmt: skip
        s_perp = self.complement_std[k - 1] if self.complement_std else 0.0
        return a, s_perp, float(self.schedule.sigma(tau))

    def crossing_scale(self, k: int) -> float:
        """Standard deviation of the complement refilled at tau_k (stage k -> k-1), per dimension:
        sqrt(a_{k-1}(tau_k)^2 s_perp_k^2 + sigma_tau^2); sigma_tau exactly when c_{k-1} is attenuated to 0."""
        a, s_perp, sigma = self._complement_model(k)
        return math.sqrt(a**2 * s_perp**2 + sigma**2)

    def _x0_after_crossing(self, x: Tensor, x0_hat: Tensor, k: int) -> Tensor:
        """The x0 estimate one level finer, just after crossing tau_k: U x0_hat plus the detail's
        posterior mean a s_perp^2 / (a^2 s_perp^2 + sigma^2) (I - P) x under the crossing's model
        (0 under attenuation, where the detail is pure noise)."""
        a, s_perp, sigma = self._complement_model(k)
        x0_up = unpool(x0_hat)
        if a * s_perp == 0.0:
            return x0_up
        return x0_up + a * s_perp**2 / (a**2 * s_perp**2 + sigma**2) * project_complement(x, 1)

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
        on_cross: CrossHook | None = None,
    ) -> Tensor:
        """One step s <- t; on reaching a turning point tau the state crosses up (fresh noise) and
        ``on_cross(x, tau)``, if given, may refine it (e.g. Langevin steps) before the step goes on.

        ``noise``, if given, replaces every draw from ``generator``:
          - a step within one stage: a tensor of shape (B, *shape_at(t));
          - a step that ends exactly on tau and crosses up: a tensor n of the destination shape
            (B, *shape_at(s)), one level finer: D n (``pool(n, 1)``) is the in-stage posterior noise and
            (I - P) n (``project_complement(n, 1)``) the refilled complement, independent standard
            normals (the projections are orthogonal), so the step is exact in distribution;
          - a step that straddles tau (s < tau < t): a pair (noise for the step down to and across tau,
            noise for tau -> s), each by these rules (the second a pair again if it straddles another
            turning point); a plain tensor is a ValueError.
        In every case the noise has the shape of the state at the end of its part of the step. With
        ``noise`` None the draws come from ``generator``: the in-stage posterior noise, then the
        crossing noise, then the rest of the step."""
        t, s = float(t), float(s)
        if s >= t:
            raise ValueError(f"reverse_step expects s < t, got t={t}, s={s}")
        k = self.stage_of(t)
        floor = self.stages.boundaries()[k]  # tau_k: below it the state is one level finer
        crosses = k > 0 and s <= floor
        here, rest = self._split_noise(noise, x_t, t, s, floor if crosses else s)
        in_stage = pool(here, 1) if crosses and here is not None else here  # D n: the in-stage noise
        z_s = self._step_in_stage(x_t, x0_hat, t, max(s, floor), k, eta, generator, in_stage)
        if not crosses:
            return z_s
        x = self.cross_up(z_s, self.crossing_scale(k), generator=generator, noise=here)
        if on_cross is not None:
            x = on_cross(x, floor)
        if s == floor:
            return x
        # the grid straddles the turning point: finish the step one level finer, the x0 estimate's
        # missing detail taken from the crossing's model
        x0_up = self._x0_after_crossing(x, x0_hat, k)
        return self.reverse_step(x, x0_up, floor, s, eta=eta, generator=generator, noise=rest, on_cross=on_cross)

    def _split_noise(self, noise: ReverseNoise | None, x_t: Tensor, t: float, s: float,
                     end: float) -> tuple[Tensor | None, ReverseNoise | None]:  # fmt: skip
        """(noise for the step t -> ``end``, the stage's floor where the step crosses a turning point, or s;
        noise for the rest of the step, end -> s), checked against the rules of ``reverse_step``."""
        if noise is None:
            return None, None
        expected = (x_t.shape[0], *self.shape_at(end))
        if s < end:
            if not (isinstance(noise, tuple) and len(noise) == 2):
                got = f"a tensor of shape {tuple(noise.shape)}" if isinstance(noise, Tensor) else repr(type(noise))
                raise ValueError(f"the step t={t} -> s={s} straddles the turning point {end}: expected noise as a "
                                 f"pair (noise of shape {expected} for the step down to and across it, noise for "
                                 f"the step {end} -> {s}), got {got}")  # fmt: skip
            here, rest = noise
        else:
            here, rest = noise, None
        if not isinstance(here, Tensor) or tuple(here.shape) != expected:
            got = f"shape {tuple(here.shape)}" if isinstance(here, Tensor) else repr(type(here))
            raise ValueError(f"the step t={t} -> s={end}: expected noise as one tensor of the destination shape "
                             f"{expected}, got {got}")  # fmt: skip
        return here, rest

    def _step_in_stage(self, z_t: Tensor, x0_hat: Tensor, t: float, s: float, k: int, eta: float,
                       generator: torch.Generator | None, noise: Tensor | None) -> Tensor:  # fmt: skip
        sigma_t, sigma_s = self.schedule.sigma(torch.tensor(t, dtype=torch.float64)), self.schedule.sigma(s)
        # components are orthogonal projections, so comp_j(eps_hat) = (comp_j(z_t) - a_j(t) comp_j(x0_hat)) / sigma_t:
        # each component takes exactly the Gaussian DDIM(eta) step with its own gain a_j
        pairs = zip(self.gains(t, k, z_t), self.gains(s, k, z_t), strict=True)
        weights = [ddim_coefficients(step_coefficients(a_t, sigma_t, a_s, sigma_s), eta) for a_t, a_s in pairs]
        terms = [(z_t, [w[0] for w in weights]), (x0_hat, [w[1] for w in weights])]
        if any(bool(w[2].any()) for w in weights):
            if noise is None:
                noise = torch.randn(z_t.shape, generator=generator, device=z_t.device, dtype=z_t.dtype)
            terms.append((noise, [w[2] for w in weights]))
        return self._mix(k, terms)
