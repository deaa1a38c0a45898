"""Stateless samplers: ``sample(denoiser, process, x_T, ts, *, generator, callback, **options)``."""

from dimdiff.process.timesteps import Spacing, timesteps
from dimdiff.samplers.adaptive import adaptive_sample, adaptive_step
from dimdiff.samplers.ddim import Callback, Denoiser, ddim_sample, ddpm_sample

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
