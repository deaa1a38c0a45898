import math

import pytest
import torch

from dimdiff.process.schedules import CosineSchedule, LinearBetaSchedule, ScheduleName, make_schedule

SCHEDULES = [LinearBetaSchedule(), CosineSchedule()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_log_snr_strictly_decreasing(schedule):
    t = torch.linspace(0.0, 1.0, 4001, dtype=torch.float64)[1:]
    log_snr = schedule.log_snr(t)
    assert torch.all(torch.diff(log_snr[:-1]) < 0)  # strict everywhere except the clamp at t = 1
    assert torch.all(torch.diff(log_snr) <= 0)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_endpoints_and_variance_preserving(schedule):
    assert schedule.alpha(0.0).item() == 1.0 and schedule.sigma(0.0).item() == 0.0
    assert schedule.log_snr(0.0).item() == math.inf
    assert schedule.alpha(1.0).item() < 0.01 and schedule.sigma(1.0).item() > 0.9999
    t = torch.rand(100, dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-12, rtol=0)
    assert alpha.dtype == torch.float64


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_t_log_snr_round_trip(schedule):
    t = torch.linspace(0.01, 0.98, 50, dtype=torch.float64)
    torch.testing.assert_close(schedule.t_from_log_snr(schedule.log_snr(t)), t, atol=1e-9, rtol=0)


def test_linear_matches_discrete_ddpm_at_integer_steps():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(LinearBetaSchedule().alpha(t) ** 2, alpha_bar, rtol=1e-10, atol=1e-14)


def test_cosine_matches_closed_form_and_clamps():
    s = 0.008
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(CosineSchedule().alpha(t) ** 2, f, rtol=1e-12, atol=0)
    assert CosineSchedule().log_snr(1.0).item() == pytest.approx(-15.0)


def test_make_schedule():
    assert isinstance(make_schedule(ScheduleName.LINEAR), LinearBetaSchedule)
    assert isinstance(make_schedule(ScheduleName("cosine")), CosineSchedule)
