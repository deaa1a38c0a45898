"""The Langevin corrector on the complement refilled at an upward crossing (samplers/corrector.py)."""

import pytest
import torch
from conftest import GaussianData, empirical_moments
from test_dimension_varying import dvdp_oracle

from dimdiff.ops.pool import pool
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.dvdp_options import estimate_complement_std
from dimdiff.process.stages import Stages, Window
from dimdiff.samplers import ddim_sample, ddpm_sample
from dimdiff.samplers.corrector import ComplementLangevin, CorrectedProcess

DATA = GaussianData((1, 4, 4), seed=3)


def g(seed):
    return torch.Generator().manual_seed(seed)


def moments_error(x):
    mean, cov = empirical_moments(x)
    rel_cov = (torch.linalg.matrix_norm(cov - DATA.cov) / torch.linalg.matrix_norm(DATA.cov)).item()
    return (mean - DATA.mean).abs().max().item(), rel_cov


def test_langevin_moves_the_approximate_subspace_crossing_towards_the_data():
    """Subspace diffusion switching at t = 0.3, where the dropped detail still carries much signal
    (here with a non-zero mean that N(0, s_perp^2) ignores): the approximate crossing leaves the
    samples' mean off; Langevin steps on the complement with the exact score correct it."""
    std = estimate_complement_std(DATA.sample(20_000, g(0)), 1)
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.3,), (), Window.NONE), complement_std=std)
    ts, oracle = p.stages.timesteps(100), dvdp_oracle(p, DATA)
    errors = {}
    for steps in (0, 50):
        process = CorrectedProcess(p, ComplementLangevin(p, steps, snr=0.2), oracle) if steps else p
        x = ddpm_sample(oracle, process, p.prior_sample(4000, generator=g(1)).double(), ts, generator=g(2))
        errors[steps] = moments_error(x)
    assert errors[0][0] > 0.12  # the approximate crossing's bias (12 standard errors)
    assert errors[50][0] < errors[0][0] / 3


def test_the_corrector_keeps_dvdp_exact():
    """DVDP's crossing is exact (pure-noise complement): the corrector leaves the distribution as is."""
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.3, 0.6), (0.2, 0.2)))
    oracle = dvdp_oracle(p, DATA)
    corrected = CorrectedProcess(p, ComplementLangevin(p, 10, snr=0.2), oracle)
    x = ddim_sample(oracle, corrected, p.prior_sample(4000, generator=g(0)).double(), p.stages.timesteps(200),
                    generator=g(1))  # fmt: skip
    mean_error, cov_error = moments_error(x)
    assert mean_error < 4.5 * (DATA.cov.diagonal().max() / 4000).sqrt() and cov_error < 0.1


def test_the_corrector_runs_after_crossings_only_and_never_moves_the_coarse_part():
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.5,), (), Window.NONE), complement_std=(0.3,))
    calls = []

    def denoiser(x, t):
        calls.append((tuple(x.shape), float(t[0])))
        return torch.zeros_like(x)

    x = torch.randn(3, 1, 4, 4, generator=g(0), dtype=torch.float64)
    corrected = ComplementLangevin(p, 4, snr=0.1)(denoiser, x, 0.5, g(1))
    torch.testing.assert_close(pool(corrected), pool(x), atol=1e-12, rtol=0)
    assert not torch.allclose(corrected, x) and len(calls) == 4
    assert ComplementLangevin(p, 4)(denoiser, x, 0.0) is x  # sigma_0 = 0: nothing to follow
    calls.clear()
    ddim_sample(denoiser, CorrectedProcess(p, ComplementLangevin(p, 2), denoiser),
                p.prior_sample(3, generator=g(2)).double(), p.stages.timesteps(6))  # fmt: skip
    # 6 steps (3 per stage), then 2 corrector calls at t = 0.5 just after the crossing
    assert [c[1] for c in calls] == pytest.approx([1.0, 5 / 6, 2 / 3, 0.5, 0.5, 0.5, 1 / 3, 1 / 6])
    assert [c[0] for c in calls][3:6] == [(3, 1, 4, 4)] * 3
