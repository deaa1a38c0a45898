"""Shared fixtures: Gaussian data with a closed-form oracle denoiser."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: reductions then match numbers recorded with one thread, and
    tiny tensors run as fast and far faster on a shared machine. Use with pytest.mark.usefixtures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def perturb_zero_init(net: torch.nn.Module) -> torch.nn.Module:
    """Move every all-zero parameter of a net off zero: a fresh U-Net's zero-initialised output convs make it
    ignore t, class labels and most of its paths by design."""
    with torch.no_grad():
        for p in net.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(0.0, 0.05)
    return net


class GaussianData:
    """x0 ~ N(mu, Sigma) on images of shape (C, H, W); E[x0 | x_t] in closed form."""

    def __init__(self, shape: tuple[int, int, int], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.shape = shape
        d = shape[0] * shape[1] * shape[2]
        a = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
        self.cov = a @ a.T * 0.5 + 0.05 * torch.eye(d, dtype=torch.float64)
        self.mean = 0.5 * torch.randn(d, generator=g, dtype=torch.float64)
        self.eigval, self.eigvec = torch.linalg.eigh(self.cov)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        x = self.mean + (z * self.eigval.sqrt()) @ self.eigvec.T
        return x.reshape(n, *self.shape)

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] for x_t = alpha x0 + sigma eps; alpha, sigma of shape (B,)."""
        n = x_t.shape[0]
        x = x_t.reshape(n, -1).double()
        a, s = alpha.reshape(n, 1).double(), sigma.reshape(n, 1).double()
        gain = a * self.eigval / (a**2 * self.eigval + s**2)  # (B, d)
        centred = (x - a * self.mean) @ self.eigvec  # (B, d)
        x0 = self.mean + (gain * centred) @ self.eigvec.T
        return x0.reshape(x_t.shape).to(x_t.dtype)


def empirical_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(x.shape[0], -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    return mean, centred.T @ centred / (flat.shape[0] - 1)


@pytest.fixture
def gaussian_data() -> GaussianData:
    return GaussianData((1, 4, 4))
