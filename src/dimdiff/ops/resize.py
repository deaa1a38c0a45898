"""2x downsampling operators M and their exact adjoints M^T, for scale-space diffusion (a forward process that
also downsamples: x_t = alpha_t M_{0:t} x0 + sigma_t eps).

For images x of shape (B, C, H, W), any channel count and batch:

    down(x, kind)        = M x        (B, C, H/2, W/2)
    down_adjoint(y, kind) = M^T y     (B, C, 2h, 2w)      <M x, y> = <x, M^T y> exactly
    down(x, kind, levels=k) = M_{0:k} x, the 2x resizes chained one level at a time (64 -> 32 -> 16 ...),
    and down_adjoint(y, kind, levels=k) = M_{0:k}^T y, its adjoint; a product of resizes for a step that
    spans several levels is the same chain.

Kinds (`Resize`), both separable (M = A_H (x) A_W with a 1-D matrix A_n of shape (n/2, n)) and with rows
that sum to 1 (a constant image stays that constant):
    area      the 2x2 average: A_n[i, 2i] = A_n[i, 2i+1] = 1/2. M M^T = I / 4, M^T M = Pi / 4 with Pi the
              projector onto 2x2 block-constant images; M^T = nearest upsampling divided by 4.
    bilinear  antialiased bilinear (a triangle filter stretched to the 2x footprint, the weights 1/8, 3/8,
              3/8, 1/8 inside the image, renormalised at the border): torch's
              ``interpolate(mode="bilinear", antialias=True, scale_factor=0.5)``, whose 1-D matrix is read
              off the operator itself (pushing the identity through it), so M is exactly that operator and
              M^T is its transpose. The largest eigenvalue of M M^T is about 0.25.
"""

from __future__ import annotations

import enum
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Resize", "down", "down_adjoint", "down_matrix_1d"]


class Resize(str, enum.Enum):
    AREA = "area"  # 2x2 average pooling
    BILINEAR = "bilinear"  # antialiased bilinear


@functools.cache
def _matrix_1d(kind: Resize, n: int) -> Tensor:
    """A_n (n/2, n), float64 on the CPU."""
    if kind is Resize.AREA:
        return torch.kron(torch.eye(n // 2, dtype=torch.float64), torch.full((1, 2), 0.5, dtype=torch.float64))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)  # row i: the unit image e_i, 1 x n
    out = F.interpolate(basis, size=(1, n // 2), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(n, n // 2).T.contiguous()  # column i = A e_i


@functools.cache
def _chain_1d(kind: Resize, n: int, levels: int) -> Tensor:
    """A_{n / 2^(levels-1)} ... A_{n / 2} A_n (n / 2^levels, n), float64 on the CPU."""
    matrix = torch.eye(n, dtype=torch.float64)
    for level in range(levels):
        matrix = _matrix_1d(kind, n >> level) @ matrix
    return matrix


def down_matrix_1d(kind: Resize, n: int, *, levels: int = 1, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> Tensor:  # fmt: skip
    """The 1-D matrix (n / 2^levels, n) of ``levels`` chained 2x resizes of ``kind`` (A_n for one level);
    M_{0:levels} = A_H (x) A_W on (H, W) images."""
    if levels < 1 or n < 2**levels or n % 2**levels:
        raise ValueError(f"expected a size divisible by 2^levels = {2 ** max(levels, 0)} (levels >= 1) to halve "
                         f"{levels} time(s), got size {n}")  # fmt: skip
    return _chain_1d(Resize(kind), n, levels).to(dtype=dtype, device=device)


def _check(x: Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected {what} of shape (B, C, H, W), got {tuple(x.shape)}")


def _down_once(x: Tensor, kind: Resize) -> Tensor:
    _check(x, "images")
    H, W = x.shape[-2:]
    if H % 2 or W % 2:
        raise ValueError(f"expected an even height and width to halve, got {H}x{W}")
    if kind is Resize.AREA:
        return F.avg_pool2d(x, 2)  # (B, C, H/2, W/2)
    a_h, a_w = (down_matrix_1d(kind, n, dtype=x.dtype, device=x.device) for n in (H, W))
    return torch.einsum("ih,bchw,jw->bcij", a_h, x, a_w).contiguous()  # (B, C, H/2, W/2)


def _adjoint_once(y: Tensor, kind: Resize) -> Tensor:
    _check(y, "low-resolution images")
    h, w = y.shape[-2:]
    if kind is Resize.AREA:
        return y.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1) * 0.25  # (B, C, 2h, 2w)
    a_h, a_w = (down_matrix_1d(kind, 2 * n, dtype=y.dtype, device=y.device) for n in (h, w))
    return torch.einsum("ih,bcij,jw->bchw", a_h, y, a_w).contiguous()  # (B, C, 2h, 2w)


def down(x: Tensor, kind: Resize, levels: int = 1) -> Tensor:
    """M_{0:levels} x: ``levels`` 2x downsamplings of x (B, C, H, W), one level at a time; levels = 0: x."""
    for _ in range(_levels(levels)):
        x = _down_once(x, Resize(kind))
    return x


def down_adjoint(y: Tensor, kind: Resize, levels: int = 1) -> Tensor:
    """M_{0:levels}^T y: the adjoint of `down` (the adjoints of the single steps in reverse order)."""
    for _ in range(_levels(levels)):
        y = _adjoint_once(y, Resize(kind))
    return y


def _levels(levels: int) -> int:
    if levels < 0:
        raise ValueError(f"expected levels >= 0, got {levels}")
    return levels
