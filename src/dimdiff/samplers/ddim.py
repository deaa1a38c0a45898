"""DDIM(eta) and DDPM ancestral sampling (Song et al. 2021; Ho et al. 2020).

Both walk a timestep grid ``ts`` (t_n > ... > t_0 = 0) and call ``process.reverse_step``,
which owns all the noise math (and, for dimension-varying processes, crosses turning points).
eta = 1 draws from the DDPM posterior q(x_s | x_t, x0_hat); eta = 0 is deterministic DDIM.
A corrector that refines the state after a resolution change is the process's business
(`corrector.CorrectedProcess`): the sampler never sees the dimension change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dimdiff.process.base import DiffusionProcess

__all__ = ["Denoiser", "Callback", "ddim_sample", "ddpm_sample"]

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, ...), t (B,)) -> x0_hat (B, ...)
Callback = Callable[[dict[str, Any]], None]  # receives {"step", "t", "x_t", "x0_hat"}


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    process: DiffusionProcess,
    x_T: Tensor,
    ts: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Sample x_0 from x_T along ``ts`` (t_n > ... > t_0, normally t_0 = 0)."""
    if eta < 0:
        raise ValueError(f"expected eta >= 0, got {eta}")
    x = x_T
    batch = x.shape[0]
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        x0_hat = denoiser(x, torch.full((batch,), t, device=x.device, dtype=torch.float64))
        if callback is not None:
            callback({"step": i, "t": t, "x_t": x, "x0_hat": x0_hat})
        x = process.reverse_step(x, x0_hat, t, s, eta=eta, generator=generator)
    return x


def ddpm_sample(
    denoiser: Denoiser,
    process: DiffusionProcess,
    x_T: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral DDPM sampling: every step draws from the posterior (all steps, or respaced)."""
    return ddim_sample(denoiser, process, x_T, ts, eta=1.0, generator=generator, callback=callback)
