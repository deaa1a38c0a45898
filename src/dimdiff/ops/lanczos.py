"""Matrix-free f(A) b by Lanczos, batched: in particular A^(1/2) b, for sampling Gaussian noise with a
covariance known only as an operator (scale-space diffusion's posterior cov = sigma^2 (I - r M^T M),
M a downsampling, sampled as cov^(1/2) xi).

A is symmetric positive semi-definite on vectors of n = prod(dims) entries and given only by
``apply``, acting on a batch b of shape (B, *dims), each element independently and shape-preserving.
For each batch element, k = min(iterations, n) steps of Lanczos from q_1 = b / |b|,

    w_j = A q_j - beta_{j-1} q_{j-1},  alpha_j = <q_j, w_j>,  w_j <- w_j - alpha_j q_j,
    w_j <- (I - Q_j Q_j^T) w_j twice   (full reorthogonalisation against q_1..q_j),
    beta_j = |w_j|,  q_{j+1} = w_j / beta_j,

give an orthonormal basis Q_k = [q_1 .. q_k] (n, k) of the Krylov space span{b, A b, .., A^(k-1) b} and
the tridiagonal T_k = Q_k^T A Q_k (alpha on the diagonal, beta off it), so that

    f(A) b  ~  |b| Q_k f(T_k) e_1,    f(T_k) = V f(Lambda) V^T  from  T_k = V Lambda V^T,

exact when f is a polynomial of degree < k (so f(x) = x gives A b for k >= 2) and whenever the Krylov
space is invariant under A. T_k's eigendecomposition is in float64; everything of length n stays in
b's dtype. Memory: the k basis vectors, B k n numbers.

Breakdown: beta_j ~ 0 (relative to the largest |A q_i| so far) means the Krylov space of that element
is invariant, and the sum above is already exact. That element then stops: its later q's are 0,
T_k continues as a block of its own (diagonal alpha_1, off-diagonal 0) that f(T_k) e_1 never reaches,
alpha_1 lying in A's spectrum so that f (1/x, say) need not be defined at 0; and b = 0 gives 0.
The other elements of the batch go on; the loop ends early once all have stopped. A beta at the level
of A's rounding errors that stays above the tolerance does no harm: the next q is rounding noise
orthogonal to the Krylov space, coupled to it through that beta only. A larger tolerance would save
those steps but cut short Krylov spaces that are merely almost invariant, an error of about beta / |A|
in the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["lanczos_function", "lanczos_sqrt"]

BREAKDOWN_TOLERANCE = 16  # beta_j <= this x eps(dtype) x max_i |A q_i|: the Krylov space is invariant


def _matrix_function_first_column(alpha: Tensor, beta: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
    """f(T) e_1 for the tridiagonal T (B, m, m) with diagonal alpha (B, m) and off-diagonal beta (B, m-1)."""
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)  # (B, m, m)
    eigenvalues, V = torch.linalg.eigh(T)  # (B, m), (B, m, m)
    f_eigenvalues = f(eigenvalues)  # (B, m)
    if f_eigenvalues.shape != eigenvalues.shape:
        raise ValueError(f"expected f to keep the shape of the eigenvalues {tuple(eigenvalues.shape)}, "
                         f"got {tuple(f_eigenvalues.shape)}")  # fmt: skip
    return V @ (f_eigenvalues * V[:, 0, :]).unsqueeze(-1)  # (B, m, 1)


def lanczos_function(apply: Callable[[Tensor], Tensor], b: Tensor, f: Callable[[Tensor], Tensor], *,
                     iterations: int = 40) -> Tensor:  # fmt: skip
    """f(A) b for each element of b (B, *dims), A symmetric PSD given by ``apply`` (B, *dims) -> (B, *dims).

    ``f`` maps eigenvalues of the tridiagonal T_k, a float64 tensor (B, m), elementwise to a tensor of the
    same shape; it only needs to be defined on [lambda_min(A), lambda_max(A)]. ``iterations`` (>= 1, capped
    at n = prod(dims)) is the number of Lanczos steps, one ``apply`` each. Returns (B, *dims) in b's dtype.
    """
    if iterations < 1:
        raise ValueError(f"expected iterations >= 1, got {iterations}")
    if b.ndim < 2 or b[0].numel() == 0:
        raise ValueError(f"expected b of shape (B, *dims) with a non-empty dims, got {tuple(b.shape)}")
    if not b.is_floating_point():
        raise ValueError(f"expected a real floating-point b, got dtype {b.dtype}")
    B, n = b.shape[0], b[0].numel()
    k = min(iterations, n)
    eps = torch.finfo(b.dtype).eps

    def matvec(q: Tensor) -> Tensor:  # (B, n) -> (B, n)
        out = apply(q.reshape(b.shape))
        if out.shape != b.shape:
            raise ValueError(f"expected apply to preserve the shape {tuple(b.shape)}, got {tuple(out.shape)}")
        return out.reshape(B, n)

    flat = b.reshape(B, n)  # (B, n)
    norm = torch.linalg.vector_norm(flat, dim=1)  # (B,)
    active = norm > 0  # (B,) whether q_j is a Lanczos vector (not 0 after breakdown)
    Q = torch.zeros(B, k, n, dtype=b.dtype, device=b.device)  # rows q_1 .. q_k
    Q[:, 0] = flat / torch.where(active, norm, 1).unsqueeze(1)
    alpha = torch.zeros(B, k, dtype=torch.float64, device=b.device)  # (B, k)
    beta = torch.zeros(B, k - 1, dtype=torch.float64, device=b.device)  # (B, k-1)
    scale = torch.zeros(B, dtype=torch.float64, device=b.device)  # max_i |A q_i|, the size of A seen so far
    m = k  # steps taken
    for j in range(k):
        q = Q[:, j]  # (B, n)
        w = matvec(q) * active.unsqueeze(1).to(b.dtype)  # (B, n)
        scale = torch.maximum(scale, torch.linalg.vector_norm(w, dim=1).double())
        a = (q * w).sum(dim=1)  # (B,)
        alpha[:, j] = torch.where(active, a.double(), alpha[:, 0])  # a stopped element's block: alpha_1 I
        if j == k - 1:
            break
        w = w - a.unsqueeze(1) * q
        if j > 0:
            w = w - beta[:, j - 1].to(b.dtype).unsqueeze(1) * Q[:, j - 1]
        basis = Q[:, : j + 1]  # (B, j+1, n)
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to working precision
            w = w - torch.einsum("bin,bi->bn", basis, torch.einsum("bin,bn->bi", basis, w))  # (B, n)
        w_norm = torch.linalg.vector_norm(w, dim=1)  # (B,)
        active = active & (w_norm.double() > BREAKDOWN_TOLERANCE * eps * scale)
        beta[:, j] = torch.where(active, w_norm.double(), 0)
        Q[:, j + 1] = w / torch.where(active, w_norm, 1).unsqueeze(1) * active.unsqueeze(1).to(b.dtype)
        if not bool(active.any()):
            m = j + 1
            break
    coefficients = _matrix_function_first_column(alpha[:, :m], beta[:, : m - 1], f)  # (B, m, 1), f(T_m) e_1
    coefficients = torch.where(norm.unsqueeze(1) > 0, coefficients.squeeze(-1), 0) * norm.double().unsqueeze(1)
    return torch.einsum("bm,bmn->bn", coefficients.to(b.dtype), Q[:, :m]).reshape(b.shape)  # (B, *dims)


def lanczos_sqrt(apply: Callable[[Tensor], Tensor], b: Tensor, *, iterations: int = 40) -> Tensor:
    """A^(1/2) b, the symmetric square root of the PSD operator A applied to each element of b (B, *dims).

    Eigenvalues of T_k below 0 (rounding, for a singular A) count as 0.
    """
    return lanczos_function(apply, b, lambda x: x.clamp(min=0).sqrt(), iterations=iterations)
