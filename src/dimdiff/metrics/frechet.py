"""Frechet distance between Gaussians fitted to features (FID when the features are Inception pool3).

    FD = |mu_1 - mu_2|^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^(1/2))

(Heusel et al. 2017; Dowson & Landau 1982). ``mu`` is the feature mean and ``Sigma`` the feature
covariance (rowvar=False, ddof=1). Everything is float64.

``frechet_distance`` is the standard recipe (pytorch-fid / TTUR): ``scipy.linalg.sqrtm`` of the
product; when that is not finite (a singular product), ``eps * I`` is added to both covariances and
the root is taken again; a negligible imaginary part of the root is dropped, a large one is an
error. ``frechet_distance_eig`` computes the same trace from the symmetric matrix
``Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2)`` (same eigenvalues as ``Sigma_1 Sigma_2``), which is better
conditioned and never complex.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_eig",
    "frechet_distance_from_features",
]

IMAGINARY_TOLERANCE = 1e-3  # largest |Im| on the diagonal of sqrtm(Sigma_1 Sigma_2) that is dropped silently


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean mu (D,) and covariance Sigma (D, D) of features (N, D), float64, ddof=1."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"expected at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def _check_statistics(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cast to float64 and check shapes: mu_i (D,), Sigma_i (D, D), one D for both."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1:
        raise ValueError(f"expected mu1 of shape (D,), got {mu1.shape}")
    d = mu1.shape[0]
    if mu2.ndim != 1:
        raise ValueError(f"expected mu2 of shape (D,), got {mu2.shape}")
    if mu2.shape[0] != d:
        raise ValueError(f"expected features of dimension {d} (mu1), got {mu2.shape[0]} (mu2)")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"expected {name} of shape ({d}, {d}) for features of dimension {d}, got {sigma.shape}")
    return mu1, sigma1, mu2, sigma2


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """tr((Sigma_1 Sigma_2)^(1/2)) by scipy.linalg.sqrtm, with the eps * I fallback."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(sigma1.shape[0])
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(covmean).all():
        raise ValueError(f"matrix square root is not finite even with eps={eps} added to the covariances")
    if np.iscomplexobj(covmean):
        imaginary = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imaginary > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"matrix square root has a large imaginary component {imaginary:.3g} "
                f"(tolerance {IMAGINARY_TOLERANCE}); the covariances may be degenerate"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; round-off negative eigenvalues are clipped to 0."""
    eigval, eigvec = np.linalg.eigh((sigma + sigma.T) / 2)
    return (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T


def _trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((Sigma_1 Sigma_2)^(1/2)) = sum_i sqrt(lambda_i(Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2)))."""
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigval = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigval, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """FD between N(mu_1, Sigma_1) and N(mu_2, Sigma_2) by scipy.linalg.sqrtm (the FID recipe)."""
    mu1, sigma1, mu2, sigma2 = _check_statistics(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_eig(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FD between N(mu_1, Sigma_1) and N(mu_2, Sigma_2) by the symmetric eigenvalue form."""
    mu1, sigma1, mu2, sigma2 = _check_statistics(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product_eig(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """FD between Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    a, b = np.asarray(features_a), np.asarray(features_b)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features of dimension {a.shape[1]}, got {b.shape[1]}")
    mu1, sigma1 = feature_statistics(a)
    mu2, sigma2 = feature_statistics(b)
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
