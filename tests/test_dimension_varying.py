"""DVDP's process against its closed forms (docs/dvdp.md section 9), no training needed. What every
process must satisfy (the degenerate configuration equal to the Gaussian baseline bit for bit among
it) is in tests/contracts/test_process_contract.py."""

import sys

import pytest
import torch
from conftest import GaussianData, empirical_moments

import dimdiff.process.dimension_varying as dimension_varying
from dimdiff.ops.pool import components, components_low, pool, project
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
        parts = lambda z: components_low(z, p.stages.num_levels - k)  # noqa: E731
        A = dense(lambda z: sum(a * c for a, c in zip(gains, parts(z), strict=True)), D.shape[0], low_shape)
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


# --------------------------------------------------------------------- transitions, crossing, score
def test_chained_forward_transitions_equal_the_closed_form_marginal_across_turning_points():
    """x_0.2 ~ q(. | x0), then q(x_0.45 | x_0.2) (crosses tau_1), then q(x_0.8 | x_0.45) (crosses tau_2):
    the result has the closed-form marginal q(x_0.8 | x0): mean sum_j a_j c_j(x0) pooled, covariance sigma^2 I."""
    p, n = process(), 100_000
    x0 = torch.randn(1, 1, 8, 8, generator=g(0), dtype=torch.float64).expand(n, -1, -1, -1)
    z = p.forward_sample(x0, torch.full((n,), 0.2, dtype=torch.float64),
                         torch.randn(n, 1, 8, 8, generator=g(1), dtype=torch.float64))  # fmt: skip
    for i, (s, t) in enumerate([(0.2, 0.45), (0.45, 0.8)]):
        z = p.forward_transition(z, s, t, torch.randn(z.shape, generator=g(2 + i), dtype=torch.float64))
        k = p.stages.stage(t)
        assert z.shape[1:] == p.shape_at(t) == (1, 8 >> k, 8 >> k)
        expected = pool(full_marginal_mean(p, x0[:1], t), k)
        torch.testing.assert_close(z.mean(0, keepdim=True), expected, atol=0.02, rtol=0)
        _, cov = empirical_moments(z)
        sigma2 = p.schedule.sigma(t).item() ** 2
        torch.testing.assert_close(cov, sigma2 * torch.eye(z[0].numel(), dtype=torch.float64), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="expects s < t"):
        p.forward_transition(z, 0.8, 0.7, z)


@pytest.mark.parametrize("k", [1, 2])
def test_exact_upward_crossing_in_distribution(k):
    """z ~ q(z_tau | x0) at the coarse resolution, then x = U z + sigma_tau (n - U D n): x has the
    finer stage's marginal at tau (its new complement is exactly the pure noise q has there)."""
    p, n = process(), 100_000
    tau = p.stages.turning_points[k - 1]
    x0 = torch.randn(1, 1, 8, 8, generator=g(0), dtype=torch.float64).expand(n, -1, -1, -1)
    tt = torch.full((n,), tau, dtype=torch.float64)
    fine = p.forward_sample(x0, tt, torch.randn((n, *p.shape_at(tau)), generator=g(1), dtype=torch.float64))
    assert fine.shape[1:] == (1, 16 >> k, 16 >> k)  # t = tau_k is in the finer stage k - 1
    assert p.crossing_scale(k) == pytest.approx(p.schedule.sigma(tau).item(), rel=1e-12)
    x = p.cross_up(pool(fine, 1), p.crossing_scale(k), generator=g(2))
    mean, cov = empirical_moments(x)
    torch.testing.assert_close(mean, pool(full_marginal_mean(p, x0[:1], tau), k - 1).reshape(-1), atol=0.02, rtol=0)
    d = x[0].numel()
    sigma2 = p.schedule.sigma(tau).item() ** 2
    torch.testing.assert_close(cov, sigma2 * torch.eye(d, dtype=torch.float64), atol=0.02, rtol=0)


@pytest.mark.parametrize("t", [0.45, 0.8])
def test_score_factorisation_on_gaussian_data(t):
    """For t >= tau_k: grad log p_t(x) = U_k s_low(D_k x) - (I - P_k) x / sigma_t^2 (docs/dvdp.md section 4),
    with both scores in closed form for x0 ~ N(mu, Sigma); and the process's Tweedie score with the
    exact E[z0 | z_t] is s_low."""
    data = GaussianData((1, 4, 4), seed=5)
    p = DimensionVaryingProcess((1, 4, 4), TWO)
    k, d = p.stages.stage(t), 16
    like = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    gains = [float(a) for a in p.gains(t, 0, like)]
    A = dense(lambda x: sum(a * c for a, c in zip(gains, components(x, 2), strict=True)), d, (1, 4, 4))
    D = dense(lambda x: pool(x, k), d, (1, 4, 4))  # (d_k, d)
    sigma2 = p.schedule.sigma(t).item() ** 2
    cov = A @ data.cov @ A.T + sigma2 * torch.eye(d, dtype=torch.float64)
    mean = A @ data.mean
    x = data.sample(50, g(1)).reshape(50, d) * 0.7 + torch.randn(50, d, generator=g(2), dtype=torch.float64)

    full_score = -(x - mean) @ torch.linalg.inv(cov)  # rows: scores at the rows of x (cov symmetric)
    z = x @ D.T
    low_score = -(z - D @ mean) @ torch.linalg.inv(D @ cov @ D.T)
    factorised = low_score @ D - (x - x @ D.T @ D) / sigma2  # U = D^T
    torch.testing.assert_close(factorised, full_score, atol=1e-9, rtol=1e-9)

    z_img = z.reshape(50, *p.shape_at(t))
    tweedie = p.score(z_img, dvdp_oracle(p, data)(z_img, torch.full((50,), t, dtype=torch.float64)), t)
    torch.testing.assert_close(tweedie.reshape(50, -1), low_score, atol=1e-9, rtol=1e-9)


def test_average_pooled_units_shift_the_log_snr_by_k_ln4():
    """Keeping stage k in average-pooled units (D_k x / 2^k) instead of orthonormal ones leaves
    the signal as it is but divides the noise by 2^k: SNR' = 4^k SNR(t) (docs/dvdp.md section 4)."""
    import math

    import torch.nn.functional as F

    p, n, t = process(stages=Stages((0.3, 0.6), (), Window.NONE)), 200_000, 0.8
    x = torch.randn(2, 3, 8, 8, generator=g(0), dtype=torch.float64)
    for k in (1, 2):
        torch.testing.assert_close(pool(x, k), 2**k * F.avg_pool2d(x, 2**k))
    x0 = torch.randn(1, 1, 8, 8, generator=g(1), dtype=torch.float64).expand(n, -1, -1, -1)
    z_t = p.forward_sample(x0, torch.full((n,), t, dtype=torch.float64),
                           torch.randn(n, 1, 2, 2, generator=g(2), dtype=torch.float64))  # fmt: skip
    averaged = z_t / 4  # k = 2
    alpha = p.schedule.alpha(t).item()
    torch.testing.assert_close(averaged.mean(0), alpha * F.avg_pool2d(x0[0], 4), atol=0.01, rtol=0)
    log_snr_avg = math.log(alpha**2 / averaged.var(0).mean().item())
    assert log_snr_avg == pytest.approx(p.log_snr(t).item() + 2 * math.log(4), abs=0.02)


def test_the_training_loss_of_a_reduced_state_is_the_projected_full_resolution_loss():
    """diffusion_loss sums over the stage-k state and divides by dim(x0): by Parseval this is the
    full-resolution per-pixel loss of U_k (pred - target), so no stage is weighted 4^k."""
    from dimdiff.heads import diffusion_loss
    from dimdiff.ops.pool import unpool

    pred, target = (torch.randn(3, 2, 4, 4, generator=g(i), dtype=torch.float64) for i in range(2))
    weight = torch.ones(3, dtype=torch.float64)
    loss, _ = diffusion_loss(pred, target, weight, data_dim=2 * 16 * 16)
    full = unpool(unpool(pred - target))  # (3, 2, 16, 16)
    torch.testing.assert_close(loss.double(), full.pow(2).mean(), rtol=1e-6, atol=0)
    same, _ = diffusion_loss(full, torch.zeros_like(full), weight)
    torch.testing.assert_close(loss, same, rtol=1e-6, atol=0)


def explicit_mix(terms, levels):
    """sum over (z, w) of sum_i w[i] comp_i(z) with every component formed (the reference)."""
    return sum(w_i.reshape(-1, 1, 1, 1) * c for z, w in terms for w_i, c in zip(w, components(z, levels), strict=True))


# outside every attenuation window (one gain for all components) and inside each window
@pytest.mark.parametrize("t", [0.05, 0.2, 0.35, 0.5, 0.9])
def test_every_formula_equals_its_sum_over_explicit_components(t, monkeypatch):
    p, s = process(), t - 0.02
    x0 = torch.randn(3, 1, 8, 8, generator=g(0), dtype=torch.float64)
    tt = torch.full((3,), t, dtype=torch.float64)
    eps = torch.randn((3, *p.shape_at(t)), generator=g(1), dtype=torch.float64)
    z = torch.randn((3, *p.shape_at(t)), generator=g(2), dtype=torch.float64)

    def everything():
        z_t = p.forward_sample(x0, tt, eps)
        targets = [p.training_target(x0, eps, tt, kind) for kind in Parameterization]
        x0s = [p.x0_from_prediction(z_t, eps, tt, kind) for kind in Parameterization]
        x0_hat = pool(x0, p.stages.stage(t))
        steps = [p.reverse_step(z_t, x0_hat, t, s, eta=eta, noise=z) for eta in (0.0, 1.0)]
        return [z_t, *targets, *x0s, *steps, p.score(z_t, x0_hat, t), p.forward_transition(z_t, s - 0.01, t, z)]

    fast = everything()
    monkeypatch.setattr(dimension_varying, "mix_components", explicit_mix)
    for a, b in zip(fast, everything(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("t", [0.05, 0.35, 0.9])  # outside every attenuation window
def test_a_uniform_gain_skips_the_decomposition(t, monkeypatch):
    p, s = process(), t - 0.02
    z_t, prediction = (torch.randn((3, *p.shape_at(t)), generator=g(i)) for i in range(2))
    tt = torch.full((3,), t, dtype=torch.float64)

    def no_pooling(*args, **kwargs):
        raise AssertionError("a state was decomposed outside every attenuation window")

    pool_module = sys.modules["dimdiff.ops.pool"]  # the attribute dimdiff.ops.pool is the function
    monkeypatch.setattr(pool_module, "pool", no_pooling)
    monkeypatch.setattr(pool_module, "unpool", no_pooling)
    for kind in Parameterization:
        x0_hat = p.x0_from_prediction(z_t, prediction, tt, kind)
        p.reverse_step(z_t, x0_hat, t, s, eta=1.0, generator=g(3))


@pytest.mark.parametrize("taus", [(0.35, 0.65), (0.3, 0.6), (0.45, 0.7)])
def test_attenuated_crossing_needs_no_complement_std_at_any_turning_point(taus):
    """Under attenuation the dropped component is pure noise at tau_k, whatever tau_k's float32 rounding
    (0.65 in float32 lies just inside its window: the gain there must still read as exactly 0)."""
    p = DimensionVaryingProcess((1, 16, 16), Stages(taus, (0.2, 0.2), Window.COSINE))
    for k, tau in enumerate(taus, start=1):
        assert p.crossing_scale(k) == pytest.approx(p.schedule.sigma(tau).item(), rel=1e-12)
