"""Improved precision and recall (Kynkaanniemi et al. 2019) on k-NN manifolds of features.

    r_k(phi)     distance from phi to its k-th nearest neighbour within its own set (itself excluded)
    f(phi, Phi)  = 1 if ||phi - phi'|| <= r_k(phi') for some phi' in Phi, else 0
    precision    = 1/|Phi_g| sum_{phi_g in Phi_g} f(phi_g, Phi_r)      fakes inside the real manifold
    recall       = 1/|Phi_r| sum_{phi_r in Phi_r} f(phi_r, Phi_g)      reals inside the fake manifold

Phi_r are real features, Phi_g generated (fake) features. Pairwise distances are computed in float64
with ``torch.cdist`` in row blocks of ``batch_size``, so memory is O(batch_size * N), never N^2.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["precision_recall", "knn_radii"]


def _as_features(x: np.ndarray | Tensor, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach().to("cpu", torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"expected {name} features of shape (N, D), got {tuple(t.shape)}")
    return t


def knn_radii(features: Tensor, k: int, batch_size: int) -> Tensor:
    """r_k for every row of features (N, D) -> (N,), the k-th neighbour distance excluding itself."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"expected 1 <= k < number of samples ({n}), got k={k}")
    radii = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, batch_size):
        block = torch.cdist(features[start : start + batch_size], features)  # (B, N)
        radii[start : start + batch_size] = block.kthvalue(k + 1, dim=1).values  # k+1: the zero self-distance
    return radii


def _manifold_membership(
    fake: Tensor, real: Tensor, radii_fake: Tensor, radii_real: Tensor, batch_size: int
) -> tuple[Tensor, Tensor]:
    """f(phi_g, Phi_r) for every fake (N_g,) and f(phi_r, Phi_g) for every real (N_r,), one pass."""
    fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool)
    real_inside = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, fake.shape[0], batch_size):
        dist = torch.cdist(fake[start : start + batch_size], real)  # (B, N_r)
        fake_inside[start : start + batch_size] = (dist <= radii_real[None, :]).any(dim=1)
        real_inside |= (dist <= radii_fake[start : start + batch_size, None]).any(dim=0)
    return fake_inside, real_inside


def precision_recall(
    real: np.ndarray | Tensor,
    fake: np.ndarray | Tensor,
    *,
    k: int = 3,              # neighbourhood size of the manifold estimate (the paper uses 3)
    batch_size: int = 1024,  # rows per cdist block
) -> tuple[float, float]:
    """(precision, recall) of fake features (N_g, D) against real features (N_r, D)."""
    real_t, fake_t = _as_features(real, "real"), _as_features(fake, "fake")
    if real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"expected features of dimension {real_t.shape[1]}, got {fake_t.shape[1]}")
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    radii_real = knn_radii(real_t, k, batch_size)
    radii_fake = knn_radii(fake_t, k, batch_size)
    fake_inside, real_inside = _manifold_membership(fake_t, real_t, radii_fake, radii_real, batch_size)
    return float(fake_inside.double().mean()), float(real_inside.double().mean())
