"""Named conversions between what a network predicts and the clean signal x0.

For x_t = alpha_t x0 + sigma_t eps (alpha_t^2 + sigma_t^2 = 1):
    eps-prediction:  x0 = (x_t - sigma_t eps) / alpha_t
    v-prediction:    v = alpha_t eps - sigma_t x0   (Salimans & Ho 2022)
                     x0 = alpha_t x_t - sigma_t v,  eps = sigma_t x_t + alpha_t v
alpha and sigma broadcast against x_t (scalars or (B, 1, 1, 1) tensors).
"""

from __future__ import annotations

import enum

from torch import Tensor

__all__ = [
    "Parameterization",
    "eps_to_x0",
    "x0_to_eps",
    "v_to_x0",
    "x0_to_v",
    "v_to_eps",
    "eps_to_v",
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
