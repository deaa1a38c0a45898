import itertools

import pytest
import torch

from dimdiff.process.schedules import CosineSchedule, LinearBetaSchedule
from dimdiff.process.stages import Stages, Window

DESIGN = dict(turning_points=(0.3, 0.6), window_widths=(0.2, 0.2))  # 32 -> 16 -> 8 (docs/dvdp.md section 7)
T = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
ATTENUATING = [w for w in Window if w is not Window.NONE]


@pytest.mark.parametrize("window", ATTENUATING)
def test_attenuation_windows(window):
    stages = Stages(**DESIGN, window=window)
    schedule = LinearBetaSchedule()
    for j, (tau, width) in enumerate(zip(stages.turning_points, stages.window_widths, strict=True)):
        lam = stages.attenuation(j, T, schedule)
        assert lam.dtype == torch.float64 and lam.min() >= 0 and lam.max() <= 1
        assert torch.all(torch.diff(lam) <= 1e-15)  # non-increasing
        assert torch.all(lam[T <= tau - width] == 1.0)  # untouched before the window
        assert torch.all(lam[T >= tau] == 0.0)  # exactly 0 from the turning point on
        inside = (T > tau - width + 1e-3) & (T < tau - 1e-3)
        assert torch.all((lam[inside] > 0) & (lam[inside] < 1))
    assert torch.all(stages.attenuation(stages.num_levels, T) == 1.0)  # the coarse image is never attenuated


SCHEDULES = [LinearBetaSchedule(), CosineSchedule()]


@pytest.mark.parametrize(("window", "schedule"), list(itertools.product(ATTENUATING, SCHEDULES)))
def test_per_component_snr_is_non_increasing(window, schedule):
    """a_j(t)^2 / sigma_t^2 = lambda_j(t)^2 SNR(t) never increases: the Markov chain exists."""
    stages = Stages(**DESIGN, window=window)
    t = T[1:]
    for j in range(stages.num_levels + 1):
        snr_j = stages.attenuation(j, t, schedule) ** 2 * schedule.snr(t)
        assert torch.all(torch.diff(snr_j) <= 1e-12 * snr_j[:-1].clamp_min(1.0))


def test_no_attenuation_keeps_every_component_and_takes_no_widths():
    """Window none (subspace diffusion): lambda_j = 1 throughout, the turning points only switch resolution."""
    stages = Stages((0.3, 0.6), (), Window.NONE)
    assert all(torch.all(stages.attenuation(j, T) == 1.0) for j in range(3))
    assert stages.shape_at(0.7, (1, 32, 32)) == (1, 8, 8)
    with pytest.raises(ValueError, match="expected no window widths without attenuation"):
        Stages((0.3,), (0.1,), Window.NONE)
    with pytest.raises(ValueError, match="component index in 0..2, got 3"):
        stages.attenuation(3, T)


def test_snr_window_needs_the_schedule():
    with pytest.raises(ValueError, match="needs the base noise schedule"):
        Stages(**DESIGN, window=Window.SNR).attenuation(0, T)


def test_stages_and_shapes():
    stages = Stages(**DESIGN)
    assert [stages.stage(t) for t in (0.0, 0.1, 0.3, 0.30001, 0.6, 0.7, 1.0)] == [0, 0, 0, 1, 1, 2, 2]
    assert stages.shape_at(0.2, (3, 32, 32)) == (3, 32, 32)
    assert stages.shape_at(0.5, (3, 32, 32)) == (3, 16, 16)
    assert stages.shape_at(1.0, (3, 32, 64)) == (3, 8, 16)
    stages.check_data_shape((1, 32, 32))
    with pytest.raises(ValueError, match="expected height and width divisible by 4, got 30x32"):
        stages.check_data_shape((1, 30, 32))


@pytest.mark.parametrize("n", [3, 10, 50, 100, 101, 1000])
def test_stage_step_counts_sum_to_n(n):
    counts = Stages(**DESIGN).step_counts(n)
    assert sum(counts) == n and min(counts) >= 1
    assert max(abs(c - n * length) for c, length in zip(counts, (0.3, 0.3, 0.4), strict=True)) < 1 + 1e-9


def test_cost_bound_matches_the_design_examples():
    assert Stages(**DESIGN).step_counts(100) == [30, 30, 40]
    assert Stages(**DESIGN).cost_bound(100) == pytest.approx(0.3 + 0.075 + 0.025)
    half = Stages(turning_points=(0.5,), window_widths=(0.3,))
    assert half.cost_bound(100) == pytest.approx(0.625)


@pytest.mark.parametrize("n", [3, 7, 100])
def test_timesteps_include_turning_points_and_never_straddle_them(n):
    stages = Stages(**DESIGN)
    ts = stages.timesteps(n)
    assert len(ts) == n + 1 and ts[0] == 1.0 and ts[-1] == 0.0 and torch.all(torch.diff(ts) < 0)
    for tau in stages.turning_points:
        assert torch.any(ts == tau)
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist(), strict=True):
        # a step stays in its stage, or lands exactly on the turning point below it (where it crosses up)
        crosses = s in stages.turning_points and stages.stage(t) == stages.stage(s) + 1
        assert stages.stage(s) == stages.stage(t) or crosses
    per_stage = [sum(1 for t in ts[:-1].tolist() if stages.stage(t) == k) for k in range(3)]
    assert per_stage == stages.step_counts(n)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(turning_points=(0.6, 0.3), window_widths=(0.1, 0.1)), "strictly increasing in"),
        (dict(turning_points=(0.3, 1.0), window_widths=(0.1, 0.1)), "strictly increasing in"),
        (dict(turning_points=(0.3,), window_widths=(0.1, 0.1)), "one window width per turning point"),
        (dict(turning_points=(0.3,), window_widths=(0.4,)), r"expected a width in \(0, tau_1 = 0.3\]"),
        (dict(turning_points=(0.3,), window_widths=(0.3,), window=Window.SNR), "snr window must start after t = 0"),
    ],
)
def test_bad_stage_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Stages(**kwargs)


@pytest.mark.parametrize("window", [Window.LINEAR, Window.COSINE])
def test_a_window_may_start_at_t_0(window):
    stages = Stages(turning_points=(0.3,), window_widths=(0.3,), window=window)
    lam = stages.attenuation(0, T, LinearBetaSchedule())
    assert torch.isfinite(lam).all() and lam[0] == 1.0 and torch.all(lam[T >= 0.3] == 0.0)


def test_no_turning_point_is_one_full_resolution_stage():
    stages = Stages(turning_points=(), window_widths=())
    assert stages.num_levels == 0 and stages.stage(0.9) == 0 and stages.step_counts(10) == [10]
    assert torch.equal(stages.timesteps(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
