"""Langevin correction of the complement refilled at an upward crossing (docs/dvdp.md section 8).

Subspace diffusion crosses up approximately: the dropped component still holds signal at the
switch time and is refilled with N(0, (alpha^2 s_perp^2 + sigma^2) I). A few Langevin steps on
that complement alone, with the coarse part held fixed, move it towards p_s(complement | coarse):

    g = (I - P) grad log p_s(x)   (Tweedie: per component (a_j c_j(x0_hat) - c_j(x)) / sigma_s^2)
    n = (I - P) N(0, I),  delta = 2 (r mean||n|| / mean||g||)^2 over the batch (r: the target SNR)
    x <- x + delta g + sqrt(2 delta) n

P = U D is the projection onto the coarse level just left, so D x never changes. The step-size
rule is the predictor-corrector one of Song et al. (2021). For DVDP the crossing is already exact
(the complement is pure noise, g = -(I - P) x / sigma^2) and the corrector is only a no-op in
distribution; each step costs one network call at the finer resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dimdiff.ops.pool import project_complement
from dimdiff.process.base import CrossHook, DiffusionProcess, TimeLike
from dimdiff.process.dimension_varying import DimensionVaryingProcess

__all__ = ["ComplementLangevin", "CorrectedProcess", "Corrector"]

# (denoiser, x_s just after a crossing, s, generator) -> corrected x_s
Corrector = Callable[[Callable[[Tensor, Tensor], Tensor], Tensor, float, torch.Generator | None], Tensor]


@dataclass(frozen=True)
class ComplementLangevin:
    process: DimensionVaryingProcess
    steps: int  # Langevin steps per crossing
    snr: float = 0.1  # target ratio r of the noise norm to the score step

    def __call__(self, denoiser: Callable[[Tensor, Tensor], Tensor], x: Tensor, s: float,
                 generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        if s <= 0.0:  # sigma_0 = 0: no score to follow
            return x
        batch = x.shape[0]
        times = torch.full((batch,), s, device=x.device, dtype=torch.float64)
        for _ in range(self.steps):
            score = self.process.score(x, denoiser(x, times), s)  # (B, C, h, w)
            g = project_complement(score, 1)
            n = project_complement(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), 1)
            # one step size for the batch, from its mean norms: a per-image ratio of norms is heavy-tailed
            # when the complement has few dimensions
            g_norm = g.reshape(batch, -1).norm(dim=1).mean().clamp_min(1e-12)
            n_norm = n.reshape(batch, -1).norm(dim=1).mean()
            delta = 2 * (self.snr * n_norm / g_norm) ** 2
            x = x + delta * g + torch.sqrt(2 * delta) * n
        return x


@dataclass(frozen=True)
class CorrectedProcess:
    """``process`` whose upward crossings are refined by ``corrector`` run with ``denoiser``: every sampler
    gets the correction through ``reverse_step``'s ``on_cross`` hook without knowing of it. Everything
    else is the wrapped process's (attribute access falls through)."""

    process: DiffusionProcess
    corrector: Corrector
    denoiser: Callable[[Tensor, Tensor], Tensor]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.process, name)

    def reverse_step(self, x_t: Tensor, x0_hat: Tensor, t: TimeLike, s: TimeLike, *, eta: float = 1.0,
                     generator: torch.Generator | None = None, noise: Tensor | None = None,
                     on_cross: CrossHook | None = None) -> Tensor:  # fmt: skip
        def hook(x: Tensor, tau: float) -> Tensor:
            x = self.corrector(self.denoiser, x, tau, generator)
            return on_cross(x, tau) if on_cross is not None else x

        return self.process.reverse_step(x_t, x0_hat, t, s, eta=eta, generator=generator, noise=noise, on_cross=hook)
