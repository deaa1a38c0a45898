"""Dense linear maps of linear-Gaussian processes at tiny sizes, and the helpers of the process
contract suite (`test_process_contract`): a process's own maps read off by pushing a basis through
them in float64, its resolution changes read off its sampling grid, and explicit reverse-step noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dimdiff.bench.oracle import GaussianImages
from dimdiff.process.base import DiffusionProcess, ReverseNoise
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.timesteps import Spacing

Shape = tuple[int, int, int]
F64 = torch.float64


def dense(linear: Callable[[Tensor], Tensor], shape_in: Shape | tuple[int, ...]) -> Tensor:
    """The (d_out, d_in) matrix of a linear map on (B, *shape_in) batches, from the basis of R^d_in."""
    d = math.prod(shape_in)
    basis = torch.eye(d, dtype=F64).reshape(d, *shape_in)
    return linear(basis).reshape(d, -1).T


def full(t: float, n: int) -> Tensor:
    return torch.full((n,), t, dtype=F64)


def zeros(n: int, shape: Shape) -> Tensor:
    return torch.zeros((n, *shape), dtype=F64)


def forward_maps(process: DiffusionProcess, t: float) -> tuple[Tensor, Tensor]:
    """(A_t, B_t) of forward_sample(x0, t, n) = A_t x0 + B_t n."""
    shape, shape_t = process.data_shape, process.shape_at(t)
    A = dense(lambda x: process.forward_sample(x, full(t, len(x)), zeros(len(x), shape_t)), shape)
    B = dense(lambda n: process.forward_sample(zeros(len(n), shape), full(t, len(n)), n), shape_t)
    return A, B


def target_map(process: DiffusionProcess, t: float) -> Tensor:
    """T_t: x0 -> the clean signal that reverse_step takes as x0_hat at t (of target_shape_at(t))."""
    shape_t = process.shape_at(t)
    return dense(lambda x: process.training_target(x, zeros(len(x), shape_t), full(t, len(x)), Parameterization.X0),
                 process.data_shape)  # fmt: skip


def transition_maps(process: DiffusionProcess, s: float, t: float) -> tuple[Tensor, Tensor]:
    """(R, Q) of forward_transition(x_s, s, t, n) = R x_s + Q n."""
    shape_s = process.shape_at(s)
    R = dense(lambda x: process.forward_transition(x, s, t, torch.zeros_like(x)), shape_s)
    Q = dense(lambda n: process.forward_transition(torch.zeros_like(n), s, t, n), shape_s)
    return R, Q


def resolution_changes(process: DiffusionProcess) -> list[float]:
    """The times tau where the state's shape changes (tau itself at the finer resolution), increasing,
    read off the process's sampling grid."""
    ts = process.timesteps(64, Spacing.TRAILING).tolist()
    return sorted(lo for hi, lo in zip(ts, ts[1:], strict=False) if process.shape_at(hi) != process.shape_at(lo))


def stage_bounds(changes: list[float]) -> list[tuple[float, float]]:
    """(lo, hi] of every stage, the one ending at t = 1 last."""
    bounds = [0.0, *changes, 1.0]
    return list(zip(bounds, bounds[1:], strict=False))


def refills(process: DiffusionProcess) -> bool:
    """Whether a step may end at a finer level than its x0 estimate's (the process refills the detail)."""
    return process.refills_on_crossing


def change_steps(process: DiffusionProcess, changes: list[float]) -> list[float]:
    """For each change tau, the time just above it on the process's finest grid: where a process that does
    not refill takes the x0 estimate at the finer level (SSD's change step)."""
    grid = process.timesteps(process.num_steps, Spacing.TRAILING).tolist()
    return [min(t for t in grid if t > tau) for tau in changes]


def probe_times(process: DiffusionProcess, changes: list[float]) -> list[float]:
    """Two times inside every stage (inside DVDP's windows too), every change and t = 1, and the change
    steps of a process that does not refill."""
    inside = [lo + f * (hi - lo) for lo, hi in stage_bounds(changes) for f in (0.3, 0.7)]
    return sorted({*inside, *changes, 1.0, *([] if refills(process) else change_steps(process, changes))})


def supported(process: DiffusionProcess, t: float, s: float) -> bool:
    """Whether reverse_step(., t, s) is a step the process takes: any, for a process that refills the detail
    it crosses into; else only steps whose x0 estimate is at least as fine as the state at s."""
    return refills(process) or math.prod(process.target_shape_at(t)) >= math.prod(process.shape_at(s))


def reverse_steps(process: DiffusionProcess, changes: list[float]) -> dict[str, list[tuple[float, float]]]:
    """(t, s) reverse steps: within a stage, ending exactly on a change (from inside the stage above, or from
    the change step of a process that does not refill), and straddling changes (only processes that refill)."""
    stages = stage_bounds(changes)
    above = {lo: hi for lo, hi in stages}  # tau -> the upper end of the stage above it
    below = {hi: lo for lo, hi in stages}  # tau -> the lower end of its own stage
    if not refills(process):
        onto = list(zip(change_steps(process, changes), changes, strict=True))
        return {"in-stage": [(lo + 0.7 * (hi - lo), lo + 0.3 * (hi - lo)) for lo, hi in stages],
                "onto-change": onto, "straddling": []}  # fmt: skip
    straddling = [((tau + above[tau]) / 2, (below[tau] + tau) / 2) for tau in changes]
    if len(changes) > 1:  # across every change, and across one to end exactly on the next
        straddling += [((changes[-1] + 1.0) / 2, changes[0] / 2), ((changes[-1] + 1.0) / 2, changes[-2])]
    return {
        "in-stage": [(lo + 0.7 * (hi - lo), lo + 0.3 * (hi - lo)) for lo, hi in stages],
        "onto-change": [((tau + above[tau]) / 2, tau) for tau in changes],
        "straddling": straddling,
    }


def explicit_noise(process: DiffusionProcess, changes: list[float], t: float, s: float,
                   draw: Callable[[Shape], Tensor]) -> ReverseNoise:  # fmt: skip
    """Noise for reverse_step(., t, s) by the protocol's rules: a tensor of shape_at(s) for a step that
    does not straddle a change (ending exactly on one included), else (noise down to and across the
    highest change tau crossed, noise for tau -> s)."""
    crossed = [tau for tau in changes if s < tau < t]
    if not crossed:
        return draw(process.shape_at(s))
    tau = max(crossed)
    first = draw(process.shape_at(tau))
    return first, explicit_noise(process, changes, tau, s, draw)


def noise_map(process: DiffusionProcess, changes: list[float], t: float, s: float,
              step: Callable[[int, ReverseNoise], Tensor]) -> Tensor:  # fmt: skip
    """The dense matrix of n -> step(B, noise) for the step's (possibly nested) noise, flattened in draw order."""
    sizes: list[int] = []

    def record(shape: Shape) -> Tensor:
        sizes.append(math.prod(shape))
        return torch.zeros(0)

    explicit_noise(process, changes, t, s, record)
    total = sum(sizes)

    def linear(flat: Tensor) -> Tensor:  # flat: (B, total)
        offset = 0

        def take(shape: Shape) -> Tensor:
            nonlocal offset
            part = flat[:, offset:offset + math.prod(shape)].reshape(len(flat), *shape)
            offset += math.prod(shape)
            return part

        return step(len(flat), explicit_noise(process, changes, t, s, take))

    return dense(linear, (total,))


def random_noise(process: DiffusionProcess, changes: list[float], t: float, s: float, n: int,
                 generator: torch.Generator) -> ReverseNoise:  # fmt: skip
    """Standard normal noise for reverse_step(., t, s) by the protocol's rules."""
    return explicit_noise(process, changes, t, s, lambda shape: torch.randn((n, *shape), generator=generator,
                                                                            dtype=F64))  # fmt: skip


def zero_noise(process: DiffusionProcess, changes: list[float], t: float, s: float, n: int) -> ReverseNoise:
    """All-zero noise for reverse_step(., t, s): the step's mean by linearity."""
    return explicit_noise(process, changes, t, s, lambda shape: zeros(n, shape))


def assert_moments(samples: Tensor, mean: Tensor, cov: Tensor, z: float = 5.0, bias: float = 0.0) -> None:
    """Empirical mean and covariance of samples (N, ...) within z standard errors of (mean, cov),
    entry by entry: se(mean_i) = sqrt(C_ii / N), se(C_ij) = sqrt((C_ij^2 + C_ii C_jj) / N), the
    covariance also within ``bias`` sqrt(C_ii C_jj) for an error that is not sampling (discretisation)."""
    flat = samples.reshape(len(samples), -1).double()
    n = len(flat)
    m = flat.mean(0)
    centred = flat - m
    c = centred.T @ centred / (n - 1)
    var = cov.diagonal().clamp_min(0.0)
    mean_err = (m - mean).abs() / ((var / n).sqrt() + 1e-9)
    assert mean_err.max().item() < z, f"mean off by {mean_err.max().item():.2f} standard errors"
    scale = (var[:, None] * var[None, :]).sqrt()
    se = ((cov**2 + scale**2) / n).sqrt() + 1e-9
    cov_err = ((c - cov).abs() - bias * scale).clamp_min(0.0) / se
    assert cov_err.max().item() < z, f"covariance off by {cov_err.max().item():.2f} standard errors"


def reverse_step_maps(process: DiffusionProcess, changes: list[float], t: float, s: float,
                      eta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(F, G, H) of reverse_step(x_t, x0_hat, t, s, eta, noise) = F x_t + G x0_hat + H n (explicit noise),
    x0_hat of target_shape_at(t)."""
    shape_t, shape_y = process.shape_at(t), process.target_shape_at(t)

    def step(x_t: Tensor, x0_hat: Tensor, noise: ReverseNoise | None = None) -> Tensor:
        if noise is None:
            noise = zero_noise(process, changes, t, s, len(x_t))
        return process.reverse_step(x_t, x0_hat, t, s, eta=eta, noise=noise)

    F = dense(lambda x: step(x, zeros(len(x), shape_y)), shape_t)
    G = dense(lambda y: step(zeros(len(y), shape_t), y), shape_y)
    H = noise_map(process, changes, t, s, lambda n, noise: step(zeros(n, shape_t), zeros(n, shape_y), noise))
    return F, G, H


def conditional_step(process: DiffusionProcess, data: GaussianImages, t: float,
                     s: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Brute-force law of x_s given (x_t, y = T_t x0) for x0 ~ data, x_s ~ q(x_s | x0),
    x_t ~ q(x_t | x_s): x_s | x_t, y ~ N(K_t x_t + K_y y + offset, cov). Returns (K_t, K_y, offset, cov).
    Where x_s depends on x0 only through T_t x0 (every process with attenuation), this is the law given
    x0 itself, whatever the data."""
    A_s, B_s = forward_maps(process, s)
    R, Q = transition_maps(process, s, t)
    T = target_map(process, t)
    d, e_s, e_t = A_s.shape[1], B_s.shape[1], Q.shape[1]
    # everything is linear in w = (x0 - mu, n_s, n_t) ~ N(0, diag(Sigma, I, I))
    W = torch.block_diag(data.cov, torch.eye(e_s, dtype=F64), torch.eye(e_t, dtype=F64))
    L_s = torch.cat([A_s, B_s, torch.zeros(A_s.shape[0], e_t, dtype=F64)], dim=1)
    L_t = R @ L_s + torch.cat([torch.zeros(Q.shape[0], d + e_s, dtype=F64), Q], dim=1)
    L_y = torch.cat([T, torch.zeros(T.shape[0], e_s + e_t, dtype=F64)], dim=1)
    L_obs = torch.cat([L_t, L_y])
    m_s, m_obs = A_s @ data.mean, torch.cat([R @ A_s @ data.mean, T @ data.mean])
    cov_obs, cov_s_obs = L_obs @ W @ L_obs.T, L_s @ W @ L_obs.T
    K = torch.linalg.solve(cov_obs, cov_s_obs.T).T  # Cov(x_s, obs) Cov(obs)^-1
    cov = L_s @ W @ L_s.T - K @ cov_s_obs.T
    d_t = L_t.shape[0]
    return K[:, :d_t], K[:, d_t:], m_s - K @ m_obs, cov
