"""The levels a process trains at (process.training_levels, sample_training_t(level=k)): what the
training bench weighs its per-level measurements by."""

import pytest
import torch

from dimdiff.process.base import TrainingLevel
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.stages import Stages, Window

TWO = Stages(turning_points=(0.3, 0.6), window_widths=(0.2, 0.2), window=Window.COSINE)


def dvdp() -> DimensionVaryingProcess:
    return DimensionVaryingProcess((1, 8, 8), TWO)  # stages (1/T, 0.3], (0.3, 0.6], (0.6, 1] at 8, 4, 2 px


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_training_is_one_level_of_probability_one():
    process = GaussianProcess((1, 4, 4))
    assert process.training_levels() == (TrainingLevel(1.0, 1e-3, 1.0),)
    assert len(process.net_shapes()) == 1
    at_level = process.sample_training_t(7, generator=g(3), level=0)
    assert torch.equal(at_level, process.sample_training_t(7, generator=g(3)))  # the same draw
    with pytest.raises(ValueError, match=r"expected a training level in 0..0 .*got 1"):
        process.sample_training_t(2, level=1)


def test_dvdp_training_levels_are_the_stages_with_their_lengths_as_probabilities():
    levels = dvdp().training_levels()
    assert len(levels) == len(dvdp().net_shapes()) == 3
    lengths = [0.3 - 1e-3, 0.3, 0.4]
    assert [lv.probability for lv in levels] == pytest.approx([x / sum(lengths) for x in lengths], abs=1e-15)
    assert sum(lv.probability for lv in levels) == pytest.approx(1.0, abs=1e-15)
    assert [b for lv in levels for b in (lv.t_low, lv.t_high)] == pytest.approx([1e-3, 0.3, 0.3, 0.6, 0.6, 1.0])


@pytest.mark.parametrize("level", [0, 1, 2])
def test_dvdp_training_times_of_one_level_stay_in_its_stage(level):
    p = dvdp()
    low, high = p.training_levels()[level].t_low, p.training_levels()[level].t_high
    t = p.sample_training_t(4000, generator=g(level), level=level)
    assert p.stage_of(t) == level and t.dtype == torch.float64
    assert low < t.min() and t.max() <= high and t.mean().item() == pytest.approx((low + high) / 2, abs=0.01)
    with pytest.raises(ValueError, match=r"expected a training level in 0..2 .*got 3"):
        p.sample_training_t(2, level=3)


def test_dvdp_training_times_without_a_level_are_drawn_as_before():
    """sample_training_t(level=None) draws a stage by length, then t in it, bit for bit as it always did."""
    p = dvdp()
    for seed in range(20):
        again = g(seed)
        bounds = torch.tensor(p.stages.boundaries(), dtype=torch.float64)
        lo, hi = bounds[:-1].clamp_min(1e-3), bounds[1:]
        lengths = (hi - lo).clamp_min(0.0)
        k = torch.multinomial(lengths / lengths.sum(), 1, generator=again).squeeze(0)
        expected = hi[k] - (hi[k] - lo[k]) * torch.rand(5, generator=again, dtype=torch.float64)
        assert torch.equal(p.sample_training_t(5, generator=g(seed)), expected)
