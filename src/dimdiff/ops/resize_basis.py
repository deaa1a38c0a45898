"""Coordinates in which a step of scale-space diffusion across a resolution change is a Gaussian step per
direction.

M = M_{k:k+j} (j chained 2x downsamplings, `ops.resize`) is separable, M = A_H (x) A_W, with the 1-D
matrix A_n of shape (m, n), m = n / 2^j, of full row rank. Its singular value decomposition
A_n = U_n diag(s_n) V_n^T (V_n's first m columns span the row space) gives

    M = U diag(g) V_s^T,   U = U_H (x) U_W,  g = s_H (x) s_W  (m_h x m_w gains),  V_s = V_H,s (x) V_W,s.

In the coordinates c = V_s^T x of a fine image and y = U^T x_t of a coarse one, the transition
x_t = r M x_s + noise reads y_i = r g_i c_i + noise per direction: direction i is a scalar Gaussian signal of
gain alpha_t g_i at t and alpha_s at s, and the directions M cannot see, (I - V_s V_s^T) x, carry nothing
of x_t. The posterior covariance sigma_s^2 (I - rho c^2 M^T M) of SSD is diagonal here, so its square root
is exact and costs four small matrix products.

Area (the 2x2 average): the rows of A_n are orthogonal with norm 2^(-j/2), so every gain is 2^-j, U = I
and V_s^T = D_j, orthonormal pooling (`ops.pool`): the coordinates are pooling itself (`PoolBasis`, no
matrix). Other kinds (antialiased bilinear) take the decomposition (`SeparableBasis`), computed once per
(kind, levels, size) in float64.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from dimdiff.ops.pool import pool, project_complement, unpool
from dimdiff.ops.resize import Resize, down_matrix_1d

__all__ = ["PoolBasis", "ResizeBasis", "SeparableBasis", "resize_basis"]


class ResizeBasis(Protocol):
    """The singular coordinates of M for fine images (B, C, H, W) and coarse ones (B, C, h, w)."""

    @property
    def gain(self) -> float | Tensor:
        """g: the singular values of M, one number where they are all equal, else (h, w) float64."""
        ...

    def seen(self, x: Tensor) -> Tensor:
        """V_s^T x: a fine image's coordinates along M's row space (B, C, h, w)."""
        ...

    def from_seen(self, c: Tensor) -> Tensor:
        """V_s c: the fine image (B, C, H, W) with those coordinates and nothing unseen."""
        ...

    def observed(self, y: Tensor) -> Tensor:
        """U^T y: a coarse image's coordinates (B, C, h, w)."""
        ...

    def from_observed(self, c: Tensor) -> Tensor:
        """U c: the coarse image with those coordinates."""
        ...

    def unseen(self, x: Tensor) -> Tensor:
        """(I - V_s V_s^T) x: the part of a fine image that M maps to 0."""
        ...


@dataclass(frozen=True)
class PoolBasis:
    """Area downsampling over ``levels`` levels: V_s^T = D_j, U = I, every gain 2^-j."""

    levels: int

    @property
    def gain(self) -> float:
        return 2.0**-self.levels

    def seen(self, x: Tensor) -> Tensor:
        return pool(x, self.levels)

    def from_seen(self, c: Tensor) -> Tensor:
        return unpool(c, self.levels)

    def observed(self, y: Tensor) -> Tensor:
        return y

    def from_observed(self, c: Tensor) -> Tensor:
        return c

    def unseen(self, x: Tensor) -> Tensor:
        return project_complement(x, self.levels)


@dataclass(frozen=True)
class SeparableBasis:
    """The singular coordinates of M = A_H (x) A_W from the SVDs of the two 1-D matrices (float64, CPU)."""

    u_h: Tensor  # (h, h) left singular vectors of A_H
    v_h: Tensor  # (H, h) its right singular vectors spanning the row space
    u_w: Tensor  # (w, w)
    v_w: Tensor  # (W, w)
    gains: Tensor  # (h, w) s_H (x) s_W

    @classmethod
    def of(cls, kind: Resize, levels: int, size: tuple[int, int]) -> SeparableBasis:
        (u_h, s_h, v_h), (u_w, s_w, v_w) = (_svd(kind, levels, n) for n in size)
        return cls(u_h, v_h, u_w, v_w, torch.outer(s_h, s_w))

    @property
    def gain(self) -> Tensor:
        return self.gains

    def seen(self, x: Tensor) -> Tensor:
        return _sandwich(self.v_h, x, self.v_w, transpose=True)  # (B, C, h, w)

    def from_seen(self, c: Tensor) -> Tensor:
        return _sandwich(self.v_h, c, self.v_w, transpose=False)  # (B, C, H, W)

    def observed(self, y: Tensor) -> Tensor:
        return _sandwich(self.u_h, y, self.u_w, transpose=True)  # (B, C, h, w)

    def from_observed(self, c: Tensor) -> Tensor:
        return _sandwich(self.u_h, c, self.u_w, transpose=False)  # (B, C, h, w)

    def unseen(self, x: Tensor) -> Tensor:
        return x - self.from_seen(self.seen(x))


def _sandwich(left: Tensor, x: Tensor, right: Tensor, *, transpose: bool) -> Tensor:
    """left^T x right (transpose) or left x right^T, on the last two axes of x (B, C, ., .), contiguous."""
    left, right = _converted(left, x.dtype, x.device), _converted(right, x.dtype, x.device)
    pattern = "ai,zcab,bj->zcij" if transpose else "ia,zcab,jb->zcij"
    return torch.einsum(pattern, left, x, right).contiguous()


@functools.lru_cache(maxsize=256)
def _converted(matrix: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached basis matrix in x's dtype on x's device (bases live as long as `resize_basis`'s cache, so a
    matrix's identity is a stable key): no copy per step."""
    return matrix.to(dtype=dtype, device=device)


@functools.cache
def _svd(kind: Resize, levels: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """(U (m, m), s (m,), V_s (n, m)) of the chained 1-D matrix (m, n), float64."""
    u, s, vh = torch.linalg.svd(down_matrix_1d(kind, n, levels=levels), full_matrices=False)
    return u, s, vh.T.contiguous()


@functools.cache
def resize_basis(kind: Resize, levels: int, size: tuple[int, int]) -> ResizeBasis:
    """The singular coordinates of ``levels`` chained 2x resizes of ``kind`` on (H, W) = ``size`` images."""
    if levels < 1:
        raise ValueError(f"expected levels >= 1, got {levels}")
    if Resize(kind) is Resize.AREA:
        return PoolBasis(levels)
    return SeparableBasis.of(Resize(kind), levels, size)
