import pytest
import torch
from conftest import GaussianData, empirical_moments

from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.schedules import CosineSchedule
from dimdiff.samplers import Spacing, adaptive_sample, ddim_sample, ddpm_sample, timesteps


def oracle(data: GaussianData, process: GaussianProcess):
    def denoise(x_t, t):
        alpha, sigma = process.schedule.alpha_sigma(t)
        return data.posterior_mean(x_t, alpha, sigma)

    return denoise


def assert_moments_match(samples, data, cov_tol=0.06):
    mean, cov = empirical_moments(samples)
    mean_tol = 4.5 * (data.cov.diagonal().max() / samples.shape[0]).sqrt().item()  # 4.5 standard errors
    assert (mean - data.mean).abs().max().item() < mean_tol
    rel = torch.linalg.matrix_norm(cov - data.cov) / torch.linalg.matrix_norm(data.cov)
    assert rel.item() < cov_tol


N = 8000


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_all_steps_with_oracle_reproduces_data_moments(gaussian_data, schedule):
    process = GaussianProcess((1, 4, 4)) if schedule == "linear" else GaussianProcess((1, 4, 4), CosineSchedule())
    g = torch.Generator().manual_seed(0)
    x_T = process.prior_sample(N // 2, generator=g).double()
    x = ddpm_sample(oracle(gaussian_data, process), process, x_T, timesteps(1000), generator=g)
    assert_moments_match(x, gaussian_data)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_with_oracle_reproduces_data_moments(gaussian_data, eta):
    process = GaussianProcess((1, 4, 4))
    g = torch.Generator().manual_seed(1)
    x_T = process.prior_sample(N, generator=g).double()
    x = ddim_sample(oracle(gaussian_data, process), process, x_T, timesteps(100), eta=eta, generator=g)
    assert_moments_match(x, gaussian_data)


def test_ddim_discretisation_error_falls_with_steps(gaussian_data):
    """Deterministic DDIM's covariance bias is a discretisation error: it shrinks as n grows."""
    process = GaussianProcess((1, 4, 4))
    x_T = process.prior_sample(N, generator=torch.Generator().manual_seed(1)).double()
    errors = []
    for n in (10, 40):
        _, cov = empirical_moments(ddim_sample(oracle(gaussian_data, process), process, x_T, timesteps(n)))
        errors.append(torch.linalg.matrix_norm(cov - gaussian_data.cov).item())
    assert errors[1] < 0.5 * errors[0]


def test_respaced_ddpm_with_oracle_reproduces_data_moments(gaussian_data):
    """Ancestral steps with E[x0 | x_t] drop Cov[x0 | x_t]: samples are slightly under-dispersed
    for large steps, and the bias vanishes as the step count grows."""
    process = GaussianProcess((1, 4, 4))
    g = torch.Generator().manual_seed(2)
    x_T = process.prior_sample(N, generator=g).double()
    spread = []
    for n in (25, 250):
        ts = timesteps(n, spacing=Spacing.LINSPACE)
        x = ddpm_sample(oracle(gaussian_data, process), process, x_T, ts, generator=g)
        spread.append((torch.trace(empirical_moments(x)[1]) / torch.trace(gaussian_data.cov)).item())
    assert_moments_match(x, gaussian_data)
    assert spread[0] < spread[1] < 1.0


def test_adaptive_with_oracle_reproduces_data_moments(gaussian_data):
    process = GaussianProcess((1, 4, 4))
    g = torch.Generator().manual_seed(3)
    x_T = process.prior_sample(N, generator=g).double()
    steps = []
    x = adaptive_sample(
        oracle(gaussian_data, process), process, x_T, torch.tensor([1.0, 0.0]),
        base_step=0.01, min_step=0.005, max_step=0.05, generator=g, callback=lambda info: steps.append(info["s"]),
    )  # fmt: skip
    assert_moments_match(x, gaussian_data)
    assert steps[-1] == 0.0 and 20 <= len(steps) <= 200
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False))


def test_adaptive_steps_shrink_for_complex_estimates():
    from dimdiff.samplers import adaptive_step

    flat = torch.zeros(2, 1, 8, 8)
    busy = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert adaptive_step(flat, 0.01, 0.001, 0.1) == 0.1
    assert 0.001 <= adaptive_step(busy, 0.01, 0.001, 0.1) < 0.01


def test_ddim_eta_zero_is_deterministic_per_seed_and_eta_one_is_not():
    process = GaussianProcess((1, 4, 4))
    data = GaussianData((1, 4, 4))
    ts = timesteps(20)

    def draw(seed, eta):
        g = torch.Generator().manual_seed(seed)
        x_T = process.prior_sample(8, generator=g)
        return ddim_sample(oracle(data, process), process, x_T, ts, eta=eta, generator=g)

    torch.testing.assert_close(draw(0, 0.0), draw(0, 0.0), atol=0, rtol=0)
    torch.testing.assert_close(draw(0, 1.0), draw(0, 1.0), atol=0, rtol=0)
    assert not torch.equal(draw(0, 0.0), draw(1, 0.0))


def test_callback_sees_every_step():
    process = GaussianProcess((1, 4, 4))
    seen = []
    ddim_sample(lambda x, t: torch.zeros_like(x), process, process.prior_sample(2), timesteps(7), callback=seen.append)
    assert [info["step"] for info in seen] == list(range(7))
    assert set(seen[0]) == {"step", "t", "x_t", "x0_hat"} and seen[0]["t"] == 1.0


@pytest.mark.parametrize("spacing", list(Spacing))
def test_timestep_grids(spacing):
    ts = timesteps(10, 1000, spacing)
    assert len(ts) == 11 and ts[-1] == 0 and torch.all(torch.diff(ts) < 0)
    assert torch.all((ts * 1000).round() == ts * 1000)
    expected_top = {Spacing.TRAILING: 1.0, Spacing.LEADING: 0.901, Spacing.LINSPACE: 1.0}[spacing]
    assert ts[0].item() == pytest.approx(expected_top)
    assert torch.equal(timesteps(1000, 1000, spacing)[:-1], torch.arange(1000, 0, -1, dtype=torch.float64) / 1000)
    with pytest.raises(ValueError, match="step count"):
        timesteps(1001, 1000, spacing)


def test_one_step_grids_start_from_pure_noise():
    for spacing in Spacing:
        if spacing is not Spacing.LEADING:  # leading never reaches t = 1 by construction (DDIM's original)
            assert timesteps(1, 1000, spacing).tolist() == [1.0, 0.0]
