"""Orthonormal 2x2 pooling and the DVDP orthogonal decomposition (docs/dvdp.md sections 1, 2, 9).

For images x of shape (B, C, H, W) and s = 2^k:

    D_k x  = pool(x, k)       each output pixel = (sum of its s x s block) / s   (= s x average pool)
    U_k z  = unpool(z, k)     = D_k^T z: copy each value into its s x s block, divide by s
    P_k x  = project(x, k)    = U_k D_k x, the orthogonal projector onto block-constant images; P_0 = I
    P_k^perp x                = project_complement(x, k) = (I - P_k) x

Properties: D_k U_k = I; P_k is symmetric and idempotent; nested, P_{k+1} P_k = P_k P_{k+1} = P_{k+1};
white noise stays white under D_k (plain average pooling shrinks its variance by 4^k), so
low-resolution data values are 2^k times the average-pooled pixels.

Components, all at the resolution of x (c_0 finest detail, c_K coarse image):

    c_j(x) = (P_j - P_{j+1}) x    for j = 0..K-1,      c_K(x) = P_K x

They are mutually orthogonal and sum to x, so |x|^2 = sum_j |c_j(x)|^2 (Parseval).

Recursive structure: for z = D_k x the decomposition of z is the tail of that of x,

    D_k c_j(x) = c_{j-k}(D_k x)  for j >= k (with K - k levels),   D_k c_j(x) = 0  for j < k,

which is what ``components_low`` relies on once DVDP has dropped the k finest components.
A weighted sum of components, sum_j w_j c_j(x), never needs the components themselves: with
P_0 = I it is w_0 x + sum_{j>=1} (w_j - w_{j-1}) P_j x (``mix_components``).

Everything is pooling and reshapes; no dense matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from dimdiff.ops.combine import is_zero, linear_combination

__all__ = [
    "pool",
    "unpool",
    "project",
    "project_complement",
    "components",
    "component",
    "components_low",
    "mix_components",
    "OrthonormalPool",
]


def _block(x: Tensor, k: int) -> int:
    """Validate (B, C, H, W) input and level k; return the block side s = 2^k."""
    if k < 0:
        raise ValueError(f"expected a level k >= 0, got {k}")
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    return 2**k


def _check(x: Tensor, k: int) -> int:
    """As ``_block``, and H, W must be divisible by s = 2^k."""
    s = _block(x, k)
    if x.shape[-2] % s or x.shape[-1] % s:
        raise ValueError(f"expected H and W divisible by 2^{k} = {s}, got H x W = {x.shape[-2]} x {x.shape[-1]}")
    return s


def pool(x: Tensor, k: int = 1) -> Tensor:
    """D_k: (B, C, H, W) -> (B, C, H/2^k, W/2^k), block sums divided by 2^k."""
    s = _check(x, k)
    if s == 1:
        return x
    # s x the block mean: avg_pool2d is 2-4x faster on CPU than summing a (B, C, H/s, s, W/s, s) view
    return F.avg_pool2d(x, s) * s  # (B, C, H/s, W/s)


def unpool(z: Tensor, k: int = 1) -> Tensor:
    """U_k = D_k^T: (B, C, h, w) -> (B, C, 2^k h, 2^k w), each value copied into its block and divided by 2^k."""
    s = _block(z, k)
    b, c, h, w = z.shape
    scaled = (z / s)[:, :, :, None, :, None]  # (B, C, h, 1, w, 1)
    return scaled.expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)  # (B, C, s h, s w)


def project(x: Tensor, k: int) -> Tensor:
    """P_k = U_k D_k (average-pool then nearest-upsample over 2^k x 2^k blocks), same shape as x."""
    return unpool(pool(x, k), k)  # (B, C, H, W)


def project_complement(x: Tensor, k: int) -> Tensor:
    """(I - P_k) x, the within-block detail, same shape as x."""
    return x - project(x, k)  # (B, C, H, W)


def _detail(z_j: Tensor, j: int) -> Tensor:
    """c_j at full resolution from z_j = D_j x: U_j (I - P_1) z_j."""
    return unpool(project_complement(z_j, 1), j)  # (B, C, 2^j h, 2^j w)


def components(x: Tensor, K: int) -> list[Tensor]:
    """[c_0(x), ..., c_K(x)], each (B, C, H, W); one pass of successive pooling z_{j+1} = D_1 z_j."""
    _check(x, K)
    out = []
    z_j = x  # (B, C, H, W), z_0 = D_0 x
    for j in range(K):
        out.append(_detail(z_j, j))  # (B, C, H, W)
        z_j = pool(z_j, 1)  # (B, C, H/2^(j+1), W/2^(j+1))
    out.append(unpool(z_j, K))  # (B, C, H, W), c_K = P_K x
    return out


def component(x: Tensor, j: int, K: int) -> Tensor:
    """c_j(x) of the K-level decomposition, (B, C, H, W)."""
    _check(x, K)
    if not 0 <= j <= K:
        raise ValueError(f"expected component index j in [0, {K}], got {j}")
    if j == K:
        return project(x, K)  # (B, C, H, W)
    return _detail(pool(x, j), j)  # (B, C, H, W)


def components_low(z: Tensor, K_low: int) -> list[Tensor]:
    """Components of a low-resolution state z = D_k x with K_low = K - k levels, each at z's resolution.

    By the recursive structure, ``components_low(pool(x, k), K - k)[i] == pool(components(x, K)[i + k], k)``:
    the surviving components of x, expressed in reduced (orthonormal) coordinates.
    """
    return components(z, K_low)


def mix_components(terms: Sequence[tuple[Tensor, Sequence[Tensor]]], levels: int) -> Tensor:
    """sum over (x, w) in ``terms`` of sum_{j=0..levels} w[j] c_j(x), without forming the components.

    Each x is (B, C, H, W) (all the same shape) and w[j] a coefficient of shape () or (B,). With
    d_j = w_j - w_{j-1}, the sum is  sum_m w_m0 x_m + U(y_1 + U(y_2 + ... U(y_K))),
    y_j = sum_m d_mj D_j x_m  at resolution H / 2^j, so full-resolution work is one combination,
    one pooling per term and one unpooling. Levels whose differences are all exactly 0 are skipped;
    if all are, the result is ``linear_combination`` of the w_0 terms, bit for bit.
    """
    if any(len(w) != levels + 1 for _, w in terms):
        raise ValueError(f"expected {levels + 1} coefficients per term (components c_0..c_{levels}), "
                         f"got {[len(w) for _, w in terms]}")  # fmt: skip
    result = linear_combination([(x, w[0]) for x, w in terms])
    diffs = [[(m, w[j] - w[j - 1]) for m, (_, w) in enumerate(terms)] for j in range(1, levels + 1)]
    diffs = [[(m, d) for m, d in level if not is_zero(d)] for level in diffs]  # (term, d_mj) for j = 1..K
    deepest = max((j + 1 for j, level in enumerate(diffs) if level), default=0)
    if deepest == 0:
        return result
    _check(terms[0][0], deepest)
    pyramid = {m: terms[m][0] for level in diffs for m, _ in level}  # D_j x_m, for the terms some y_j uses
    levels_low: list[Tensor | None] = []  # y_1 .. y_deepest
    for j in range(1, deepest + 1):
        pyramid = {m: pool(x, 1) for m, x in pyramid.items()}
        level = diffs[j - 1]
        levels_low.append(linear_combination([(pyramid[m], d) for m, d in level]) if level else None)
    coarse: Tensor | None = None  # U(y_j + U(y_{j+1} + ...)), one level finer than y_j
    for y in reversed(levels_low):  # coarsest first; y_deepest is never None
        if y is not None:
            coarse = y if coarse is None else y + coarse
        assert coarse is not None
        coarse = unpool(coarse)
    return result + coarse


@dataclass(frozen=True)
class OrthonormalPool:
    """D_k as a linear operator: ``apply`` = D_k, ``adjoint`` = U_k = D_k^T, ``project`` = P_k."""

    k: int = 1  # number of 2x2 levels; block side 2^k

    def apply(self, x: Tensor) -> Tensor:
        return pool(x, self.k)  # (B, C, H/2^k, W/2^k)

    def adjoint(self, z: Tensor) -> Tensor:
        return unpool(z, self.k)  # (B, C, 2^k h, 2^k w)

    def project(self, x: Tensor) -> Tensor:
        return project(x, self.k)  # (B, C, H, W)
