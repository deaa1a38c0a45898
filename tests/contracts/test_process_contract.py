"""The contract every diffusion process in dimdiff must pass, checked through the
`DiffusionProcess` protocol alone (no isinstance on process classes).

Every test is parametrised over ``PROCESS_CASES``: a new process gets the whole suite by adding
one line to that list. A case may also name the baseline its degenerate configuration must equal
bit for bit, and the Gaussian data it models exactly (default: conftest's GaussianData; subspace
diffusion's approximate crossing is exact only for data whose dropped detail is white with the
process's complement std). Optional capabilities (``forward_transition``, a ``schedule``) are
looked up with hasattr and their tests skipped, with the reason, where a process lacks them.

Every process here is linear-Gaussian, so the closed forms are dense matrices read off the
process's own linear maps at tiny sizes by pushing a basis through them (float64):

    forward_sample(x0, t, n)         = A_t x0 + B_t n
    forward_transition(x_s, s, t, n) = R x_s + Q n
    training_target(x0, 0, t, X0)    = T_t x0          (x0 in the state's coordinates at t)
    reverse_step(x_t, y, t, s, n)    = F x_t + G y + H n

Resolution changes tau are read off the process's sampling grid (where shape_at changes); the
grid must hold each one exactly (``test_the_sampling_grid_holds_every_resolution_change``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from conftest import GaussianData

from contracts.linear_maps import (
    F64,
    Shape,
    assert_moments,
    conditional_step,
    dense,
    forward_maps,
    full,
    probe_times,
    random_noise,
    resolution_changes,
    reverse_step_maps,
    reverse_steps,
    supported,
    transition_maps,
    zeros,
)
from contracts.throwaway_kind import registered
from dimdiff.bench.oracle import GaussianImages, oracle_denoiser
from dimdiff.build import build_process
from dimdiff.config import config_from_dict
from dimdiff.ops.pool import component
from dimdiff.ops.resize import Resize
from dimdiff.process.base import DiffusionProcess
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.scale_space import ResolutionSchedule, ScaleSpaceProcess
from dimdiff.process.schedules import CosineSchedule, LinearBetaSchedule
from dimdiff.process.stages import Stages, Window
from dimdiff.process.timesteps import Spacing
from dimdiff.samplers import ddim_sample, ddpm_sample


def white_detail_data(shape: Shape, stds: tuple[float, ...], seed: int = 3) -> GaussianImages:
    """GaussianData whose components c_0..c_{K-1} are replaced by white noise of rms stds[j]
    (mean 0, independent of the rest): what subspace diffusion's crossing models exactly."""
    base = GaussianData(shape, seed=seed)
    levels = len(stds)
    coarse = dense(lambda x: component(x, levels, levels), shape)  # P_K, (d, d)
    cov = coarse @ base.cov @ coarse.T
    for j, std in enumerate(stds):
        cov = cov + std**2 * dense(lambda x, j=j: component(x, j, levels), shape)  # the projector onto c_j
    cov = (cov + cov.T) / 2
    return GaussianImages(shape, coarse @ base.mean, cov, torch.linalg.cholesky(cov))


class Case(NamedTuple):
    id: str
    make: Callable[[], DiffusionProcess]
    baseline: Callable[[], DiffusionProcess] | None = None  # what a degenerate configuration equals bit for bit
    data: Callable[[Shape], GaussianImages] | None = None  # data modelled exactly (default: GaussianData)


TWO = Stages((0.3, 0.6), (0.2, 0.2), Window.COSINE)


def throwaway_kind() -> DiffusionProcess:
    """A process kind registered only for the block, built from a config file's [process] section through
    the PROCESSES table like any other (contracts/throwaway_kind.py): a new kind joins the suite by one line."""
    with registered():
        config = config_from_dict({"process": {"kind": "sigmoid-gaussian", "slope": 12.0}})
        return build_process(config.process, (1, 4, 4))


PROCESS_CASES: list[Case] = [
    Case("throwaway-sigmoid-kind", throwaway_kind),
    Case("gaussian-linear", lambda: GaussianProcess((1, 4, 4), LinearBetaSchedule())),
    Case("gaussian-cosine", lambda: GaussianProcess((1, 4, 4), CosineSchedule())),
    Case("dvdp-two-cosine", lambda: DimensionVaryingProcess((1, 8, 8), TWO)),
    Case("dvdp-snr", lambda: DimensionVaryingProcess((1, 4, 4), Stages((0.4,), (0.2,), Window.SNR), CosineSchedule())),
    Case("subspace", lambda: DimensionVaryingProcess((1, 4, 4), Stages((0.5,), (), Window.NONE), complement_std=(0.4,)),
         data=lambda shape: white_detail_data(shape, (0.4,))),  # fmt: skip
    Case("dvdp-degenerate", lambda: DimensionVaryingProcess((1, 8, 8), Stages((), ())),
         baseline=lambda: GaussianProcess((1, 8, 8))),  # fmt: skip
    Case("ssd-area-three", lambda: ScaleSpaceProcess((1, 8, 8), levels=3)),
    Case("ssd-bilinear-three", lambda: ScaleSpaceProcess((1, 8, 8), levels=3, resize=Resize.BILINEAR)),
    Case("ssd-area-equal", lambda: ScaleSpaceProcess((2, 4, 4), levels=2,
                                                     resolution_schedule=ResolutionSchedule.EQUAL)),  # fmt: skip
    Case("ssd-degenerate", lambda: ScaleSpaceProcess((1, 8, 8), levels=1),
         baseline=lambda: GaussianProcess((1, 8, 8))),  # fmt: skip
]
CASES = pytest.mark.parametrize("case", PROCESS_CASES, ids=[c.id for c in PROCESS_CASES])


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def case_data(case: Case, shape: Shape) -> GaussianImages:
    if case.data is not None:
        return case.data(shape)
    base = GaussianData(shape, seed=3)
    return GaussianImages(shape, base.mean, base.cov, torch.linalg.cholesky(base.cov))


# ============================================================================= the contract
@CASES
def test_the_sampling_grid_holds_every_resolution_change(case):
    """A process whose resolution changes puts each change time tau on its grid exactly: the state
    is at the finer resolution at tau and at the coarser one just above it."""
    process = case.make()
    for tau in resolution_changes(process):
        fine, coarse = process.shape_at(tau), process.shape_at(math.nextafter(tau, 2.0))
        assert fine != coarse and math.prod(fine) > math.prod(coarse), tau
    assert process.shape_at(0.0) == process.data_shape
    assert process.prior_sample(2, generator=g(0)).shape == (2, *process.shape_at(1.0))


@CASES
def test_forward_sample_has_the_moments_of_its_linear_map(case):
    """(a) Monte Carlo of forward_sample(x0 ~ N(mu, Sigma), t, noise_like) against A_t mu and
    A_t Sigma A_t^T + B_t B_t^T, in every stage, inside the windows and at every change."""
    process, n = case.make(), 20_000
    data = case_data(case, process.data_shape)
    x0 = data.sample(n, g(0))
    for i, t in enumerate(probe_times(process, resolution_changes(process))):
        tt = full(t, n)
        x_t = process.forward_sample(x0, tt, process.noise_like(x0, tt, generator=g(1 + i)))
        assert x_t.shape == (n, *process.shape_at(t))
        A, B = forward_maps(process, t)
        assert_moments(x_t, A @ data.mean, A @ data.cov @ A.T + B @ B.T)


@CASES
def test_chained_transitions_equal_the_one_step_marginal(case):
    """(b) forward_sample(x0, s) then forward_transition(., s, t) has the law of forward_sample(x0, t):
    R A_s = A_t and R B_s B_s^T R^T + Q Q^T = B_t B_t^T, for every pair of probe times (across changes)."""
    process = case.make()
    if not hasattr(process, "forward_transition"):
        pytest.skip("the process has no forward_transition")
    times = probe_times(process, resolution_changes(process))
    maps = {t: forward_maps(process, t) for t in times}
    for i, s in enumerate(times):
        A_s, B_s = maps[s]
        for t in times[i + 1:]:
            A_t, B_t = maps[t]
            R, Q = transition_maps(process, s, t)
            assert R.shape == (math.prod(process.shape_at(t)), math.prod(process.shape_at(s)))
            torch.testing.assert_close(R @ A_s, A_t, atol=1e-10, rtol=0, msg=f"mean map, s={s}, t={t}")
            torch.testing.assert_close(R @ B_s @ B_s.T @ R.T + Q @ Q.T, B_t @ B_t.T, atol=1e-10, rtol=0,
                                       msg=f"covariance, s={s}, t={t}")  # fmt: skip
    with pytest.raises(ValueError, match="expects s < t"):
        process.forward_transition(zeros(1, process.shape_at(0.5)), 0.5, 0.4, zeros(1, process.shape_at(0.5)))






@CASES
def test_reverse_step_with_eta_one_is_the_exact_posterior(case):
    """(c) reverse_step(x_t, x0_hat, t, s, eta=1) with explicit noise = F x_t + G x0_hat + H n equals
    brute-force Gaussian conditioning of x_s on (x_t, x0) in dense float64 matrices, for every step
    that stays in one stage and every step ending exactly on a change (crossing up: the law of x_tau
    at the finer resolution)."""
    process = case.make()
    if not hasattr(process, "forward_transition"):
        pytest.skip("the brute-force joint of (x_s, x_t) needs forward_transition")
    data = case_data(case, process.data_shape)
    changes = resolution_changes(process)
    times = [0.0, *probe_times(process, changes)]
    steps = [(t, s) for i, t in enumerate(times) for s in times[:i]
             if not any(s < tau < t for tau in changes) and supported(process, t, s)]  # fmt: skip
    assert any(s in changes for _, s in steps) == bool(changes)
    for t, s in steps:
        F, G, H = reverse_step_maps(process, changes, t, s)
        K_t, K_y, offset, cov = conditional_step(process, data, t, s)
        where = f"t={t}, s={s}"
        assert F.shape[0] == math.prod(process.shape_at(s)), where
        torch.testing.assert_close(F, K_t, atol=1e-9, rtol=0, msg=f"x_t map, {where}")
        torch.testing.assert_close(G, K_y, atol=1e-9, rtol=0, msg=f"x0 map, {where}")
        torch.testing.assert_close(offset, torch.zeros_like(offset), atol=1e-9, rtol=0, msg=f"offset, {where}")
        torch.testing.assert_close(H @ H.T, cov, atol=1e-9, rtol=0, msg=f"covariance, {where}")


# covariance error allowed for 200 sampling steps, relative to sqrt(C_ii C_jj): DDPM with the exact x0
# posterior shrinks the variance by about 1 / N (measured at 20 000 samples: 5 % for the Gaussian
# process, 6 % for DVDP at 200 steps, 0.5 % at 1000); DDIM's error is smaller
DISCRETISATION = 0.08


@CASES
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_samplers_reproduce_gaussian_data(case, sampler):
    """(d) DDPM and DDIM on the process's own grid, driven by the exact E[z0 | z_t] of Gaussian data
    (bench.oracle, read off forward_sample and training_target), reproduce the data's moments across
    every resolution change."""
    process = case.make()
    if not hasattr(process, "schedule"):
        pytest.skip("the oracle denoiser reads sigma_t off the process's schedule")
    n, steps = 4000, 200
    data = case_data(case, process.data_shape)
    x_T = process.prior_sample(n, generator=g(0)).double()
    ts = process.timesteps(steps, Spacing.TRAILING)
    run = ddpm_sample if sampler == "ddpm" else ddim_sample
    x = run(oracle_denoiser(process, data), process, x_T, ts, generator=g(1))
    assert x.shape == (n, *process.data_shape)
    assert_moments(x, data.mean, data.cov, z=4.5, bias=DISCRETISATION)


@CASES
def test_a_degenerate_configuration_equals_its_baseline_bit_for_bit(case):
    """(e) e.g. DVDP without turning points is the Gaussian process of the same schedule: every
    formula gives torch.equal results for the same inputs and the same explicit noise."""
    if case.baseline is None:
        pytest.skip("no degenerate configuration")
    process, base = case.make(), case.baseline()
    shape = process.data_shape
    assert base.data_shape == shape
    x0, eps, z = (torch.randn(4, *shape, generator=g(i)) for i in range(3))
    t = torch.rand(4, generator=g(3), dtype=F64) * 0.9 + 0.05
    for time in (0.0, 0.5, 1.0):
        assert process.shape_at(time) == base.shape_at(time)
        assert torch.equal(process.log_snr(time), base.log_snr(time))
    assert torch.equal(process.prior_sample(3, generator=g(4)), base.prior_sample(3, generator=g(4)))
    assert torch.equal(process.noise_like(x0, t, generator=g(5)), base.noise_like(x0, t, generator=g(5)))
    x_t = base.forward_sample(x0, t, eps)
    assert torch.equal(process.forward_sample(x0, t, eps), x_t)
    for kind in Parameterization:
        target = base.training_target(x0, eps, t, kind)
        assert torch.equal(process.training_target(x0, eps, t, kind), target)
        x0_hat = base.x0_from_prediction(x_t, target, t, kind)
        assert torch.equal(process.x0_from_prediction(x_t, target, t, kind), x0_hat)
    for eta in (0.0, 0.5, 1.0):
        a = process.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, noise=z)
        b = base.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, noise=z)
        assert torch.equal(a, b)
        a = process.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, generator=g(6))
        b = base.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, generator=g(6))
        assert torch.equal(a, b)
    if hasattr(process, "forward_transition") and hasattr(base, "forward_transition"):
        assert torch.equal(process.forward_transition(x_t, 0.4, 0.7, z), base.forward_transition(x_t, 0.4, 0.7, z))


STEP_KINDS = pytest.mark.parametrize("kind", ["in-stage", "onto-change", "straddling"])


@CASES
@STEP_KINDS
def test_explicit_noise_makes_the_step_independent_of_the_generator(case, kind):
    """(f) With explicit noise (one tensor of shape_at(s), or a pair per straddled change) reverse_step
    draws nothing: the same result for any generator, at any eta."""
    process = case.make()
    changes = resolution_changes(process)
    steps = reverse_steps(process, changes)[kind]
    if not steps:
        pytest.skip("no such step: the process never changes resolution, or never straddles a change")
    for t, s in steps:
        x_t = torch.randn((4, *process.shape_at(t)), generator=g(0), dtype=F64)
        x0_hat = torch.randn((4, *process.target_shape_at(t)), generator=g(1), dtype=F64)
        noise = random_noise(process, changes, t, s, 4, g(2))
        for eta in (1.0, 0.5):
            a = process.reverse_step(x_t, x0_hat, t, s, eta=eta, noise=noise, generator=g(3))
            b = process.reverse_step(x_t, x0_hat, t, s, eta=eta, noise=noise, generator=g(4))
            assert a.shape == (4, *process.shape_at(s)), (t, s)
            assert torch.equal(a, b), f"t={t}, s={s}, eta={eta}"
        if kind == "straddling":  # a plain tensor where a pair is due
            with pytest.raises(ValueError, match="expected"):
                process.reverse_step(x_t, x0_hat, t, s, noise=torch.randn((4, *process.shape_at(s)), generator=g(5)))
        else:  # a pair where one tensor is due
            with pytest.raises(ValueError, match="expected"):
                process.reverse_step(x_t, x0_hat, t, s, noise=(noise, noise))


@CASES
@STEP_KINDS
def test_explicit_noise_has_the_law_of_the_drawn_noise(case, kind):
    """(f) The step with explicit noise is linear in it, mean (noise = 0) and covariance H H^T;
    drawing the noise instead (noise None) gives the same law by Monte Carlo."""
    process, n = case.make(), 20_000
    changes = resolution_changes(process)
    steps = reverse_steps(process, changes)[kind]
    if not steps:
        pytest.skip("no such step: the process never changes resolution, or never straddles a change")
    for i, (t, s) in enumerate(steps):
        shape_t, shape_y = process.shape_at(t), process.target_shape_at(t)
        x_t = torch.randn((1, *shape_t), generator=g(10 + i), dtype=F64)
        x0_hat = torch.randn((1, *shape_y), generator=g(20 + i), dtype=F64)
        F, G, H = reverse_step_maps(process, changes, t, s)
        mean = F @ x_t.reshape(-1) + G @ x0_hat.reshape(-1)  # the step with noise = 0
        drawn = process.reverse_step(x_t.expand(n, *shape_t), x0_hat.expand(n, *shape_y), t, s, eta=1.0,
                                     generator=g(30 + i))  # fmt: skip
        assert drawn.shape == (n, *process.shape_at(s))
        assert_moments(drawn, mean, H @ H.T)
