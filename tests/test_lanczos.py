"""Batched matrix-free Lanczos (`ops.lanczos`) against dense matrix functions: the square root of a random
SPD matrix and of scale-space diffusion's posterior covariance s2 (I - r M^T M) (bilinear and area M),
polynomials reproduced exactly, breakdown in an invariant subspace and at b = 0 without NaNs, batch
elements computed independently, and bad arguments."""

from __future__ import annotations

import pytest
import torch

from dimdiff.ops.lanczos import lanczos_function, lanczos_sqrt
from dimdiff.ops.resize import Resize, down, down_adjoint, down_matrix_1d


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest per-sample |out - ref| / |ref| over a batch (B, ...)."""
    return ((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max().item()


def spd(n: int, condition: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random SPD matrix (n, n) with eigenvalues log-spaced in [1, condition], and its square root."""
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=g(seed), dtype=torch.float64))
    eigenvalues = torch.logspace(0, torch.tensor(condition).log10().item(), n, dtype=torch.float64)
    return basis @ torch.diag(eigenvalues) @ basis.T, basis @ torch.diag(eigenvalues.sqrt()) @ basis.T


def dense_sqrt(A: torch.Tensor) -> torch.Tensor:
    eigenvalues, V = torch.linalg.eigh(A)
    return V @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ V.T


def test_sqrt_of_a_random_spd_matrix_matches_the_dense_square_root():
    A, root = spd(64, 100.0, seed=0)
    b = torch.randn(3, 64, generator=g(1), dtype=torch.float64)
    out = lanczos_sqrt(lambda v: v @ A, b)  # (3, 64), 40 iterations
    assert relative_error(out, b @ root) < 1e-5


@pytest.mark.parametrize("kind", list(Resize))
def test_sqrt_of_the_scale_space_posterior_covariance_matches_the_dense_square_root(kind):
    s2, r = 0.3, 0.9  # M^T M <= 1/4, so cov = s2 (I - r M^T M) is PSD

    def cov(x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        return s2 * (x - r * down_adjoint(down(x, kind), kind))

    a = down_matrix_1d(kind, 8)  # (4, 8)
    M = torch.kron(a, a)  # (16, 64) on row-major 8x8 images
    dense = s2 * (torch.eye(64, dtype=torch.float64) - r * M.T @ M)
    xi = torch.randn(4, 1, 8, 8, generator=g(2), dtype=torch.float64)
    out = lanczos_sqrt(cov, xi, iterations=40)  # (4, 1, 8, 8)
    ref = (xi.reshape(4, 64) @ dense_sqrt(dense)).reshape(4, 1, 8, 8)
    assert relative_error(out, ref) < 1e-5


def test_polynomials_of_degree_below_the_iterations_are_exact():
    A, _ = spd(32, 10.0, seed=3)
    b = torch.randn(2, 32, generator=g(4), dtype=torch.float64)
    identity = lanczos_function(lambda v: v @ A, b, lambda x: x, iterations=10)
    square = lanczos_function(lambda v: v @ A, b, lambda x: x**2, iterations=10)
    assert relative_error(identity, b @ A) < 1e-10
    assert relative_error(square, b @ A @ A) < 1e-10


def test_breakdown_in_an_invariant_subspace_gives_the_exact_root_without_nans():
    A, _ = spd(16, 10.0, seed=5)
    eigenvalues, V = torch.linalg.eigh(A)
    eigenvector = V[:, 7].reshape(1, 16)  # (1, 16)
    out = lanczos_sqrt(lambda v: v @ A, eigenvector)
    assert relative_error(out, eigenvalues[7].sqrt() * eigenvector) < 1e-12
    b = torch.randn(2, 3, 4, generator=g(6), dtype=torch.float64)
    scaled = lanczos_sqrt(lambda v: 2.25 * v, b)  # A = c I: breakdown after one step
    assert relative_error(scaled, 1.5 * b) < 1e-14


def test_zero_gives_zero():
    A, _ = spd(16, 10.0, seed=7)
    out = lanczos_sqrt(lambda v: v @ A, torch.zeros(2, 16, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(2, 16, dtype=torch.float64))
    inverse = lanczos_function(lambda v: v @ A, torch.zeros(1, 16, dtype=torch.float64), lambda x: 1 / x)
    assert torch.equal(inverse, torch.zeros(1, 16, dtype=torch.float64))


def test_each_batch_element_is_computed_alone():
    d = torch.logspace(0, 2, 24, dtype=torch.float64)  # A = diag(d): exact invariant subspaces

    def apply(v: torch.Tensor) -> torch.Tensor:  # (B, 24)
        return v * d

    b = torch.randn(5, 24, generator=g(9), dtype=torch.float64)
    b[1] = torch.eye(24, dtype=torch.float64)[3]  # an eigenvector: stops after one step while the others go on
    b[2] = 0  # stops at once
    b[3, 2:] = 0  # in a 2-dimensional invariant subspace: stops after two steps
    batch = lanczos_sqrt(apply, b, iterations=12)
    alone = torch.cat([lanczos_sqrt(apply, b[i : i + 1], iterations=12) for i in range(5)])
    assert not batch.isnan().any()
    assert (batch - alone).abs().max().item() < 1e-13
    assert relative_error(batch[1:4:2], b[1:4:2] * d.sqrt()) < 1e-14
    inverse = lanczos_function(apply, b, lambda x: 1 / x, iterations=12)  # stopped blocks never reach 0
    assert inverse.isfinite().all()
    assert relative_error(inverse[1:4:2], b[1:4:2] / d) < 1e-14


def test_float32_input_gives_float32_output():
    A, root = spd(32, 10.0, seed=10)
    b = torch.randn(2, 32, generator=g(11))
    out = lanczos_sqrt(lambda v: v @ A.float(), b)
    assert out.dtype == torch.float32
    assert relative_error(out.double(), b.double() @ root) < 1e-5


def test_bad_arguments_raise():
    b = torch.ones(2, 8)
    with pytest.raises(ValueError, match="expected iterations >= 1, got 0"):
        lanczos_sqrt(lambda v: v, b, iterations=0)
    with pytest.raises(ValueError, match=r"expected b of shape \(B, \*dims\)"):
        lanczos_sqrt(lambda v: v, torch.ones(8))
    with pytest.raises(ValueError, match=r"expected apply to preserve the shape \(2, 8\), got \(2, 4\)"):
        lanczos_sqrt(lambda v: v[:, :4], b)
