"""Sampling error without training: every method's process and sampler, driven by the exact
denoiser of Gaussian image data, scored by the Frechet distance of its samples to the data.

For x0 ~ N(m, C) every process here is linear-Gaussian: z_t = M_t x0 + sigma_t eps, and the
denoiser's target z0 = T_t x0 (T_t = D_k in stage k), so the posterior mean is exact:

    E[z0 | z_t] = T m + T C M^T (M C M^T + sigma_t^2 I)^-1 (z_t - M m)

with M_t and T_t read off the process's own `forward_sample` and `training_target` (applied to a
basis). What is left in the samples is the sampler's error alone: the time discretisation, and
for subspace diffusion its approximate crossing. The Frechet distance is computed on pixels from
the samples' mean and covariance against the exact (m, C); ``floor`` is the distance of as many
real draws, the estimate's own bias.

The data is a stationary Gaussian field with the 1/f^2 power spectrum of natural images:
P(f) = 1 / (|f|^2 + f_c^2), f_c = corner / resolution, scaled to a per-pixel variance, channels
independent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dimdiff.bench.environment import environment_record
from dimdiff.bench.registry import REFERENCE_KEY, BenchMethod, data_channels
from dimdiff.build import build_process, data_shape, fit_process, run_sampler
from dimdiff.config import config_to_dict
from dimdiff.metrics.frechet import feature_statistics, frechet_distance_eig
from dimdiff.process.base import DiffusionProcess
from dimdiff.process.parameterization import Parameterization

__all__ = ["OracleOptions", "OracleRow", "GaussianImages", "stationary_images", "oracle_denoiser",
           "frechet_gaussian", "oracle_bench"]  # fmt: skip


@dataclass(frozen=True)
class OracleOptions:
    steps: tuple[int, ...] = (10, 20, 50, 100)  # sampling step counts N
    samples: int = 20_000  # draws per method and N (the floor falls as 1 / samples)
    variance: float = 0.3  # per-pixel variance of the data (digits in [-1, 1]: about 0.3)
    corner: float = 1.5  # f_c = corner / resolution in cycles per pixel
    seed: int = 0


@dataclass(frozen=True)
class OracleRow:
    """One method at one step count N: the Frechet distance of its samples to the data."""

    key: str
    name: str
    steps: int  # N
    frechet: float  # Frechet distance to the data (pixels)
    excess: float  # frechet - floor: about unbiased, the floor being the sample-size bias
    excess_ratio_to_ddim: float | None  # excess over DDIM's at the same N (None: no positive reference)


@dataclass(frozen=True)
class GaussianImages:
    shape: tuple[int, int, int]  # (C, H, W)
    mean: Tensor  # (d,), float64
    cov: Tensor  # (d, d), float64
    _factor: Tensor = field(repr=False)  # L with L L^T = cov

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return (self.mean + z @ self._factor.T).reshape(n, *self.shape)


def stationary_images(shape: tuple[int, int, int], variance: float = 0.3, corner: float = 1.5) -> GaussianImages:
    """Zero-mean images whose channels are independent periodic stationary fields with power
    spectrum 1 / (|f|^2 + (corner / H)^2), per-pixel variance ``variance``."""
    c, h, w = shape
    if variance <= 0 or corner <= 0:
        raise ValueError(f"expected variance > 0 and corner > 0, got {variance}, {corner}")
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    power = 1.0 / (fy[:, None] ** 2 + fx[None, :] ** 2 + (corner / h) ** 2)  # (H, W)
    # the covariance of a stationary field is the inverse DFT of its spectrum, shifted per pixel
    kernel = torch.fft.ifft2(power).real  # (H, W), kernel[dy, dx] = Cov(x[p], x[p + (dy, dx)])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = (ys.reshape(-1, 1) - ys.reshape(1, -1)) % h
    dx = (xs.reshape(-1, 1) - xs.reshape(1, -1)) % w
    single = kernel[dy, dx] * (variance / float(kernel[0, 0]))  # (H W, H W)
    cov = torch.block_diag(*[single] * c)
    cov = (cov + cov.T) / 2 + 1e-9 * variance * torch.eye(cov.shape[0], dtype=torch.float64)
    return GaussianImages(shape, torch.zeros(cov.shape[0], dtype=torch.float64), cov, torch.linalg.cholesky(cov))


def _matrix(linear: Callable[[Tensor], Tensor], d: int, shape: tuple[int, int, int]) -> Tensor:
    """The (d_out, d) matrix of a linear map on (B, C, H, W) batches, from a batch of basis images."""
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return linear(basis).reshape(d, -1).T


def oracle_denoiser(process: DiffusionProcess, data: GaussianImages) -> Callable[[Tensor, Tensor], Tensor]:
    """denoiser(z_t, t) = E[z0 | z_t] for ``data`` under ``process`` (one t per batch), float64. The process
    is read through its linear maps alone, z_t = M x0 + N n (so any linear-Gaussian process, whatever its
    noise covariance N N^T), and the x0 target z0 = T x0."""
    d = data.mean.numel()
    cache: dict[float, tuple[Tensor, Tensor]] = {}

    def operators(t: float) -> tuple[Tensor, Tensor]:
        if t not in cache:
            state = process.shape_at(t)
            d_k = math.prod(state)
            tt = torch.full((d,), t, dtype=torch.float64)
            zeros = torch.zeros((d, *state), dtype=torch.float64)
            M = _matrix(lambda x: process.forward_sample(x, tt, zeros), d, data.shape)  # (d_k, d)
            T = _matrix(lambda x: process.training_target(x, zeros, tt, Parameterization.X0), d, data.shape)
            no_x0 = torch.zeros((d_k, *data.shape), dtype=torch.float64)
            tk = torch.full((d_k,), t, dtype=torch.float64)
            N = _matrix(lambda n: process.forward_sample(no_x0, tk, n), d_k, state)  # (d_k, d_k)
            S = M @ data.cov @ M.T + N @ N.T
            gain = torch.linalg.solve(S, M @ data.cov @ T.T).T  # T C M^T S^-1, (d_target, d_k)
            cache[t] = (gain, T @ data.mean - gain @ (M @ data.mean))
        return cache[t]

    def denoise(z_t: Tensor, t: Tensor) -> Tensor:
        t0 = float(t.reshape(-1)[0])
        gain, offset = operators(t0)
        flat = z_t.reshape(len(z_t), -1).double()
        return (offset + flat @ gain.T).reshape(len(z_t), *process.target_shape_at(t0)).to(z_t.dtype)

    return denoise


def frechet_gaussian(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """The Frechet distance between the moments of samples x (N, ...) and N(mean, cov)
    (`metrics.frechet`, symmetric eigenvalue form)."""
    mu_x, cov_x = feature_statistics(x.reshape(len(x), -1).double().numpy())
    return frechet_distance_eig(mu_x, cov_x, mean.numpy(), cov.numpy())


def _rows(distances: list[tuple[BenchMethod, int, float]], floor: float) -> list[OracleRow]:
    """Rows of (method, N, Frechet distance), with the excess over the floor and its ratio to DDIM's."""
    reference = {n: frechet - floor for method, n, frechet in distances if method.key == REFERENCE_KEY}
    rows = []
    for method, n, frechet in distances:
        ref = reference.get(n)
        rows.append(OracleRow(key=method.key, name=method.name, steps=n, frechet=frechet, excess=frechet - floor,
                              excess_ratio_to_ddim=(frechet - floor) / ref if ref is not None and ref > 0 else None))
    return rows  # fmt: skip


def oracle_bench(methods: Sequence[BenchMethod], options: OracleOptions = OracleOptions()) -> dict[str, Any]:
    """Frechet distance to the data for every method and N (rows), the floor (real draws), the
    excess over it, and that excess relative to DDIM's at the same N."""
    if not methods:
        raise ValueError("expected at least one method, got none")
    base = methods[0].config
    shape = data_shape(base, data_channels(base))
    data = stationary_images(shape, options.variance, options.corner)
    generator = torch.Generator().manual_seed(options.seed)
    real = data.sample(options.samples, generator)
    floor = frechet_gaussian(data.sample(options.samples, generator), data.mean, data.cov)
    distances = []
    for method in methods:
        config = fit_process(method.config, real)  # what the process estimates from data (subspace: s_perp)
        process = build_process(config.process, shape)
        denoiser = oracle_denoiser(process, data)
        for n in options.steps:
            sample = dataclasses.replace(config.sample, steps=n)
            run = torch.Generator().manual_seed(options.seed + 1)
            x = run_sampler(sample, denoiser, process, options.samples, generator=run).double()
            distances.append((method, n, frechet_gaussian(x, data.mean, data.cov)))
    return {
        "benchmark": "oracle",
        "settings": dataclasses.asdict(options),
        "data": {"shape": list(shape), "variance": options.variance, "corner": options.corner,
                 "trace": float(data.cov.trace())},  # fmt: skip
        "floor": floor,
        "methods": {m.key: config_to_dict(m.config) for m in methods},
        "rows": [dataclasses.asdict(row) for row in _rows(distances, floor)],
        "environment": environment_record(seeds={"data_and_noise": options.seed}),
    }
