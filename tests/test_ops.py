"""Invariants of the orthonormal pooling operators and the DVDP decomposition (docs/dvdp.md sections 1, 2, 9)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch
import torch.nn.functional as F

from dimdiff.ops import (
    OrthonormalPool,
    component,
    components,
    components_low,
    mix_components,
    pool,
    project,
    project_complement,
    unpool,
)
from dimdiff.ops.combine import linear_combination

SHAPES = [(2, 1, 8, 8), (2, 3, 16, 8), (1, 3, 8, 24)]  # channels 1 and 3, square and non-square
LEVELS = [1, 2, 3]
CASES = [(shape, k) for shape in SHAPES for k in LEVELS]
TOL = 1e-12


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


def low_shape(shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    b, c, h, w = shape
    return (b, c, h // 2**k, w // 2**k)


@pytest.mark.parametrize("shape,k", CASES)
def test_adjointness(shape, k):
    x, y = randn(*shape, seed=1), randn(*low_shape(shape, k), seed=2)
    torch.testing.assert_close(inner(pool(x, k), y), inner(x, unpool(y, k)), rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,k", CASES)
def test_pool_unpool_is_identity(shape, k):
    z = randn(*low_shape(shape, k))
    torch.testing.assert_close(pool(unpool(z, k), k), z, rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,k", CASES)
def test_unpool_pool_is_projector(shape, k):
    x = randn(*shape)
    p = project(x, k)
    torch.testing.assert_close(unpool(pool(x, k), k), p, rtol=0, atol=0)
    # P_k is "average-pool then nearest-upsample"
    expected = F.interpolate(F.avg_pool2d(x, 2**k), scale_factor=2**k, mode="nearest")
    torch.testing.assert_close(p, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,k", CASES)
def test_projector_symmetric_and_idempotent(shape, k):
    x, y = randn(*shape, seed=1), randn(*shape, seed=2)
    torch.testing.assert_close(inner(project(x, k), y), inner(x, project(y, k)), rtol=0, atol=TOL)
    torch.testing.assert_close(project(project(x, k), k), project(x, k), rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,k", CASES)
def test_pythagoras(shape, k):
    x = randn(*shape)
    total = project(x, k).square().sum() + project_complement(x, k).square().sum()
    torch.testing.assert_close(total, x.square().sum(), rtol=TOL, atol=0)
    torch.testing.assert_close(project(x, k) + project_complement(x, k), x, rtol=0, atol=TOL)


def test_level_zero_is_identity():
    x = randn(2, 3, 6, 10)
    for op in (pool, unpool, project):
        torch.testing.assert_close(op(x, 0), x, rtol=0, atol=0)
    assert project_complement(x, 0).abs().max() == 0


@pytest.mark.parametrize("shape,k", [(shape, k) for shape in SHAPES for k in (0, 1, 2)])
def test_nesting(shape, k):
    x = randn(*shape)
    coarse = project(x, k + 1)
    torch.testing.assert_close(project(project(x, k), k + 1), coarse, rtol=0, atol=TOL)
    torch.testing.assert_close(project(project(x, k + 1), k), coarse, rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,K", CASES)
def test_components_orthogonal_and_sum_to_x(shape, K):
    x = randn(*shape)
    c = components(x, K)
    assert len(c) == K + 1 and all(c_j.shape == x.shape for c_j in c)
    torch.testing.assert_close(sum(c), x, rtol=0, atol=TOL)
    for i in range(K + 1):
        for j in range(i + 1, K + 1):
            assert inner(c[i], c[j]).abs() < TOL * x.numel()


@pytest.mark.parametrize("shape,K", CASES)
def test_components_match_definition(shape, K):
    x = randn(*shape)
    c = components(x, K)
    for j in range(K):
        expected = project(x, j) - project(x, j + 1)
        torch.testing.assert_close(c[j], expected, rtol=0, atol=TOL)
        torch.testing.assert_close(component(x, j, K), expected, rtol=0, atol=TOL)
    torch.testing.assert_close(c[K], project(x, K), rtol=0, atol=TOL)
    torch.testing.assert_close(component(x, K, K), project(x, K), rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,K", CASES)
def test_parseval(shape, K):
    x = randn(*shape)
    energy = sum(c_j.square().sum() for c_j in components(x, K))
    torch.testing.assert_close(energy, x.square().sum(), rtol=TOL, atol=0)


@pytest.mark.parametrize("k", LEVELS)
def test_white_noise_stays_white(k):
    n = 20_000
    eps = randn(n, 1, 8, 8, seed=3)
    z = pool(eps, k).reshape(n, -1)  # (n, d / 4^k)
    cov = z.T @ z / n  # zero-mean noise
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    assert (cov - eye).abs().max() < 0.06  # Monte-Carlo error ~ 1/sqrt(n) = 0.007 per entry
    assert abs(z.var().item() - 1.0) < 0.03
    # plain average pooling shrinks the variance by exactly 4^k (per sample, not only on average)
    avg = F.avg_pool2d(eps, 2**k).reshape(n, -1)
    assert abs(avg.var().item() * 4**k - 1.0) < 0.03
    torch.testing.assert_close(z.var() / avg.var(), torch.tensor(4.0**k, dtype=z.dtype), rtol=TOL, atol=0)


@pytest.mark.parametrize("shape,k", CASES)
def test_low_resolution_values_are_scaled_average_pool(shape, k):
    x = randn(*shape)
    torch.testing.assert_close(pool(x, k), 2**k * F.avg_pool2d(x, 2**k), rtol=0, atol=TOL)


@pytest.mark.parametrize("shape,K", CASES)
def test_recursive_structure(shape, K):
    x = randn(*shape)
    c = components(x, K)
    for k in range(K + 1):
        c_low = components_low(pool(x, k), K - k)
        for j in range(K + 1):
            pooled = pool(c[j], k)
            if j >= k:
                torch.testing.assert_close(pooled, c_low[j - k], rtol=0, atol=TOL)
            else:
                assert pooled.abs().max() < TOL


def test_pooling_k_times_equals_pool_k():
    x = randn(2, 3, 16, 8)
    torch.testing.assert_close(pool(pool(pool(x, 1), 1), 1), pool(x, 3), rtol=0, atol=TOL)
    torch.testing.assert_close(unpool(unpool(x, 1), 2), unpool(x, 3), rtol=0, atol=TOL)


def test_wrong_size_error_names_divisor_and_size():
    with pytest.raises(ValueError, match=r"divisible by 2\^3 = 8, got H x W = 12 x 8"):
        pool(torch.zeros(1, 1, 12, 8), 3)
    with pytest.raises(ValueError, match=r"2\^2 = 4, got H x W = 8 x 6"):
        components(torch.zeros(1, 3, 8, 6), 2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got \(8, 8\)"):
        pool(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"j in \[0, 2\], got 3"):
        component(torch.zeros(1, 1, 8, 8), 3, 2)


def test_dense_matrix_cross_check():
    d = 16  # a 1x4x4 image
    basis = torch.eye(d, dtype=torch.float64).reshape(d, 1, 4, 4)  # (d, 1, 4, 4), one basis image per row
    D = pool(basis, 1).reshape(d, -1).T  # (d/4, d), column i = D e_i
    U = unpool(torch.eye(d // 4, dtype=torch.float64).reshape(d // 4, 1, 2, 2), 1).reshape(d // 4, d).T  # (d, d/4)
    torch.testing.assert_close(U, D.T, rtol=0, atol=0)
    torch.testing.assert_close(D @ D.T, torch.eye(d // 4, dtype=torch.float64), rtol=0, atol=TOL)
    P = D.T @ D  # (d, d)
    torch.testing.assert_close(P, P.T, rtol=0, atol=0)
    torch.testing.assert_close(P @ P, P, rtol=0, atol=TOL)
    torch.testing.assert_close(torch.trace(P), torch.tensor(d / 4, dtype=torch.float64), rtol=0, atol=TOL)
    torch.testing.assert_close(project(basis, 1).reshape(d, d).T, P, rtol=0, atol=TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_operator_object(dtype):
    x = randn(2, 3, 8, 16, dtype=dtype)
    op = OrthonormalPool(k=2)
    z = op.apply(x)
    assert z.dtype == dtype and z.shape == (2, 3, 2, 4)
    assert op.adjoint(z).dtype == dtype and op.adjoint(z).shape == x.shape
    tol = 1e-5 if dtype == torch.float32 else TOL
    torch.testing.assert_close(op.project(x), project(x, 2), rtol=0, atol=0)
    torch.testing.assert_close(sum(components(x, 2)), x, rtol=0, atol=tol)
    with pytest.raises(FrozenInstanceError):
        op.k = 1  # type: ignore[misc]


@pytest.mark.parametrize(("shape", "K"), CASES)
def test_mix_components_equals_the_sum_over_explicit_components(shape, K):
    """Per-sample coefficients, some levels equal (skipped) and some not, several terms."""
    xs = [randn(*shape, seed=i) for i in range(3)]
    weights = [[randn(shape[0], seed=10 * i + j) for j in range(K + 1)] for i in range(3)]
    weights[1][1] = weights[1][0]  # term 1 has no c_0 / c_1 difference
    weights[2] = [torch.tensor(0.7, dtype=torch.float64)] * (K + 1)  # a whole-state term
    expected = sum(w_j.reshape(-1, 1, 1, 1) * c for x, w in zip(xs, weights, strict=True)
                   for w_j, c in zip(w, components(x, K), strict=True))  # fmt: skip
    torch.testing.assert_close(mix_components(list(zip(xs, weights, strict=True)), K), expected, atol=TOL, rtol=0)


def test_mix_components_with_equal_coefficients_is_the_plain_combination_bit_for_bit():
    xs = [randn(2, 3, 8, 8, seed=i, dtype=torch.float32) for i in range(2)]
    a, b = randn(2, seed=5), torch.tensor(-0.3, dtype=torch.float64)
    mixed = mix_components([(xs[0], [a] * 3), (xs[1], [b] * 3)], 2)
    assert torch.equal(mixed, linear_combination([(xs[0], a), (xs[1], b)]))
    assert torch.equal(mixed, a.float().reshape(-1, 1, 1, 1) * xs[0] + b.float() * xs[1])


def test_mix_components_only_a_coarse_difference():
    """Components 0 and 1 weighted alike, the coarse image differently: w0 x + (w2 - w1) P_2 x."""
    x = randn(2, 1, 8, 8)
    one, two = torch.tensor(1.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    torch.testing.assert_close(mix_components([(x, [one, one, two])], 2), x + 2.0 * project(x, 2), atol=TOL, rtol=0)


def test_mix_components_errors():
    x, w = randn(1, 1, 8, 8), torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected 3 coefficients per term"):
        mix_components([(x, [w, w])], 2)
    with pytest.raises(ValueError, match="divisible by 2"):
        mix_components([(randn(1, 1, 6, 6), [w, 2 * w, 3 * w, w])], 3)


def test_linear_combination_skips_zero_and_unit_coefficients():
    x, y = randn(2, 1, 4, 4, seed=0), randn(2, 1, 4, 4, seed=1)
    zero, one = torch.zeros(2, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert linear_combination([(x, one), (y, zero)]) is x
    assert torch.equal(linear_combination([(x, zero)]), torch.zeros_like(x))
    w = torch.tensor([2.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(linear_combination([(x, w), (y, one)]), w.reshape(-1, 1, 1, 1) * x + y, atol=0, rtol=0)
    with pytest.raises(ValueError, match="at least one"):
        linear_combination([])


def test_linear_combination_refuses_terms_of_different_shapes_instead_of_broadcasting():
    w = torch.tensor(0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"expected terms of one shape, got shapes \[\(2, 1, 4, 4\), \(2, 3, 4, 4\)\]"):
        linear_combination([(torch.zeros(2, 3, 4, 4), w), (torch.zeros(2, 1, 4, 4), w)])
