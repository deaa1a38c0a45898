"""The training loss: a weighted squared error on the network's target, plus an optional
complexity-weighted L1 term.

    loss = mean_b[ w(t_b) * ||pred - target||^2 / dim(x0) ]  +  lambda * mean(C(x0) * |pred - target|)

The squared error is summed over the state and divided by the clean data's dimension: the mean
per pixel for a full-resolution state, and for a reduced state (DVDP stage k, orthonormal
coordinates) exactly the projected full-resolution error by Parseval (DVDP.md section 6). A mean
over the reduced state instead would weight stage k by 4^k.

w(t) for min-SNR-gamma (Hang et al. 2023), with SNR = alpha_t^2 / sigma_t^2, expressed for each
parameterization so that all three weight the implied x0 error by min(SNR, gamma):
    eps: min(SNR, gamma) / SNR      x0: min(SNR, gamma)      v: min(SNR, gamma) / (SNR + 1)
C(x0) is the complexity map of the clean image (gradient magnitude, mean 1 per image), resized
to the prediction's resolution when the process works at a lower one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dimdiff.config import LossWeighting
from dimdiff.ops.complexity import complexity_map
from dimdiff.process.parameterization import Parameterization

__all__ = ["loss_weight", "diffusion_loss"]


def loss_weight(log_snr: Tensor, weighting: LossWeighting, kind: Parameterization, gamma: float = 5.0) -> Tensor:
    """Per-example weights w(t) from log-SNR (B,), float64."""
    if weighting is LossWeighting.MSE:
        return torch.ones_like(log_snr)
    snr = torch.exp(log_snr)
    clipped = torch.clamp(snr, max=gamma)
    if kind is Parameterization.EPS:
        return clipped / snr
    if kind is Parameterization.X0:
        return clipped
    if kind is Parameterization.V:
        return clipped / (snr + 1)
    raise ValueError(f"expected a parameterization in {[k.value for k in Parameterization]}, got {kind!r}")


def diffusion_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    *,
    x0: Tensor | None = None,
    complexity_lambda: float = 0.0,
    data_dim: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss and its parts for logging. pred, target (B, C, h, w) in the state's coordinates;
    weight (B,); data_dim: C * H * W of the clean data (None: the state's own dimension)."""
    error = pred.float() - target.float()  # (B, C, h, w)
    per_example = error.pow(2).sum(dim=(1, 2, 3)) / (data_dim or error[0].numel())  # (B,)
    mse = (weight.to(per_example.dtype) * per_example).mean()
    parts = {"mse": float(per_example.detach().mean())}
    if complexity_lambda <= 0:
        return mse, parts
    if x0 is None:
        raise ValueError("the complexity-weighted loss needs the clean images x0")
    if x0.shape[-2:] != pred.shape[-2:]:
        x0 = F.interpolate(x0, size=pred.shape[-2:], mode="area")  # (B, C, h, w)
    complexity = complexity_map(x0.float())  # (B, C, h, w), mean 1 per image
    term = (complexity * error.abs()).mean()
    parts["complexity_l1"] = float(term.detach())
    return mse + complexity_lambda * term, parts
