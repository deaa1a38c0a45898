"""The contract of a denoiser's head (see `nets.denoiser.Denoiser`).

The denoiser runs the network on x_t and hands its raw output to the head, which turns it into
an x0 estimate (sampling) or a loss against the clean data (training). The head sees the process
only through the `DiffusionProcess` protocol, so every head works with every process.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from dimdiff.process.base import DiffusionProcess

__all__ = ["Head", "LossParts"]

LossParts = dict[str, float]  # named parts of a loss, for logging (e.g. {"mse": ..., "complexity_l1": ...})


class Head(Protocol):
    def output_shape(self, target_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (C, H, W) of the network's output for an x0 estimate of ``target_shape``."""
        ...

    def x0_estimate(self, process: DiffusionProcess, x_t: Tensor, output: Tensor, t: Tensor, *,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """The x0 estimate (B, *process.target_shape_at(t)) from the network's output at x_t, t (B,)."""
        ...

    def loss(self, process: DiffusionProcess, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor,
             output: Tensor) -> tuple[Tensor, LossParts]:  # fmt: skip
        """The scalar training loss of the output for x_t = forward_sample(x0, t, noise), and its parts."""
        ...

    def with_sampling(self, sample: Any, generator: torch.Generator | None = None) -> Head:
        """The head to sample with under a sample config (``config.SampleConfig``) and a sampling run's
        generator: itself, or itself with the config's choices of its own (the categorical head's code_choice,
        drawn from ``generator``)."""
        ...
