"""Stateless samplers: ``sample(denoiser, process, x_T, ts, *, generator, callback, **options)``."""

from dimdiff.samplers.adaptive import adaptive_sample, adaptive_step
from dimdiff.samplers.ddim import Callback, Denoiser, ddim_sample, ddpm_sample
from dimdiff.samplers.timesteps import Spacing, timesteps

__all__ = [
    "Callback",
    "Denoiser",
    "Spacing",
    "adaptive_sample",
    "adaptive_step",
    "ddim_sample",
    "ddpm_sample",
    "timesteps",
]
