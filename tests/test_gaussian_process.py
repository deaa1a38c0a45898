import pytest
import torch

from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.schedules import CosineSchedule, LinearBetaSchedule

PROCESSES = [GaussianProcess((1, 4, 4), LinearBetaSchedule()), GaussianProcess((1, 4, 4), CosineSchedule())]
IDS = ["linear", "cosine"]


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_forward_marginal_by_monte_carlo(process):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64).expand(200_000, -1, -1, -1)
    t = torch.full((x0.shape[0],), 0.4, dtype=torch.float64)
    x_t = process.forward_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    alpha, sigma = process.schedule.alpha_sigma(0.4)
    torch.testing.assert_close(x_t.mean(0), alpha * x0[0], atol=5e-3, rtol=0)
    torch.testing.assert_close(x_t.var(0), (sigma**2).expand(1, 4, 4), atol=5e-3, rtol=0)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_posterior_equals_brute_force_gaussian_conditioning(process):
    """q(x_s | x_t, x0) from the joint Gaussian of (x_s, x_t) given x0, per dimension."""
    t, s = 0.7, 0.3
    alpha_t, sigma_t = process.schedule.alpha_sigma(t)
    alpha_s, sigma_s = process.schedule.alpha_sigma(s)
    r = alpha_t / alpha_s
    cov_ss, cov_tt, cov_st = sigma_s**2, sigma_t**2, r * sigma_s**2  # x_t = r x_s + noise
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    x_t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    expected_mean = alpha_s * x0 + cov_st / cov_tt * (x_t - alpha_t * x0)
    expected_var = cov_ss - cov_st**2 / cov_tt
    mean, var = process.posterior(x_t, x0, t, s)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(torch.broadcast_to(var, mean.shape), expected_var.expand(mean.shape))


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_reverse_step_eta_one_is_the_posterior(process):
    g = torch.Generator().manual_seed(3)
    x0, x_t, z = (torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mean, var = process.posterior(x_t, x0, 0.6, 0.55)
    x_s = process.reverse_step(x_t, x0, 0.6, 0.55, eta=1.0, noise=z)
    torch.testing.assert_close(x_s, mean + var.sqrt() * z)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_chained_transitions_equal_one_step_marginal(process):
    """Posterior composed with the marginal gives the marginal: x_t ~ q(x_t|x0) then
    x_s ~ q(x_s|x_t,x0) is distributed as q(x_s|x0)."""
    g = torch.Generator().manual_seed(4)
    n = 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7, dtype=torch.float64)
    t = torch.full((n,), 0.8, dtype=torch.float64)
    x_t = process.forward_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    x_s = process.reverse_step(x_t, x0, 0.8, 0.2, eta=1.0, generator=g)
    alpha_s, sigma_s = process.schedule.alpha_sigma(0.2)
    assert x_s.mean().item() == pytest.approx(0.7 * alpha_s.item(), abs=5e-3)
    assert x_s.var().item() == pytest.approx(sigma_s.item() ** 2, abs=5e-3)


def test_ddim_with_oracle_x0_and_eps_reproduces_the_forward_sample():
    process = PROCESSES[0]
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    x_t = process.forward_sample(x0, torch.full((4,), 0.9, dtype=torch.float64), eps)
    x_s = process.reverse_step(x_t, x0, 0.9, 0.3, eta=0.0)
    expected = process.forward_sample(x0, torch.full((4,), 0.3, dtype=torch.float64), eps)
    torch.testing.assert_close(x_s, expected, atol=1e-5, rtol=1e-5)


def test_last_step_returns_x0_and_order_is_checked():
    process = PROCESSES[0]
    x_t, x0 = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(process.reverse_step(x_t, x0, 0.001, 0.0, eta=1.0), x0)
    with pytest.raises(ValueError, match="s < t"):
        process.reverse_step(x_t, x0, 0.3, 0.5)


def test_training_t_range_and_shapes():
    process = PROCESSES[0]
    t = process.sample_training_t(10_000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() <= 1.0 and t.dtype == torch.float64
    assert process.shape_at(0.5) == (1, 4, 4)
    assert process.prior_sample(3).shape == (3, 1, 4, 4)
