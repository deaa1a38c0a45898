"""The 2x downsampling operators of scale-space diffusion (`ops.resize`) against their closed forms:
exact adjoints, rows that sum to 1, chains one level at a time, torch's antialiased bilinear resize, and
the spectra the posterior sampler relies on (area: M M^T = I / 4 exactly; bilinear: largest eigenvalue
of M M^T about 0.25)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dimdiff.ops.resize import Resize, down, down_adjoint, down_matrix_1d

KINDS = pytest.mark.parametrize("kind", list(Resize))


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense(kind: Resize, shape: tuple[int, int, int], levels: int = 1) -> torch.Tensor:
    """The matrix of down(., kind, levels) on images of ``shape``, column by column."""
    d = torch.Size(shape).numel()
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return down(basis, kind, levels).reshape(d, -1).T


@KINDS
@pytest.mark.parametrize(("shape", "levels"), [((1, 8, 8), 1), ((3, 8, 12), 1), ((2, 16, 8), 2), ((1, 32, 32), 3)])
def test_the_adjoint_is_exact(kind, shape, levels):
    x = torch.randn(4, *shape, generator=g(0), dtype=torch.float64)
    y = torch.randn(4, shape[0], shape[1] >> levels, shape[2] >> levels, generator=g(1), dtype=torch.float64)
    lhs, rhs = (down(x, kind, levels) * y).sum(), (x * down_adjoint(y, kind, levels)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)
    assert down_adjoint(y, kind, levels).shape == x.shape


@KINDS
def test_rows_sum_to_one_and_each_channel_and_example_is_resized_alone(kind):
    x = torch.full((2, 3, 16, 8), 0.7, dtype=torch.float64)
    torch.testing.assert_close(down(x, kind, 2), torch.full((2, 3, 4, 2), 0.7, dtype=torch.float64))
    z = torch.randn(2, 3, 16, 8, generator=g(2))
    torch.testing.assert_close(down(z, kind)[1, 2], down(z[1:, 2:], kind)[0, 0])


@KINDS
def test_a_chain_is_one_level_at_a_time_and_levels_zero_is_the_identity(kind):
    x = torch.randn(2, 1, 16, 16, generator=g(3), dtype=torch.float64)
    torch.testing.assert_close(down(x, kind, 2), down(down(x, kind), kind))
    assert down(x, kind, 0) is x and down_adjoint(x, kind, 0) is x
    torch.testing.assert_close(dense(kind, (1, 16, 16), 2), dense(kind, (1, 8, 8)) @ dense(kind, (1, 16, 16)))


def test_area_is_the_2x2_average_with_m_mt_a_quarter_of_the_identity():
    x = torch.randn(2, 3, 8, 8, generator=g(4), dtype=torch.float64)
    torch.testing.assert_close(down(x, Resize.AREA), F.avg_pool2d(x, 2))
    M = dense(Resize.AREA, (1, 8, 8))
    torch.testing.assert_close(M @ M.T, torch.eye(16, dtype=torch.float64) / 4)
    projector = 4 * M.T @ M  # Pi, onto 2x2 block-constant images
    torch.testing.assert_close(projector @ projector, projector)


def test_bilinear_is_torchs_antialiased_resize_with_the_triangle_weights():
    x = torch.randn(2, 3, 16, 12, generator=g(5), dtype=torch.float64)
    expected = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(down(x, Resize.BILINEAR), expected, rtol=0, atol=1e-14)
    A = down_matrix_1d(Resize.BILINEAR, 8)
    torch.testing.assert_close(A[1, 1:5], torch.tensor([1, 3, 3, 1], dtype=torch.float64) / 8)  # inside the image
    for n in (8, 32):
        M = dense(Resize.BILINEAR, (1, n, n))
        assert 0.25 < float(torch.linalg.eigvalsh(M @ M.T).max()) < 0.26


@KINDS
def test_float32_stays_float32_and_bad_sizes_are_named(kind):
    assert down(torch.zeros(1, 1, 8, 8), kind).dtype == torch.float32
    with pytest.raises(ValueError, match=r"expected an even height and width to halve, got 8x7"):
        down(torch.zeros(1, 1, 8, 7), kind)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\), got \(8, 8\)"):
        down(torch.zeros(8, 8), kind)
    with pytest.raises(ValueError, match="expected levels >= 0, got -1"):
        down_adjoint(torch.zeros(1, 1, 4, 4), kind, -1)
