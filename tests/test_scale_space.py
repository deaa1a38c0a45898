"""Scale-space diffusion's own properties (docs: the process module). What every process satisfies
(marginals, chained transitions, the exact posterior by brute-force conditioning across one and several
level changes, oracle DDPM and deterministic sampling across every change, explicit noise, the one-level
process equal to the Gaussian one bit for bit) is in tests/contracts/test_process_contract.py."""

from __future__ import annotations

import itertools

import pytest
import torch

from dimdiff.process.parameterization import Parameterization
from dimdiff.process.scale_space import ResolutionSchedule, ScaleSpaceProcess, level_starts
from dimdiff.process.timesteps import Spacing


def test_the_64px_four_level_schedule_is_the_references_step_for_step():
    """64 px for steps 0-437, 32 for 438-749, 16 for 750-936, 8 for 937-999 (T = 1000, gamma = 0.5)."""
    p = ScaleSpaceProcess((3, 64, 64), levels=4)
    sizes = [p.shape_at((n + 1) / 1000)[1] for n in range(1000)]
    assert [(size, len(list(run))) for size, run in itertools.groupby(sizes)] == [(64, 438), (32, 312), (16, 187),
                                                                                  (8, 63)]  # fmt: skip
    assert level_starts(4, 1000, ResolutionSchedule.EQUAL, 0.5) == (250, 500, 750)


@pytest.mark.parametrize("spacing", list(Spacing))
@pytest.mark.parametrize("n", [1, 5, 50])
def test_every_grid_keeps_each_change_step_and_no_step_skips_a_level(spacing, n):
    p = ScaleSpaceProcess((1, 32, 32), levels=3)
    ts = p.timesteps(n, spacing).tolist()
    assert ts[-1] == 0.0 and ts == sorted(ts, reverse=True) and len(set(ts)) == len(ts)
    for b, c in zip(p.boundaries, p.change_times, strict=True):
        assert b in ts and c in ts and ts.index(b) == ts.index(c) + 1  # the change step c_k -> b_k
    for t, s in zip(ts, ts[1:], strict=False):
        assert p.level(t) - p.level(s) in (0, 1)
        assert p.target_level(t) == p.level(s), (t, s)  # the x0 estimate is at the level the step lands on


def test_training_levels_follow_net_shapes_with_the_references_shares():
    p = ScaleSpaceProcess((1, 64, 64), levels=4)
    levels, shapes = p.training_levels(), p.net_shapes()
    assert len(levels) == len(shapes) == 7
    assert [round(lv.probability * 1000) for lv in levels] == [438, 311, 186, 62, 1, 1, 1]
    for level, (state, target) in zip(levels, shapes, strict=True):
        t = p.sample_training_t(64, generator=torch.Generator().manual_seed(0), level=levels.index(level))
        assert all(p.shape_at(v) == state and p.target_shape_at(v) == target for v in t.tolist())
    draws = [p.sample_training_t(4, generator=torch.Generator().manual_seed(i)) for i in range(200)]
    assert all(len({p.level(v) for v in d.tolist()}) == 1 for d in draws)  # one resolution per batch


def test_eps_and_v_within_a_level_but_x0_only_at_a_change_step():
    p = ScaleSpaceProcess((1, 16, 16), levels=2)
    x0, c = torch.randn(2, 1, 16, 16), p.change_times[0]
    noise = torch.randn(2, 1, 8, 8)
    assert p.training_target(x0, noise, torch.full((2,), c), Parameterization.X0).shape == (2, 1, 16, 16)
    assert p.training_target(x0, noise, torch.full((2,), 0.9), Parameterization.X0).shape == (2, 1, 8, 8)
    for kind in (Parameterization.EPS, Parameterization.V):
        assert p.training_target(x0, noise, torch.full((2,), 0.9), kind).shape == (2, 1, 8, 8)
        with pytest.raises(ValueError, match=f"change step .* expected parameterization x0, got {kind.value}"):
            p.training_target(x0, noise, torch.full((2,), c), kind)


def test_bad_steps_and_settings_are_named():
    p = ScaleSpaceProcess((1, 16, 16), levels=2)
    x_t, x0_hat = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"finer than the x0 estimate taken at t \(level 1\).*process's timesteps"):
        p.reverse_step(x_t, x0_hat, 0.9, 0.1)  # a mid-level time estimates x0 at its own, coarser level
    with pytest.raises(ValueError, match="one resolution level"):
        p.forward_sample(torch.zeros(2, 1, 16, 16), torch.tensor([0.1, 0.9]), torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible by 2\\^\\(levels - 1\\) = 4, got levels = 3 for 6x6"):
        ScaleSpaceProcess((1, 6, 6), levels=3)
    with pytest.raises(ValueError, match="at least two of 10 steps"):
        ScaleSpaceProcess((1, 64, 64), levels=6, num_steps=10)
