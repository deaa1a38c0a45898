"""The denoiser owns the x0 estimate and the training loss; the head and the process supply the math."""

from __future__ import annotations

import pytest
import torch

from dimdiff.heads import LossWeighting, RegressionHead, diffusion_loss, loss_weight
from dimdiff.nets.denoiser import Denoiser
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.stages import Stages, Window


class Affine(torch.nn.Module):
    """A net with no noise math: out = w * x + b * t (any state shape, output at the input's size), optionally
    with extra channels."""

    def __init__(self, extra_channels: int = 0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.7))
        self.b = torch.nn.Parameter(torch.tensor(0.2))
        self.extra = extra_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        assert out_size in (None, tuple(x.shape[-2:]))
        out = self.w * x + self.b * t.reshape(-1, 1, 1, 1)
        return torch.cat([out, out[:, : self.extra]], dim=1) if self.extra else out

    def out_sizes(self, in_size: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        return (in_size,)


PROCESSES = {
    "gaussian": lambda: GaussianProcess((2, 8, 8)),
    "dvdp": lambda: DimensionVaryingProcess((2, 8, 8), Stages((0.3, 0.6), (0.2, 0.2))),
}


def _batch(process, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(4, 2, 8, 8, generator=g) * 2 - 1
    t = process.sample_training_t(4, generator=g)
    return x0, t, process.noise_like(x0, t, generator=g)


@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("kind", list(Parameterization))
def test_the_loss_is_the_heads_weighted_error_of_the_net_on_the_forward_sample(name, kind):
    process = PROCESSES[name]()
    head = RegressionHead(kind, LossWeighting.MIN_SNR, 5.0, complexity_lambda=0.1)
    denoiser = Denoiser(Affine(), process, head, pixel_units=False)
    for seed in range(3):  # DVDP: several stages
        x0, t, noise = _batch(process, seed)
        x_t = process.forward_sample(x0, t, noise)
        expected, _ = diffusion_loss(denoiser.net(x_t, t.float()), process.training_target(x0, noise, t, kind),
                                     loss_weight(process.log_snr(t), LossWeighting.MIN_SNR, kind, 5.0), x0=x0,
                                     complexity_lambda=0.1, data_dim=2 * 8 * 8)  # fmt: skip
        loss, parts = denoiser.loss(x0, t, noise)
        assert torch.equal(loss, expected) and set(parts) == {"mse", "complexity_l1"}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_the_x0_estimate_is_the_process_conversion_of_the_output_clipped_to_the_data_range(name):
    process = PROCESSES[name]()
    denoiser = Denoiser(Affine(), process, RegressionHead(Parameterization.V), clip_x0=True)
    x0, t, noise = _batch(process)
    t = torch.full_like(t, float(t[0]))
    x_t = process.forward_sample(x0, t, noise)
    raw = process.x0_from_prediction(x_t, denoiser.net(x_t, t.float()), t, Parameterization.V)
    bound = process.x0_bound(float(t[0]))
    torch.testing.assert_close(denoiser(x_t, t), raw.clamp(-bound, bound), rtol=0, atol=0)


def test_a_net_of_the_wrong_output_shape_is_an_error_not_a_broadcast():
    process = GaussianProcess((2, 8, 8))
    denoiser = Denoiser(Affine(extra_channels=1), process, RegressionHead())
    x0, t, noise = _batch(process)
    with pytest.raises(ValueError, match=r"expected shape \(4, 2, 8, 8\), got \(4, 3, 8, 8\)"):
        denoiser.loss(x0, t, noise)
    with pytest.raises(ValueError, match=r"expected shape \(4, 2, 8, 8\), got \(4, 3, 8, 8\)"):
        denoiser(x0, t)


def test_the_loss_refuses_a_prediction_that_would_broadcast_against_the_target():
    pred, target, weight = torch.zeros(2, 4, 3, 3), torch.zeros(2, 1, 3, 3), torch.ones(2)
    expected = r"expected a prediction of the target's shape \(2, 1, 3, 3\), got \(2, 4, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        diffusion_loss(pred, target, weight)


def test_the_process_says_what_the_loss_is_divided_by_and_how_the_state_is_scaled():
    dvdp = DimensionVaryingProcess((2, 8, 8), Stages((0.3, 0.6), (0.2, 0.2)))
    gaussian = GaussianProcess((2, 8, 8))
    assert dvdp.loss_dim((2, 2, 2)) == gaussian.loss_dim((2, 8, 8)) == 128  # DVDP: the data's dimension (Parseval)
    assert [dvdp.state_scale(t) for t in (0.1, 0.3, 0.5, 0.9)] == [1.0, 1.0, 2.0, 4.0]
    assert gaussian.state_scale(0.9) == 1.0
    assert dvdp.net_shapes() == (((2, 8, 8),) * 2, ((2, 4, 4),) * 2, ((2, 2, 2),) * 2)
    assert all(dvdp.target_shape_at(t) == dvdp.shape_at(t) for t in (0.1, 0.5, 0.9))


def test_subspace_without_complement_std_refuses_to_cross_instead_of_refilling_no_signal():
    process = DimensionVaryingProcess((1, 4, 4), Stages((0.5,), (), Window.NONE))
    z = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs complement_std"):
        process.reverse_step(z, torch.zeros_like(z), 0.6, 0.5)


def test_training_leaves_the_callers_rng_and_thread_count_alone(tmp_path):
    from dimdiff.config import config_from_dict
    from dimdiff.train.loop import train

    config = config_from_dict({
        "model": {"base_channels": 4, "channel_mult": [1, 2], "attention_resolutions": []},
        "data": {"name": "digits", "resolution": 8},
        "train": {"steps": 2, "batch_size": 4, "out_dir": str(tmp_path / "run"), "threads": 1, "sample_n": 2},
        "sample": {"steps": 2},
    })  # fmt: skip
    torch.manual_seed(1234)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(2)
    train(config, progress=False)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == 2
    torch.set_num_threads(threads)
