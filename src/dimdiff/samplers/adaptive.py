"""Adaptive step sizes from image complexity (the DDIM variant in the project's sources).

At each step the current x0 estimate's complexity (root-mean-square gradient magnitude,
averaged over the batch so the batch stays on one time) sets the next step:
    dt = clamp(base_step / complexity, min_step, max_step),   s = max(t - dt, t_end)
Flat estimates take long strides, detailed ones short strides. min_step > 0 bounds the
number of network evaluations by (t_start - t_end) / min_step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dimdiff.ops.complexity import complexity_score
from dimdiff.process.base import DiffusionProcess
from dimdiff.samplers.ddim import Callback, Denoiser

__all__ = ["adaptive_step", "adaptive_sample"]


def adaptive_step(x0_hat: Tensor, base_step: float, min_step: float, max_step: float) -> float:
    """The next step size dt in t units for a batch of x0 estimates."""
    complexity = float(complexity_score(x0_hat.float()).mean())
    dt = base_step / max(complexity, 1e-12)
    return min(max(dt, min_step), max_step)


@torch.no_grad()
def adaptive_sample(
    denoiser: Denoiser,
    process: DiffusionProcess,
    x_T: Tensor,
    ts: Tensor,
    *,
    base_step: float = 0.005,
    min_step: float = 0.005,
    max_step: float = 0.05,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Sample from t_start = ts[0] down to t_end = ts[-1] with complexity-chosen steps."""
    if not 0 < min_step <= max_step:
        raise ValueError(f"expected 0 < min_step <= max_step, got {min_step}, {max_step}")
    t, t_end = float(ts[0]), float(ts[-1])
    x, batch, step = x_T, x_T.shape[0], 0
    while t > t_end:
        x0_hat = denoiser(x, torch.full((batch,), t, device=x.device, dtype=torch.float64))
        s = max(t - adaptive_step(x0_hat, base_step, min_step, max_step), t_end)
        if callback is not None:
            callback({"step": step, "t": t, "x_t": x, "x0_hat": x0_hat, "s": s})
        x = process.reverse_step(x, x0_hat, t, s, eta=eta, generator=generator)
        t, step = s, step + 1
    return x
