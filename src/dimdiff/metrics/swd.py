"""Multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, appendix D).

For each image set:

    G_0 = x,  G_{l+1} = down(G_l)                      Gaussian pyramid; down = blur by the 5x5 binomial
                                                         filter w = [1, 4, 6, 4, 1]^T [1, 4, 6, 4, 1] / 256,
                                                         then keep every second row and column
    L_l = G_l - up(G_{l+1}) for l < L - 1,  L_{L-1} = G_{L-1}
                                                       Laplacian pyramid; up = insert zeros, blur by 4 w
    descriptors: ``patches_per_image`` random ``patch_size`` x ``patch_size`` patches of every image
                 per level, normalised per channel by the mean and std of that set's patches at that
                 level (each set by its own statistics, as in Karras' ``sliced_wasserstein.py``)

and per level, with the two descriptor sets A and B of equal size M (the larger one subsampled):

    SWD_l = 1/R sum_r 1/P sum_{theta} 1/M sum_i |sort(A theta)_i - sort(B theta)_i|

over R = ``num_repeats`` repeats of P = ``num_projections`` random unit directions theta. The finest
level has the image resolution; the coarsest is the smallest Gaussian level at or above
``min_resolution``. Padding is reflection without edge repeat (scipy's ``mirror``, torch's ``reflect``).

Reported values are multiplied by 1e3, like Karras' metric code and the tables of the paper. Because
each set is normalised by its own patch statistics, a global change of contrast or brightness is not
measured; the scale of the input images does not matter.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SWD_MEAN_KEY", "SWD_SCALE_PREFIX", "laplacian_pyramid", "pyramid_resolutions",
           "sliced_wasserstein_distance", "swd_scale_key"]  # fmt: skip

SWD_SCALE = 1e3  # reported SWD = 1e3 * distance between normalised descriptors (Karras et al. 2018)
SWD_MEAN_KEY = "swd_mean"  # the result key of the average over the pyramid's levels
SWD_SCALE_PREFIX = "swd_"  # the result key of one level is this prefix and its resolution: swd_32


def swd_scale_key(resolution: int) -> str:
    """The result key of the pyramid level at ``resolution`` px: swd_32, swd_16, ..."""
    return f"{SWD_SCALE_PREFIX}{resolution}"


def _binomial_blur(x: Tensor) -> Tensor:
    """Depthwise 5x5 binomial blur with mirror padding, (B, C, H, W) -> (B, C, H, W)."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 5, 5)  # (C, 1, 5, 5)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")  # (B, C, H+4, W+4)
    return F.conv2d(padded, kernel, groups=x.shape[1])


def _pyramid_down(x: Tensor) -> Tensor:
    return _binomial_blur(x)[..., ::2, ::2]  # (B, C, H/2, W/2)


def _pyramid_up(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    up = torch.zeros(b, c, 2 * h, 2 * w, dtype=x.dtype, device=x.device)  # zero insertion
    up[..., ::2, ::2] = x
    return 4.0 * _binomial_blur(up)  # x4 restores the mean lost to the zeros


def pyramid_resolutions(resolution: int, min_resolution: int) -> list[int]:
    """Level resolutions, finest first: resolution, resolution / 2, ... while >= min_resolution."""
    if resolution < min_resolution:
        raise ValueError(f"expected images of at least {min_resolution} px (min_resolution), got {resolution}")
    resolutions = [resolution]
    while resolutions[-1] % 2 == 0 and resolutions[-1] // 2 >= min_resolution:
        resolutions.append(resolutions[-1] // 2)
    return resolutions


def laplacian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    """[L_0, ..., L_{num_levels-1}] finest first; the last level is the coarsest Gaussian level."""
    levels, gaussian = [], images
    for _ in range(num_levels - 1):
        smaller = _pyramid_down(gaussian)
        levels.append(gaussian - _pyramid_up(smaller))
        gaussian = smaller
    levels.append(gaussian)
    return levels


def _random_patches(level: Tensor, patches_per_image: int, patch_size: int, generator: torch.Generator) -> Tensor:
    """``patches_per_image`` uniform random patches per image, (N, C, S, S) -> (N * P, C, p, p)."""
    n, _, height, width = level.shape
    image = torch.arange(n).repeat_interleave(patches_per_image)  # (N * P,)
    top = torch.randint(0, height - patch_size + 1, (n * patches_per_image,), generator=generator)
    left = torch.randint(0, width - patch_size + 1, (n * patches_per_image,), generator=generator)
    offsets = torch.arange(patch_size)
    rows = (top[:, None] + offsets)[:, :, None]  # (N * P, p, 1)
    cols = (left[:, None] + offsets)[:, None, :]  # (N * P, 1, p)
    patches = level[image[:, None, None], :, rows, cols]  # (N * P, p, p, C)
    return patches.permute(0, 3, 1, 2)  # (N * P, C, p, p)


def _normalised_descriptors(patches: Tensor) -> Tensor:
    """Per-channel standardisation over all patches and pixels (float64 statistics), flattened."""
    stats = patches.double()
    mean = stats.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = stats.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-12)  # (1, C, 1, 1)
    return ((stats - mean) / std).float().flatten(1)  # (M, C * p * p)


def _pyramid_descriptors(
    images: Tensor, num_levels: int, patches_per_image: int, patch_size: int, generator: torch.Generator
) -> list[Tensor]:
    """Normalised patch descriptors of every Laplacian level, finest first: [(N * P, C * p * p), ...]."""
    levels = laplacian_pyramid(images.detach().to("cpu", torch.float32), num_levels)  # computed on the CPU
    return [_normalised_descriptors(_random_patches(lv, patches_per_image, patch_size, generator)) for lv in levels]


def _equal_counts(a: Tensor, b: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Subsample the larger descriptor set without replacement to the size of the smaller."""
    m = min(a.shape[0], b.shape[0])
    if a.shape[0] > m:
        a = a[torch.randperm(a.shape[0], generator=generator)[:m]]
    if b.shape[0] > m:
        b = b[torch.randperm(b.shape[0], generator=generator)[:m]]
    return a, b


def _sorted_projections(x: Tensor, theta: Tensor) -> np.ndarray:
    """sort(x theta) per direction, x (M, D), theta (D, P) -> (P, M); numpy's sort is ~20x torch's on CPU."""
    return np.sort((theta.T @ x.T).numpy(), axis=1)


def _sliced_wasserstein(
    a: Tensor, b: Tensor, num_projections: int, num_repeats: int, generator: torch.Generator
) -> float:
    """Mean over repeats and directions of the 1-D W1 between projections of a (M, D) and b (M, D)."""
    distances = []
    for _ in range(num_repeats):
        theta = torch.randn(a.shape[1], num_projections, generator=generator)  # (D, P)
        theta = theta / theta.norm(dim=0, keepdim=True)
        proj_a, proj_b = _sorted_projections(a, theta), _sorted_projections(b, theta)  # (P, M) each
        distances.append(np.abs(proj_a - proj_b).mean(dtype=np.float64))
    return float(np.mean(distances))


def _check_images(images_a: Tensor, images_b: Tensor, min_resolution: int, patch_size: int) -> None:
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        if x.ndim != 4:
            raise ValueError(f"expected {name} of shape (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[2] != x.shape[3]:
            raise ValueError(f"expected square {name}, got H x W = {x.shape[2]} x {x.shape[3]}")
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"expected images_b of shape (N, {', '.join(map(str, images_a.shape[1:]))}), "
                         f"got {tuple(images_b.shape)}")
    if min_resolution < patch_size:
        raise ValueError(f"expected min_resolution >= patch_size ({patch_size}), got {min_resolution}")


def sliced_wasserstein_distance(
    images_a: Tensor,
    images_b: Tensor,
    *,
    min_resolution: int = 8,      # coarsest pyramid level (Karras used 16)
    patches_per_image: int = 64,  # random patches per image per level (Karras: 128)
    patch_size: int = 7,          # patches are patch_size x patch_size (Karras: 7)
    num_projections: int = 128,   # random directions per repeat (Karras: 128)
    num_repeats: int = 4,         # repeats averaged (Karras: 4)
    seed: int = 0,                # one torch.Generator: patches of a, patches of b, subsampling, directions
) -> dict[str, float]:
    """Multi-scale SWD (x 1e3) between image sets (N_a, C, H, W) and (N_b, C, H, W).

    Returns ``{"swd_<res>": ...}`` for each level, finest first (e.g. swd_32, swd_16, swd_8), and
    ``"swd_mean"``, their average.
    """
    _check_images(images_a, images_b, min_resolution, patch_size)
    resolutions = pyramid_resolutions(images_a.shape[-1], min_resolution)
    generator = torch.Generator().manual_seed(seed)
    desc_a = _pyramid_descriptors(images_a, len(resolutions), patches_per_image, patch_size, generator)
    desc_b = _pyramid_descriptors(images_b, len(resolutions), patches_per_image, patch_size, generator)
    result: dict[str, float] = {}
    for resolution, a, b in zip(resolutions, desc_a, desc_b, strict=True):
        a, b = _equal_counts(a, b, generator)
        result[swd_scale_key(resolution)] = SWD_SCALE * _sliced_wasserstein(a, b, num_projections, num_repeats,
                                                                             generator)  # fmt: skip
    result[SWD_MEAN_KEY] = sum(result.values()) / len(resolutions)
    return result
