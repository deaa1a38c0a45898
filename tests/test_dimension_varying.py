"""DVDP's process against its closed forms (DVDP.md section 9), no training needed."""

import pytest
import torch
from conftest import GaussianData, empirical_moments

from dimdiff.ops.pool import components, pool, project
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.stages import Stages, Window
from dimdiff.samplers import ddim_sample, ddpm_sample

TWO = Stages(turning_points=(0.3, 0.6), window_widths=(0.2, 0.2), window=Window.COSINE)


def process(shape=(1, 8, 8), stages=TWO):
    return DimensionVaryingProcess(shape, stages)


def g(seed):
    return torch.Generator().manual_seed(seed)


def full_marginal_mean(p, x0, t):
    """sum_j a_j(t) c_j(x0) at full resolution (K + 1 components)."""
    gains = p.gains(t, 0, x0)
    return sum(a * c for a, c in zip(gains, components(x0, p.stages.num_levels), strict=True))


def test_degenerate_process_equals_the_gaussian_baseline_bit_for_bit():
    dvdp, ddpm = process(stages=Stages((), ())), GaussianProcess((1, 8, 8))
    x0, eps, z = (torch.randn(4, 1, 8, 8, generator=g(i)) for i in range(3))
    t = torch.rand(4, generator=g(3), dtype=torch.float64) * 0.9 + 0.05
    assert torch.equal(dvdp.forward_sample(x0, t, eps), ddpm.forward_sample(x0, t, eps))
    x_t = ddpm.forward_sample(x0, t, eps)
    for kind in Parameterization:
        target = ddpm.training_target(x0, eps, t, kind)
        assert torch.equal(dvdp.training_target(x0, eps, t, kind), target)
        assert torch.equal(dvdp.x0_from_prediction(x_t, target, t, kind), ddpm.x0_from_prediction(x_t, target, t, kind))
    for eta in (0.0, 0.5, 1.0):
        a = dvdp.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, noise=z)
        b = ddpm.reverse_step(x_t, x0, 0.7, 0.4, eta=eta, noise=z)
        assert torch.equal(a, b)


@pytest.mark.parametrize("t", [0.2, 0.45, 0.8])
def test_forward_marginal_by_monte_carlo(t):
    p = process()
    x0 = torch.randn(1, 1, 8, 8, generator=g(0), dtype=torch.float64).expand(100_000, -1, -1, -1)
    k = p.stages.stage(t)
    tt = torch.full((len(x0),), t, dtype=torch.float64)
    z_t = p.forward_sample(x0, tt, torch.randn((len(x0), *p.shape_at(t)), generator=g(1), dtype=torch.float64))
    assert z_t.shape[1:] == (1, 8 >> k, 8 >> k)
    expected = pool(full_marginal_mean(p, x0[:1], t), k)
    torch.testing.assert_close(z_t.mean(0, keepdim=True), expected, atol=0.02, rtol=0)  # 6 standard errors
    sigma = p.schedule.sigma(t).item()
    torch.testing.assert_close(z_t.var(0), torch.full(z_t.shape[1:], sigma**2, dtype=torch.float64), atol=0.02, rtol=0)


def test_complement_is_pure_noise_after_a_turning_point():
    """For t >= tau_1 the full-resolution state's detail (I - P) x_t carries no x0."""
    p = process()
    x0 = torch.randn(1, 1, 8, 8, generator=g(0), dtype=torch.float64)
    mean = full_marginal_mean(p, x0, 0.45)
    assert (mean - project(mean, 1)).abs().max() < 1e-12  # only coarse signal is left
    assert (full_marginal_mean(p, x0, 0.25) - project(full_marginal_mean(p, x0, 0.25), 1)).abs().max() > 1e-3


def test_up_then_down_is_the_identity():
    z = torch.randn(3, 2, 4, 4, generator=g(0), dtype=torch.float64)
    x = process().cross_up(z, 0.7, generator=g(1))
    assert x.shape == (3, 2, 8, 8)
    torch.testing.assert_close(pool(x), z, atol=1e-12, rtol=0)


@pytest.mark.parametrize("t", [0.99, 0.55, 0.25])
def test_ddim_with_oracle_x0_and_eps_reproduces_the_forward_sample(t):
    p = process()
    s = t - 0.04
    x0 = torch.randn(4, 1, 8, 8, generator=g(0), dtype=torch.float64)
    eps = torch.randn((4, *p.shape_at(t)), generator=g(1), dtype=torch.float64)
    z_t = p.forward_sample(x0, torch.full((4,), t, dtype=torch.float64), eps)
    z_s = p.reverse_step(z_t, pool(x0, p.stages.stage(t)), t, s, eta=0.0)
    torch.testing.assert_close(z_s, p.forward_sample(x0, torch.full((4,), s, dtype=torch.float64), eps))


@pytest.mark.parametrize(("t", "s"), [(0.5, 0.4), (0.5, 0.3), (0.8, 0.6)], ids=["in-stage", "cross-1", "cross-2"])
def test_posterior_composed_with_the_marginal_gives_the_marginal(t, s):
    """x_t ~ q(x_t | x0), then one ancestral step with the true x0 (landing on a turning point
    crosses up with fresh noise): x_s ~ q(x_s | x0), also across the turning point."""
    p, n = process(), 100_000
    x0 = torch.randn(1, 1, 8, 8, generator=g(0), dtype=torch.float64).expand(n, -1, -1, -1)
    k = p.stages.stage(t)
    z_t = p.forward_sample(x0, torch.full((n,), t, dtype=torch.float64),
                           torch.randn((n, *p.shape_at(t)), generator=g(1), dtype=torch.float64))  # fmt: skip
    z_s = p.reverse_step(z_t, pool(x0, k), t, s, eta=1.0, generator=g(2))
    assert z_s.shape[1:] == p.shape_at(s)
    expected = pool(full_marginal_mean(p, x0[:1], s), p.stages.stage(s))
    torch.testing.assert_close(z_s.mean(0, keepdim=True), expected, atol=0.02, rtol=0)  # 6 standard errors
    var = p.schedule.sigma(s).item() ** 2
    torch.testing.assert_close(z_s.var(0), torch.full(z_s.shape[1:], var, dtype=torch.float64), atol=0.02, rtol=0)


@pytest.mark.parametrize("kind", list(Parameterization))
@pytest.mark.parametrize("t", [0.05, 0.29, 0.3, 0.45, 0.6, 1.0])
def test_targets_invert_without_dividing_by_a_vanishing_gain(kind, t):
    """At t = tau_1 component 0 has a_0 = 0: eps-prediction switches that component to x0."""
    p = process()
    x0 = torch.randn(3, 1, 8, 8, generator=g(0), dtype=torch.float64)
    tt = torch.full((3,), t, dtype=torch.float64)
    eps = torch.randn((3, *p.shape_at(t)), generator=g(1), dtype=torch.float64)
    z_t = p.forward_sample(x0, tt, eps)
    target = p.training_target(x0, eps, tt, kind)
    recovered = p.x0_from_prediction(z_t, target, tt, kind)
    assert torch.isfinite(recovered).all()
    torch.testing.assert_close(recovered, pool(x0, p.stages.stage(t)), atol=1e-9, rtol=0)


def test_training_batches_hold_one_resolution_and_cover_t_uniformly():
    p, gen = process(), g(0)
    stages = []
    for _ in range(3000):
        t = p.sample_training_t(8, generator=gen)
        k = p.stage_of(t)  # raises if a batch mixed stages
        assert t.min() >= 1e-3 and t.max() <= 1.0
        stages.append(k)
    share = torch.bincount(torch.tensor(stages), minlength=3).double() / len(stages)
    torch.testing.assert_close(share, torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="expected a batch of times in one stage"):
        p.stage_of(torch.tensor([0.2, 0.5]))


def test_parseval_loss_in_reduced_coordinates_equals_the_projected_full_loss():
    a, b = (torch.randn(2, 3, 8, 8, generator=g(i), dtype=torch.float64) for i in range(2))
    for k in (1, 2):
        low = (pool(a, k) - pool(b, k)).pow(2).sum()
        torch.testing.assert_close(low, project(a - b, k).pow(2).sum())


def test_snr_of_kept_components_is_continuous_across_turning_points():
    p = process()
    like = torch.zeros(1, 1, 1, 1)
    for k, tau in enumerate(p.stages.turning_points, start=1):
        below, above = p.gains(tau - 1e-9, k - 1, like)[1:], p.gains(tau + 1e-9, k, like)
        for a, b in zip(below, above, strict=True):
            assert abs(float(a) - float(b)) < 1e-6


def test_shapes_and_bounds():
    p = process((3, 32, 32))
    assert [p.shape_at(t) for t in (0.1, 0.5, 0.9)] == [(3, 32, 32), (3, 16, 16), (3, 8, 8)]
    assert p.prior_sample(2).shape == (2, 3, 8, 8) and p.x0_bound(0.9) == 4.0
    with pytest.raises(ValueError, match="divisible by 4, got 30x32"):
        DimensionVaryingProcess((1, 30, 32), TWO)


# --------------------------------------------------------------------- oracle samplers
def dense(fn, n_in, shape_in):
    """The matrix of a linear map given as a function on (1, *shape_in) tensors."""
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape_in)
    return torch.stack([fn(b[None]).reshape(-1) for b in basis], dim=1)


def dvdp_oracle(p: DimensionVaryingProcess, data: GaussianData):
    """E[z0 | z_t] for x0 ~ N(mu, Sigma): z0 = D_k x0 and z_t = A_t z0 + sigma_t eps, A_t = sum_j a_j Pi_j."""
    d = data.mean.numel()

    def denoise(z_t, t):
        tt = float(t.reshape(-1)[0])
        k = p.stages.stage(tt)
        D = dense(lambda x: pool(x, k), d, data.shape)  # (d_k, d)
        low_shape = p.shape_at(tt)
        m, C = D @ data.mean, D @ data.cov @ D.T
        like = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
        gains = [float(a) for a in p.gains(tt, k, like)]
        A = dense(lambda z: sum(a * c for a, c in zip(gains, p._split(z, k), strict=True)), D.shape[0], low_shape)
        sigma = float(p.schedule.sigma(tt))
        gain = C @ A.T @ torch.linalg.inv(A @ C @ A.T + sigma**2 * torch.eye(D.shape[0], dtype=torch.float64))
        flat = z_t.reshape(len(z_t), -1).double()
        return (m + (flat - A @ m) @ gain.T).reshape(z_t.shape)

    return denoise


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_sampling_across_two_turning_points_reproduces_the_data(sampler):
    data = GaussianData((1, 4, 4), seed=3)
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.3, 0.6), (0.2, 0.2)))
    x_T = p.prior_sample(8000, generator=g(0)).double()
    ts = p.stages.timesteps(400)
    run = ddpm_sample if sampler == "ddpm" else ddim_sample
    x = run(dvdp_oracle(p, data), p, x_T, ts, generator=g(1))
    assert x.shape == (8000, 1, 4, 4)
    mean, cov = empirical_moments(x)
    assert (mean - data.mean).abs().max() < 4.5 * (data.cov.diagonal().max() / 8000).sqrt()
    assert (torch.linalg.matrix_norm(cov - data.cov) / torch.linalg.matrix_norm(data.cov)).item() < 0.08


def test_a_grid_that_straddles_turning_points_still_ends_at_full_resolution():
    """Generic grids (here 7 trailing steps) cross a turning point mid-step: the process steps to
    tau, crosses up, and finishes the step at the finer resolution with U x0_hat."""
    from dimdiff.samplers import timesteps

    data = GaussianData((1, 4, 4), seed=3)
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.3, 0.6), (0.2, 0.2)))
    ts = timesteps(7, 1000)
    assert not any(abs(float(t) - tau) < 1e-9 for t in ts for tau in (0.3, 0.6))
    x = ddim_sample(dvdp_oracle(p, data), p, p.prior_sample(500, generator=g(0)).double(), ts)
    assert x.shape == (500, 1, 4, 4) and torch.isfinite(x).all()


def test_every_process_owns_its_sampling_grid():
    """run_sampler asks the process for its grid: DVDP puts each turning point on it."""
    from dimdiff.build import run_sampler
    from dimdiff.config import SampleConfig
    from dimdiff.process.timesteps import Spacing, timesteps

    gaussian = GaussianProcess((1, 4, 4))
    assert torch.equal(gaussian.timesteps(10, Spacing.LEADING), timesteps(10, 1000, Spacing.LEADING))
    p = DimensionVaryingProcess((1, 4, 4), Stages((0.3, 0.6), (0.2, 0.2)))
    assert torch.equal(p.timesteps(10), p.stages.timesteps(10))
    seen = []
    run_sampler(SampleConfig(steps=10), lambda x, t: torch.zeros_like(x), p, 2, callback=lambda i: seen.append(i["t"]))
    assert seen == p.timesteps(10)[:-1].tolist() and 0.3 in seen and 0.6 in seen
