"""DDIM(eta) and DDPM ancestral sampling (Song et al. 2021; Ho et al. 2020).

Both walk a timestep grid ``ts`` (t_n > ... > t_0 = 0) and call ``process.reverse_step``,
which owns all the noise math (and, for dimension-varying processes, crosses turning points).
eta = 1 draws from the DDPM posterior q(x_s | x_t, x0_hat); eta = 0 is deterministic DDIM.
A ``corrector`` (e.g. `corrector.ComplementLangevin`) refines the state wherever the process
crosses up (the process calls it back; the sampler never sees the dimension change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dimdiff.process.base import CrossHook, DiffusionProcess
from dimdiff.samplers.corrector import Corrector

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
    corrector: Corrector | None = None,
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
        x = process.reverse_step(x, x0_hat, t, s, eta=eta, generator=generator,
                                 on_cross=cross_hook(corrector, denoiser, generator))  # fmt: skip
    return x


def cross_hook(corrector: Corrector | None, denoiser: Denoiser, generator: torch.Generator | None) -> CrossHook | None:
    """The process's on_cross callback that runs ``corrector`` with this sampler's denoiser."""
    if corrector is None:
        return None
    return lambda x, tau: corrector(denoiser, x, tau, generator)


def ddpm_sample(
    denoiser: Denoiser,
    process: DiffusionProcess,
    x_T: Tensor,
    ts: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    corrector: Corrector | None = None,
) -> Tensor:
    """Ancestral DDPM sampling: every step draws from the posterior (all steps, or respaced)."""
    return ddim_sample(denoiser, process, x_T, ts, eta=1.0, generator=generator, callback=callback,
                       corrector=corrector)  # fmt: skip
