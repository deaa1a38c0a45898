"""Named conversions between what a network predicts and the clean signal x0.

For x_t = alpha_t x0 + sigma_t eps (alpha_t^2 + sigma_t^2 = 1):
    eps-prediction:  x0 = (x_t - sigma_t eps) / alpha_t
    v-prediction:    v = alpha_t eps - sigma_t x0   (Salimans & Ho 2022)
                     x0 = alpha_t x_t - sigma_t v,  eps = sigma_t x_t + alpha_t v
alpha and sigma broadcast against x_t (scalars or (B, 1, 1, 1) tensors).

The processes use the same conversions as coefficients (``x0_coefficients``,
``target_coefficients``): float64 numbers or (B,) vectors w with x0 = w_x x_t + w_pred prediction,
for a signal of any gain a (not only alpha_t: DVDP gives each component its own), v being
normalised to a^2 + sigma^2 so that it stays finite where a = 0.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor

__all__ = [
    "Parameterization",
    "eps_to_x0",
    "x0_to_eps",
    "v_to_x0",
    "x0_to_v",
    "v_to_eps",
    "eps_to_v",
    "x0_coefficients",
    "target_coefficients",
]


class Parameterization(str, enum.Enum):
    EPS = "eps"  # the network predicts the noise eps
    X0 = "x0"  # the network predicts the clean signal x0
    V = "v"  # the network predicts v = alpha_t eps - sigma_t x0


def eps_to_x0(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t - alpha * x0) / sigma


def v_to_x0(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return alpha * x_t - sigma * v


def x0_to_v(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (alpha * x_t - x0) / sigma


def v_to_eps(x_t: Tensor, v: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return sigma * x_t + alpha * v


def eps_to_v(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (eps - sigma * x_t) / alpha


def _normalised(a: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(a / rho, sigma / rho, rho), rho = sqrt(a^2 + sigma^2) (1 for a variance-preserving alpha_t)."""
    rho = torch.sqrt(a**2 + sigma**2)
    return a / rho, sigma / rho, rho


def _kind_error(kind: object) -> ValueError:
    return ValueError(f"expected a parameterization in {[p.value for p in Parameterization]}, got {kind!r}")


def x0_coefficients(kind: Parameterization, a: Tensor, sigma: Tensor,
                    eps_tolerance: float = 0.0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(w_x, w_pred) with x0 = w_x x_t + w_pred prediction, for x_t = a x0 + sigma eps.

    x0: (0, 1). v = (a eps - sigma x0) / rho: (a / rho^2, -sigma / rho). eps: (1 / a, -sigma / a)
    where a >= eps_tolerance; below it the prediction is read as x0 (0, 1), never dividing by a
    vanishing a."""
    if kind is Parameterization.X0:
        return torch.zeros_like(a), torch.ones_like(a)
    if kind is Parameterization.V:
        a_n, s_n, rho = _normalised(a, sigma)
        return a_n / rho, -s_n
    if kind is Parameterization.EPS:
        alive = a >= eps_tolerance
        safe_a = torch.where(alive, a, 1.0)
        return torch.where(alive, 1.0 / safe_a, 0.0), torch.where(alive, -sigma / safe_a, 1.0)
    raise _kind_error(kind)


def target_coefficients(kind: Parameterization, a: Tensor, sigma: Tensor,
                        eps_tolerance: float = 0.0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(w_noise, w_x0) with target = w_noise eps + w_x0 x0, the inverse reading of ``x0_coefficients``:
    x0: (0, 1); v: (a / rho, -sigma / rho); eps: (1, 0) where a >= eps_tolerance, else (0, 1)."""
    if kind is Parameterization.X0:
        return torch.zeros_like(a), torch.ones_like(a)
    if kind is Parameterization.V:
        a_n, s_n, _ = _normalised(a, sigma)
        return a_n, -s_n
    if kind is Parameterization.EPS:
        alive = (a >= eps_tolerance).to(a.dtype)
        return alive, 1.0 - alive
    raise _kind_error(kind)
