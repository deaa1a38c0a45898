"""Scale-space diffusion's own properties (docs: the process module). What every process satisfies
(marginals, chained transitions, the exact posterior by brute-force conditioning across one and several
level changes, oracle DDPM and deterministic sampling across every change, explicit noise, the one-level
process equal to the Gaussian one bit for bit) is in tests/contracts/test_process_contract.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dimdiff.ops.resize import Resize, down_matrix_1d
from dimdiff.ops.resize_basis import SeparableBasis, resize_basis
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


def test_a_batch_is_read_whole_for_its_levels_and_times_are_float64():
    """A change step between two ordinary times of its level (target levels 1, 0, 1) is a mixed batch, though its
    extremes agree; a Python float boundary stays on the finer level (float32 would round 0.55 up past it)."""
    p = ScaleSpaceProcess((1, 8, 8), levels=2, num_steps=100)
    b, c = p.boundaries[0], p.change_times[0]
    mixed = torch.tensor([b + 0.5 / 100, c, c + 0.5 / 100], dtype=torch.float64)
    x0, noise = torch.zeros(3, 1, 8, 8), torch.zeros(3, 1, 4, 4)
    with pytest.raises(ValueError, match="share one target level, got levels 0 to 1"):
        p.training_target(x0, noise, mixed, Parameterization.X0)
    with pytest.raises(ValueError, match="one resolution level, got levels 0 to 1"):
        p.forward_sample(x0[:2], torch.tensor([b, c], dtype=torch.float64), torch.zeros(2, 1, 4, 4))
    assert p.level(b) == 0
    assert p.training_target(x0[:1], x0[:1], b, Parameterization.X0).shape == (1, 1, 8, 8)


def test_the_loss_is_a_mean_per_pixel_at_the_targets_resolution_at_every_level():
    """The reference's per-sample mean: an error of 1 in every pixel of the target costs 1 at every level, also
    at a change step, where the target is one level finer than the state."""
    from dimdiff.heads.regression import RegressionHead

    p = ScaleSpaceProcess((1, 16, 16), levels=3)
    head = RegressionHead(Parameterization.X0)
    x0 = torch.zeros(2, 1, 16, 16)
    for t in (0.3, p.change_times[0], 0.7, p.change_times[1], 0.99):
        tt = torch.full((2,), t, dtype=torch.float64)
        noise = p.noise_like(x0, tt)
        target = p.training_target(x0, noise, tt, Parameterization.X0)
        assert p.loss_dim(tuple(target.shape[1:])) == target[0].numel()
        _, parts = head.loss(p, x0, p.forward_sample(x0, tt, noise), tt, noise, target + 1.0)
        assert parts["mse"] == pytest.approx(1.0)


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


def _tiny_ssd(tmp_path, **train):
    from dimdiff.config import config_from_dict

    return config_from_dict({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [8]},
        "process": {"kind": "ssd", "parameterization": "x0", "levels": 2},
        "data": {"name": "digits", "resolution": 16},
        "train": {"batch_size": 8, "warmup_steps": 2, "sample_n": 2, "out_dir": str(tmp_path / "run"), **train},
        "sample": {"sampler": "ddpm", "steps": 4},
    })  # fmt: skip


def test_ssd_trains_resumes_exactly_and_samples_full_resolution_images_from_the_cli(tmp_path):
    from dimdiff.cli import main
    from dimdiff.generate import load_model
    from dimdiff.nets.flexi_unet import FlexiUNet
    from dimdiff.train.loop import train

    whole = train(_tiny_ssd(tmp_path / "a", steps=6, checkpoint_every=3), progress=False)
    train(_tiny_ssd(tmp_path / "b", steps=3, checkpoint_every=3), progress=False)
    resumed = train(_tiny_ssd(tmp_path / "b", steps=6, checkpoint_every=3), resume="auto", progress=False)
    assert resumed.losses == whole.losses[3:]
    model = load_model(whole.checkpoint)
    assert isinstance(model.denoiser.net, FlexiUNet)
    denoiser, process = model.denoiser, model.process
    c = process.change_times[0]  # the change step: an 8 px state, its x0 estimated at 16 px
    loss, _ = denoiser.loss(torch.zeros(2, 1, 16, 16), torch.full((2,), c), torch.randn(2, 1, 8, 8))
    assert torch.isfinite(loss)
    assert denoiser(torch.randn(2, 1, 8, 8), torch.full((2,), c)).shape == (2, 1, 16, 16)
    for sampler in ("ddpm", "ddim"):
        out = tmp_path / sampler
        assert main(["sample", "--checkpoint", str(whole.checkpoint), "--n", "2", "--sampler", sampler,
                     "--out", str(out), "--npz"]) == 0  # fmt: skip
        assert np.load(out / "samples.npz")["images"].shape == (2, 16, 16, 1)


def test_ssd_refuses_the_adaptive_sampler_and_a_unet_without_enough_levels(tmp_path):
    from dimdiff.build import build_head, build_net, build_process, run_sampler
    from dimdiff.config import ConfigError, replace_section

    config = _tiny_ssd(tmp_path)
    process = build_process(config.process, (1, 16, 16))
    with pytest.raises(ConfigError, match="sample.sampler: expected ddpm, ddim for this process"):
        run_sampler(replace_section(config.sample, sampler="adaptive"), None, process, 1)
    three = build_process(replace_section(config.process, levels=3), (1, 16, 16))
    with pytest.raises(ConfigError, match="model.channel_mult: expected 1 to 2 levels"):
        build_net(config.model, three, build_head(config))


def _dense_step_maps(p: ScaleSpaceProcess, fine: int, coarse: int, t: float, s: float):
    """(F, G, H) of x_s = F x_t + G x0_s + H n for `step_across` with eta = 1, read off by pushing bases."""
    C = p.data_shape[0]
    d_s, d_t = C * fine * fine, C * coarse * coarse
    zeros_s, zeros_t = torch.zeros(1, C, fine, fine, dtype=torch.float64), torch.zeros(1, C, coarse, coarse,
                                                                                     dtype=torch.float64)  # fmt: skip

    def step(x_t, x0_s, noise):
        return p.step_across(x_t, x0_s, t, s, eta=1.0, noise=noise).reshape(len(x_t), -1)

    e_s, e_t = torch.eye(d_s, dtype=torch.float64), torch.eye(d_t, dtype=torch.float64)
    F = step(e_t.reshape(d_t, C, coarse, coarse), zeros_s.expand(d_t, -1, -1, -1), zeros_s.expand(d_t, -1, -1, -1))
    G = step(zeros_t.expand(d_s, -1, -1, -1), e_s.reshape(d_s, C, fine, fine), zeros_s.expand(d_s, -1, -1, -1))
    H = step(zeros_t.expand(d_s, -1, -1, -1), zeros_s.expand(d_s, -1, -1, -1), e_s.reshape(d_s, C, fine, fine))
    return F.T, G.T, H.T


@pytest.mark.parametrize("resize", list(Resize))
@pytest.mark.parametrize("jump", [1, 2])
def test_a_step_across_one_or_two_levels_is_brute_force_gaussian_conditioning(resize, jump):
    """8x8 -> 4x4 and 8x8 -> 2x2: x_s ~ N(alpha_s x0_s, sigma_s^2 I), x_t = c M x_s + e with
    e ~ N(0, sigma_t^2 I - c^2 sigma_s^2 M M^T); the step with eta = 1 draws x_s | x_t exactly (dense float64
    conditioning), for area and bilinear M, whose noise square root H then has H H^T = the posterior covariance."""
    p = ScaleSpaceProcess((1, 8, 8), levels=3, resize=resize)
    t, s = 0.6, 0.45
    A = down_matrix_1d(resize, 8, levels=jump)
    M = torch.kron(A, A)  # (d_t, d_s)
    (a_t, sig_t), (a_s, sig_s) = (tuple(float(v) for v in p.schedule.alpha_sigma(torch.tensor(u, dtype=torch.float64)))
                                  for u in (t, s))  # fmt: skip
    c = a_t / a_s
    d_s, d_t = M.shape[1], M.shape[0]
    cov_s = sig_s**2 * torch.eye(d_s, dtype=torch.float64)
    cov_tt = c**2 * M @ cov_s @ M.T + (sig_t**2 * torch.eye(d_t, dtype=torch.float64) - c**2 * sig_s**2 * M @ M.T)
    cov_st = c * cov_s @ M.T
    K = torch.linalg.solve(cov_tt, cov_st.T).T  # (d_s, d_t)
    F, G, H = _dense_step_maps(p, 8, 8 >> jump, t, s)
    torch.testing.assert_close(F, K, atol=1e-12, rtol=0)
    torch.testing.assert_close(G, a_s * (torch.eye(d_s, dtype=torch.float64) - c * K @ M), atol=1e-12, rtol=0)
    posterior = cov_s - K @ cov_st.T
    torch.testing.assert_close(H @ H.T, posterior, atol=1e-12, rtol=0)
    rho = sig_s**2 / sig_t**2  # the closed form of SSD.md: sigma_s^2 (I - rho c^2 M^T M)
    torch.testing.assert_close(posterior, sig_s**2 * (torch.eye(d_s, dtype=torch.float64) - rho * c**2 * M.T @ M),
                               atol=1e-12, rtol=0)  # fmt: skip


@pytest.mark.parametrize("jump", [1, 2])
def test_the_area_coordinates_are_the_singular_coordinates_of_the_average(jump):
    """PoolBasis (pooling) and the SVD of the area matrix span the same seen space with the same gains 2^-j."""
    pool_basis = resize_basis(Resize.AREA, jump, (8, 8))
    svd_basis = SeparableBasis.of(Resize.AREA, jump, (8, 8))
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(pool_basis.unseen(x), svd_basis.unseen(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(svd_basis.gain, torch.full_like(svd_basis.gain, pool_basis.gain), atol=1e-14, rtol=0)
    y = torch.randn(3, 2, 8 >> jump, 8 >> jump, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(svd_basis.from_observed(svd_basis.observed(y)), y, atol=1e-12, rtol=0)


@pytest.mark.parametrize("resize", list(Resize))
def test_the_exact_posterior_noise_root_is_the_symmetric_root_lanczos_finds_matrix_free(resize):
    """With x_t = x0 = 0 the step is its noise term, sqrt(cov) n with the symmetric root; batched matrix-free
    Lanczos (the reference's method: 40 iterations on cov = sigma_s^2 (I - rho c^2 M^T M), M applied by
    resizing) gives the same within 1e-5, for 16x16 -> 8x8 and 16x16 -> 4x4."""
    from dimdiff.ops.lanczos import lanczos_sqrt
    from dimdiff.ops.resize import down, down_adjoint

    p = ScaleSpaceProcess((2, 16, 16), levels=3, resize=resize)
    t, s = 0.7, 0.5
    (a_t, sig_t), (a_s, sig_s) = (tuple(float(v) for v in p.schedule.alpha_sigma(torch.tensor(u, dtype=torch.float64)))
                                  for u in (t, s))  # fmt: skip
    c, rho = a_t / a_s, sig_s**2 / sig_t**2
    n = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for jump in (1, 2):
        def cov(v, jump=jump):
            return sig_s**2 * (v - rho * c**2 * down_adjoint(down(v, resize, jump), resize, jump))

        zeros_t = torch.zeros(4, 2, 16 >> jump, 16 >> jump, dtype=torch.float64)
        exact = p.step_across(zeros_t, torch.zeros_like(n), t, s, eta=1.0, noise=n)
        error = (lanczos_sqrt(cov, n) - exact).norm() / exact.norm()
        assert error < 1e-5, (jump, float(error))


def test_bilinear_ssd_on_the_upsampled_plain_unet_trains_and_samples_from_the_cli(tmp_path):
    """The authors' degradation and their comparison network, end to end: train (resuming exactly), then sample
    with both samplers from the command line; the checkpoint knows its degradation and layout."""
    from dimdiff.cli import main
    from dimdiff.config import apply_overrides, config_from_dict, config_to_dict
    from dimdiff.generate import load_model
    from dimdiff.nets.upsampled import UpsampledNet
    from dimdiff.train.loop import train

    def config(folder, **train_options):
        base = _tiny_ssd(folder, **train_options)
        return config_from_dict(apply_overrides(config_to_dict(base), ["process.degradation=bilinear",
                                                                       "model.layout=upsampled"]))  # fmt: skip

    whole = train(config(tmp_path / "a", steps=4, checkpoint_every=2), progress=False)
    train(config(tmp_path / "b", steps=2, checkpoint_every=2), progress=False)
    resumed = train(config(tmp_path / "b", steps=4, checkpoint_every=2), resume="auto", progress=False)
    assert resumed.losses == whole.losses[2:]
    model = load_model(whole.checkpoint)
    assert isinstance(model.denoiser.net, UpsampledNet) and model.process.resize is Resize.BILINEAR
    for sampler in ("ddpm", "ddim"):
        out = tmp_path / sampler
        assert main(["sample", "--checkpoint", str(whole.checkpoint), "--n", "2", "--sampler", sampler,
                     "--out", str(out), "--npz"]) == 0  # fmt: skip
        images = np.load(out / "samples.npz")["images"]
        assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
