"""Subspace diffusion (no attenuation, docs/dvdp.md section 8): the estimate of s_perp from data, and the
approximate crossing that it makes exact for data whose dropped detail is white with that std."""

import pytest
import torch
from conftest import empirical_moments

from dimdiff.ops.pool import components, pool, project
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.dvdp_options import estimate_complement_std
from dimdiff.process.stages import Stages, Window

TWO = Stages(turning_points=(0.3, 0.6), window_widths=(0.2, 0.2), window=Window.COSINE)


def g(seed):
    return torch.Generator().manual_seed(seed)


def test_complement_std_is_estimated_per_dropped_component():
    """Images sum_j s_j c_j(n) of white noise n have rms s_j per dimension in component j."""
    noise = torch.randn(4000, 1, 8, 8, generator=g(0), dtype=torch.float64)
    images = sum(s * c for s, c in zip((0.1, 0.3, 1.0), components(noise, 2), strict=True))
    est = estimate_complement_std(images, 2)
    assert est == pytest.approx((0.1, 0.3), rel=0.02)
    assert estimate_complement_std(list(images[:10].float()), 1)[0] == pytest.approx(0.1, rel=0.2)
    with pytest.raises(ValueError, match="expected images of shape"):
        estimate_complement_std(torch.zeros(0, 1, 8, 8), 1)


def test_subspace_crossing_is_exact_when_the_complement_is_white_with_the_estimated_std():
    """No attenuation: at tau the complement holds alpha c_0(x0) + sigma noise. Where c_0(x0) really is
    N(0, s_perp^2) per dimension, the approximate crossing with s_perp has exactly q's marginal."""
    s_perp, n, tau = 0.4, 100_000, 0.3
    p = DimensionVaryingProcess((1, 4, 4), Stages((tau,), (), Window.NONE), complement_std=(s_perp,))
    coarse = project(torch.randn(1, 1, 4, 4, generator=g(0), dtype=torch.float64), 1)
    detail = torch.randn(n, 1, 4, 4, generator=g(1), dtype=torch.float64)
    x0 = coarse + s_perp * (detail - project(detail, 1))
    x_tau = p.forward_sample(x0, torch.full((n,), tau, dtype=torch.float64),
                             torch.randn(n, 1, 4, 4, generator=g(2), dtype=torch.float64))  # fmt: skip
    crossed = p.cross_up(pool(x_tau, 1), p.crossing_scale(1), generator=g(3))
    alpha, sigma = p.schedule.alpha(tau).item(), p.schedule.sigma(tau).item()
    assert p.crossing_scale(1) == pytest.approx((alpha**2 * s_perp**2 + sigma**2) ** 0.5)
    for sample in (x_tau, crossed):
        mean, cov = empirical_moments(sample)
        torch.testing.assert_close(mean, (alpha * coarse).reshape(-1), atol=0.02, rtol=0)
        torch.testing.assert_close(cov, empirical_moments(x_tau)[1], atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="expected 1 complement standard deviations"):
        DimensionVaryingProcess((1, 4, 4), Stages((tau,), (), Window.NONE), complement_std=(0.1, 0.2))


def test_a_step_straddling_a_subspace_switch_estimates_the_detail_by_its_posterior_mean():
    """Past a switch mid-step, the x0 estimate one level finer gets the detail E[c | x_tau] under the
    crossing's model (c ~ N(0, s_perp^2)): the residual is uncorrelated with the observed detail.
    Under attenuation the detail is pure noise and the estimate is U x0_hat alone."""
    s_perp, n, tau = 0.4, 200_000, 0.3
    p = DimensionVaryingProcess((1, 4, 4), Stages((tau,), (), Window.NONE), complement_std=(s_perp,))
    detail = torch.randn(n, 1, 4, 4, generator=g(0), dtype=torch.float64)
    c = s_perp * (detail - project(detail, 1))
    noise = torch.randn(n, 1, 4, 4, generator=g(1), dtype=torch.float64)
    x = p.schedule.alpha(tau).item() * c + p.schedule.sigma(tau).item() * (noise - project(noise, 1))
    coarse = torch.zeros(n, 1, 2, 2, dtype=torch.float64)
    residual = c - p._x0_after_crossing(x, coarse, 1)
    assert abs((residual * x).mean().item()) < 1e-3 < (c * x).mean().item()
    dvdp = DimensionVaryingProcess((1, 4, 4), TWO)
    zeros = torch.zeros(4, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(dvdp._x0_after_crossing(x[:4], coarse[:4], 1), zeros)
