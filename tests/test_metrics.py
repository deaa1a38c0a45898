"""Metric invariants: FD, KID, precision/recall, multi-scale SWD, PSNR/SSIM (CPU, synthetic data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import skimage.metrics
import torch
import torch.nn.functional as F

from dimdiff.data import load_dataset
from dimdiff.metrics import (
    bits_per_pixel,
    compression_ratio,
    feature_statistics,
    frechet_distance,
    frechet_distance_eig,
    frechet_distance_from_features,
    kernel_inception_distance,
    laplacian_pyramid,
    precision_recall,
    psnr,
    sliced_wasserstein_distance,
    ssim,
)


def _random_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features (n, d): z A + shift with a fixed random mixing matrix A."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1234).normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 3.5 sigma, mirror padding) of (B, C, H, W) images."""
    radius = int(3.5 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _smooth_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Blurred noise scaled into [-1, 1], (n, C, size, size) float64."""
    g = torch.Generator().manual_seed(seed)
    x = _gaussian_blur(torch.randn(n, channels, size, size, generator=g, dtype=torch.float64), 1.5)
    return (x / x.abs().amax()).clamp(-1, 1)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits", resolution=32).tensor[:300]


# ---------------------------------------------------------------- Frechet distance


def test_fd_of_a_set_with_itself_is_zero_and_shuffle_invariant() -> None:
    x = _random_features(500, 16, seed=0)
    mu, sigma = feature_statistics(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)
    shuffled = x[np.random.default_rng(1).permutation(len(x))]
    y = _random_features(400, 16, seed=2, shift=0.3)
    assert frechet_distance_from_features(shuffled, y) == pytest.approx(frechet_distance_from_features(x, y), rel=1e-9)


def test_fd_matches_brute_force_scipy() -> None:
    a, b = _random_features(300, 12, seed=0), _random_features(250, 12, seed=1, shift=0.5)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = (a - mu1).T @ (a - mu1) / (len(a) - 1)
    s2 = (b - mu2).T @ (b - mu2) / (len(b) - 1)
    root1 = scipy.linalg.sqrtm(s1).real
    tr_root = np.trace(scipy.linalg.sqrtm(root1 @ s2 @ root1).real)  # tr((s1 s2)^1/2) by similarity
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_root
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-8)


def test_fd_closed_form_for_diagonal_covariances() -> None:
    rng = np.random.default_rng(0)
    var1, var2 = rng.uniform(0.1, 2.0, 10), rng.uniform(0.1, 2.0, 10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_fd_eig_form_agrees_with_sqrtm_form() -> None:
    mu1, s1 = feature_statistics(_random_features(400, 32, seed=0))
    mu2, s2 = feature_statistics(_random_features(300, 32, seed=1, shift=0.2) ** 2)
    assert frechet_distance_eig(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-8)


def test_fd_grows_as_squared_mean_shift_for_equal_covariances() -> None:
    mu, sigma = feature_statistics(_random_features(300, 8, seed=0))
    shift = np.random.default_rng(3).normal(size=8)
    for scale in (0.5, 1.0, 2.0):
        fd = frechet_distance(mu, sigma, mu + scale * shift, sigma)
        assert fd == pytest.approx(scale**2 * shift @ shift, rel=1e-6)


def test_fd_singular_covariance_is_finite_through_offset_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _random_features(20, 64, seed=0), _random_features(30, 64, seed=1)  # fewer samples than dims
    assert math.isfinite(frechet_distance_from_features(a, b))
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def failing_first(matrix: np.ndarray) -> np.ndarray:  # the singular product: sqrtm gives non-finite values
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", failing_first)
    fd = frechet_distance_from_features(a, b)
    assert len(calls) == 2 and math.isfinite(fd) and fd > 0


def test_fd_large_imaginary_part_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary component 0.5"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


def test_fd_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="expected features of dimension 2048, got 64"):
        frechet_distance_from_features(np.zeros((5, 2048)), np.zeros((5, 64)))
    with pytest.raises(ValueError, match=r"expected sigma2 of shape \(4, 4\)"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), np.eye(3))
    with pytest.raises(ValueError, match=r"expected features of shape \(N, D\)"):
        feature_statistics(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))


# ---------------------------------------------------------------- KID


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    real, same = _random_features(600, 32, seed=0), _random_features(600, 32, seed=1)
    mean, std = kernel_inception_distance(real, same, num_subsets=20, subset_size=300)
    assert abs(mean) < max(3 * std, 1e-3)
    shifted_mean, shifted_std = kernel_inception_distance(real, same + 0.5, num_subsets=20, subset_size=300)
    assert shifted_mean > 10 * max(shifted_std, abs(mean), 1e-3)


def test_kid_subset_size_is_clipped_and_seeded() -> None:
    real, fake = _random_features(50, 8, seed=0), _random_features(40, 8, seed=1)
    first = kernel_inception_distance(real, fake, num_subsets=5, subset_size=1000, seed=7)
    assert first == kernel_inception_distance(real, fake, num_subsets=5, subset_size=1000, seed=7)
    with pytest.raises(ValueError, match="expected features of dimension 8, got 4"):
        kernel_inception_distance(real, fake[:, :4])


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_near_one_for_one_distribution() -> None:
    precision, recall = precision_recall(_random_features(1000, 4, seed=0), _random_features(1000, 4, seed=1))
    assert precision > 0.9 and recall > 0.9


def test_precision_is_low_when_fakes_leave_the_manifold() -> None:
    real = _random_features(500, 4, seed=0)
    precision, _ = precision_recall(real, _random_features(500, 4, seed=1, shift=6.0))
    assert precision < 0.05


def test_recall_is_low_under_mode_collapse() -> None:
    real = _random_features(500, 4, seed=0)
    collapsed = real[0] + 0.05 * np.random.default_rng(1).normal(size=(500, 4))  # every fake near one real sample
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.1


def test_precision_recall_blocks_do_not_change_the_result() -> None:
    real, fake = _random_features(300, 6, seed=0), _random_features(200, 6, seed=1, shift=0.5)
    assert precision_recall(real, fake, batch_size=37) == precision_recall(real, fake, batch_size=1024)
    with pytest.raises(ValueError, match="expected features of dimension 6, got 5"):
        precision_recall(real, fake[:, :5])


# ---------------------------------------------------------------- sliced Wasserstein distance


def test_laplacian_pyramid_levels_and_constant_image() -> None:
    x = torch.full((2, 3, 32, 32), 0.25)
    levels = laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    assert torch.allclose(levels[0], torch.zeros(()), atol=1e-6) and torch.allclose(levels[2], x[..., :8, :8])


def test_swd_falls_as_blur_decreases_at_every_level(digits: torch.Tensor) -> None:
    results = [sliced_wasserstein_distance(digits, _gaussian_blur(digits, s)) for s in (2.0, 1.0, 0.5)]
    assert list(results[0]) == ["swd_32", "swd_16", "swd_8", "swd_mean"]
    for key in results[0]:
        assert results[0][key] > results[1][key] > results[2][key], key


def test_swd_sees_a_mild_blur_at_the_finest_scale_first(digits: torch.Tensor) -> None:
    baseline = sliced_wasserstein_distance(digits, digits, seed=1)  # sharp vs sharp: sampling noise only
    blurred = sliced_wasserstein_distance(digits, _gaussian_blur(digits, 1.0))
    assert blurred["swd_32"] / baseline["swd_32"] > 1.5 * blurred["swd_8"] / baseline["swd_8"]


def test_swd_of_a_set_with_itself_is_small(digits: torch.Tensor) -> None:
    itself = sliced_wasserstein_distance(digits, digits, seed=3)
    blurred = sliced_wasserstein_distance(digits, _gaussian_blur(digits, 2.0), seed=3)
    for key in itself:
        assert itself[key] < 0.4 * blurred[key], key


def test_swd_bad_shapes_are_clear_errors() -> None:
    x = torch.zeros(4, 1, 32, 32)
    with pytest.raises(ValueError, match=r"expected images_b of shape \(N, 1, 32, 32\)"):
        sliced_wasserstein_distance(x, torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match="expected images_a of shape"):
        sliced_wasserstein_distance(x[0], x)
    with pytest.raises(ValueError, match="at least 16 px"):
        sliced_wasserstein_distance(x[..., :8, :8], x[..., :8, :8], min_resolution=16)


# ---------------------------------------------------------------- PSNR / SSIM / rates


def test_psnr_known_values() -> None:
    x = _smooth_images(3, 3, 16, seed=0)
    for c in (0.01, 0.1, 0.5):
        expected = torch.full((3,), 10 * math.log10(2.0**2 / c**2), dtype=torch.float64)
        assert torch.allclose(psnr(x, x + c), expected, rtol=1e-12)
    assert psnr(x, x + 0.1, data_range=1.0)[0].item() == pytest.approx(20.0, rel=1e-12)
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_is_one_for_identical_images() -> None:
    x = _smooth_images(2, 3, 24, seed=0)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12)


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> list[float]:
    return [
        skimage.metrics.structural_similarity(
            a.numpy(), b.numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=data_range,
        )
        for a, b in zip(x, y, strict=True)
    ]


def test_ssim_matches_scikit_image_on_random_images() -> None:
    x = _smooth_images(3, 3, 24, seed=0)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)).clamp(-1, 1)
    for channels in (slice(0, 3), slice(0, 1)):  # RGB and grey
        a, b = x[:, channels], y[:, channels]
        assert ssim(a, b).tolist() == pytest.approx(_skimage_ssim(a, b, 2.0), abs=1e-4)


def test_ssim_matches_scikit_image_on_structured_images() -> None:
    astronaut = torch.from_numpy(skimage.data.astronaut()[100:164, 180:244]).permute(2, 0, 1).double() / 127.5 - 1
    camera = torch.from_numpy(skimage.data.camera()[200:248, 200:260]).double()[None] / 255.0
    for image, data_range in ((astronaut[None], 2.0), (camera[None], 1.0)):
        blurred = _gaussian_blur(image, 1.0)
        assert ssim(image, blurred, data_range).tolist() == pytest.approx(
            _skimage_ssim(image, blurred, data_range), abs=1e-4
        )


def test_reconstruction_bad_shapes_and_rates() -> None:
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"expected both image batches of shape \(2, 1, 16, 16\), got \(2, 1, 8, 8\)"):
        psnr(x, x[..., :8, :8])
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    assert bits_per_pixel(1024, 256) == 4.0
    assert compression_ratio(8 * 32 * 32 * 3, 384) == 64.0
    with pytest.raises(ValueError, match="positive number of pixels"):
        bits_per_pixel(10, 0)
