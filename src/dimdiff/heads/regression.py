"""The regression head: the network predicts eps, x0 or v, trained by a weighted squared error
plus an optional complexity-weighted L1 term.

    loss = mean_b[ w(t_b) * ||pred - target||^2 / N ]  +  lambda * mean(C(x0) * |pred - target|)

The squared error is summed over the target and divided by N = ``process.loss_dim(target shape)``:
for the Gaussian process the mean per pixel; for DVDP the clean data's dimension, so that a stage-k
loss in orthonormal coordinates is exactly the projected full-resolution error (Parseval; a mean
over the reduced state would weight stage k by 4^k); for scale-space diffusion, whose states are
average-pooled pixels, the mean per pixel at the target's resolution, as its authors train it.

w(t) for min-SNR-gamma (Hang et al. 2023), with SNR = alpha_t^2 / sigma_t^2, expressed for each
parameterization so that all three weight the implied x0 error by min(SNR, gamma):
    eps: min(SNR, gamma) / SNR      x0: min(SNR, gamma)      v: min(SNR, gamma) / (SNR + 1)
C(x0) is the complexity map of the clean image (gradient magnitude, mean 1 per image), resized
to the prediction's resolution when the process works at a lower one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dimdiff.heads.base import LossParts
from dimdiff.ops.complexity import complexity_map
from dimdiff.process.base import DiffusionProcess
from dimdiff.process.parameterization import Parameterization

__all__ = ["LossWeighting", "RegressionHead", "loss_weight", "diffusion_loss"]


class LossWeighting(str, enum.Enum):
    MSE = "mse"  # plain mean squared error on the network's target
    MIN_SNR = "min_snr"  # min-SNR-gamma (Hang et al. 2023)


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
) -> tuple[Tensor, LossParts]:
    """Scalar loss and its parts for logging. pred, target (B, C, h, w) of one shape (never broadcast);
    weight (B,); data_dim: what the summed squared error is divided by (None: the target's own dimension)."""
    if pred.shape != target.shape:
        raise ValueError(f"expected a prediction of the target's shape {tuple(target.shape)}, got {tuple(pred.shape)}")
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


@dataclass(frozen=True)
class RegressionHead:
    parameterization: Parameterization = Parameterization.EPS  # what the network predicts
    weighting: LossWeighting = LossWeighting.MSE  # per-example loss weight w(t)
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting
    complexity_lambda: float = 0.0  # weight of the complexity-weighted L1 term (0 = off)

    def output_shape(self, target_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return target_shape

    def with_sampling(self, sample: Any, generator: torch.Generator | None = None) -> RegressionHead:
        return self

    def x0_estimate(self, process: DiffusionProcess, x_t: Tensor, output: Tensor, t: Tensor, *,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        return process.x0_from_prediction(x_t, output, t, self.parameterization)

    def loss(self, process: DiffusionProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor,
             output: Tensor) -> tuple[Tensor, LossParts]:  # fmt: skip
        target = process.training_target(x0, noise, t, self.parameterization)  # (B, C', h, w)
        weight = loss_weight(process.log_snr(t), self.weighting, self.parameterization, self.min_snr_gamma)  # (B,)
        return diffusion_loss(output, target, weight, x0=x0, complexity_lambda=self.complexity_lambda,
                              data_dim=process.loss_dim(tuple(target.shape[1:])))  # fmt: skip
