"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

    k(x, y) = (x . y / d + 1)^3                                  cubic polynomial kernel, d = feature dimension
    MMD_u^2 = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i, j} k(x_i, y_j)

x_i are real features, y_j fake features, m the subset size. The unbiased estimate is averaged over
``num_subsets`` random subsets, each drawn without replacement from both sets; it can be slightly
negative when the two distributions agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kernel_inception_distance", "polynomial_mmd2_unbiased"]


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """K_ij = (x_i . y_j / d + 1)^3 for x (m, d), y (n, d) -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples x (m, d) and y (m, d) with the cubic kernel."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def _check_features(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    for name, x in (("real", real), ("fake", fake)):
        if x.ndim != 2:
            raise ValueError(f"expected {name} features of shape (N, D), got {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"expected at least 2 {name} feature vectors, got {x.shape[0]}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected features of dimension {real.shape[1]}, got {fake.shape[1]}")
    return real, fake


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_subsets: int = 100,   # number of random subsets the estimate is averaged over
    subset_size: int = 1000,  # m; clipped to min(N_real, N_fake)
    seed: int = 0,            # seeds numpy's default_rng for the subset draws
) -> tuple[float, float]:
    """KID of features real (N_r, d) and fake (N_f, d): (mean, std) of MMD_u^2 over subsets.

    The std is the population std (ddof=0) over the subsets, as torch-fidelity reports it.
    """
    real, fake = _check_features(real, fake)
    if num_subsets < 1:
        raise ValueError(f"expected num_subsets >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"expected subset_size >= 2, got {subset_size}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets, dtype=np.float64)
    for s in range(num_subsets):
        x = real[rng.choice(real.shape[0], m, replace=False)]
        y = fake[rng.choice(fake.shape[0], m, replace=False)]
        mmds[s] = polynomial_mmd2_unbiased(x, y)
    return float(mmds.mean()), float(mmds.std())
