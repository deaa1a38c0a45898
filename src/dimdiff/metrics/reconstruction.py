"""Reconstruction metrics for codecs: PSNR, SSIM, bits per pixel, compression ratio.

    PSNR(x, y) = 10 log10(R^2 / MSE(x, y))                     R = data_range (2 for images in [-1, 1])
    SSIM(x, y) = mean over valid window positions and channels of
                 (2 mu_x mu_y + C_1)(2 sigma_xy + C_2) / ((mu_x^2 + mu_y^2 + C_1)(sigma_x^2 + sigma_y^2 + C_2))
                 C_1 = (K_1 R)^2, C_2 = (K_2 R)^2, K_1 = 0.01, K_2 = 0.03      (Wang et al. 2004)

mu, sigma^2, sigma_xy are local moments under a normalised Gaussian window (``window`` taps,
std ``sigma``), population (not sample) covariances, evaluated only where the window fits inside
the image (valid convolution). This equals ``skimage.metrics.structural_similarity(x, y,
gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=R)`` when
``window == 2 * int(3.5 * sigma + 0.5) + 1`` (11 for the default sigma 1.5). All results are float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bits_per_pixel", "compression_ratio", "psnr", "ssim"]

K1, K2 = 0.01, 0.03  # SSIM stabilising constants (Wang et al. 2004)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"expected both image batches of shape {tuple(x.shape)}, got {tuple(y.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """PSNR in dB per image of (B, C, H, W) batches -> (B,); identical images give inf."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(window: int, sigma: float, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian of ``window`` taps, float64."""
    offsets = torch.arange(window, dtype=torch.float64, device=device) - (window - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _local_mean(x: Tensor, taps: Tensor) -> Tensor:
    """Separable valid Gaussian filtering per channel, (B, C, H, W) -> (B, C, H-w+1, W-w+1)."""
    channels = x.shape[1]
    rows = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)  # (C, 1, w, 1)
    cols = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)  # (C, 1, 1, w)
    return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)


def ssim(x: Tensor, y: Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Gaussian-window SSIM per image of (B, C, H, W) batches -> (B,), averaged over channels."""
    _check_pair(x, y)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"expected an odd positive window, got {window}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"expected images of at least {window} x {window} px (window), got {tuple(x.shape[-2:])}")
    taps = _gaussian_window(window, sigma, x.device)
    x, y = x.double(), y.double()
    mu_x, mu_y = _local_mean(x, taps), _local_mean(y, taps)
    var_x = _local_mean(x * x, taps) - mu_x**2  # sigma_x^2
    var_y = _local_mean(y * y, taps) - mu_y**2  # sigma_y^2
    cov_xy = _local_mean(x * y, taps) - mu_x * mu_y  # sigma_xy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3))


def bits_per_pixel(num_bits: float, num_pixels: int) -> float:
    """Code length per pixel: num_bits / num_pixels (usually pixels = N * H * W, channels not counted)."""
    if num_pixels <= 0:
        raise ValueError(f"expected a positive number of pixels, got {num_pixels}")
    if num_bits < 0:
        raise ValueError(f"expected a non-negative number of bits, got {num_bits}")
    return num_bits / num_pixels


def compression_ratio(original_bits: float, compressed_bits: float) -> float:
    """original_bits / compressed_bits (e.g. 8 bits x pixels x channels over the code length)."""
    if compressed_bits <= 0 or not math.isfinite(compressed_bits):
        raise ValueError(f"expected a positive finite compressed size in bits, got {compressed_bits}")
    if original_bits < 0:
        raise ValueError(f"expected a non-negative original size in bits, got {original_bits}")
    return original_bits / compressed_bits
