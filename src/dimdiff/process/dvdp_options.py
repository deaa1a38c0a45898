"""The options of the two kinds built on `DimensionVaryingProcess`, each checked where it is defined.

    process.kind = dvdp       turning_points, window_widths, window   (attenuated components, exact crossing)
    process.kind = subspace   turning_points, complement_std          (no attenuation, approximate crossing)

Subspace diffusion refills the components it drops with N(0, s_perp_k^2) per dimension; s_perp is
estimated from the training data (`estimate_complement_std`) when it is not given, and then saved
with the checkpoint as ``process.complement_std``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dimdiff.errors import ConfigError, check_option
from dimdiff.ops.pool import components
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.schedules import Schedule
from dimdiff.process.stages import Stages, Window

__all__ = ["DVDPOptions", "SubspaceOptions", "estimate_complement_std"]

ATTENUATING = tuple(w for w in Window if w is not Window.NONE)


def _stages(turning_points: tuple[float, ...], widths: tuple[float, ...], window: Window) -> Stages:
    try:
        return Stages(turning_points, widths, window)
    except ValueError as exc:
        raise ConfigError(f"process.turning_points / process.window_widths: {exc}") from None


def _build(stages: Stages, shape: tuple[int, int, int], schedule: Schedule, num_steps: int,
           complement_std: tuple[float, ...] = ()) -> DimensionVaryingProcess:  # fmt: skip
    try:
        return DimensionVaryingProcess(shape, stages, schedule, num_steps, complement_std=complement_std)
    except ValueError as exc:
        raise ConfigError(f"process.turning_points: {exc}") from None


@dataclass(frozen=True)
class DVDPOptions:
    turning_points: tuple[float, ...] = ()  # tau_1 < ... < tau_K in (0, 1); the resolution halves at each
    window_widths: tuple[float, ...] = ()  # component j is attenuated over the window ending at tau_{j+1}
    window: Window = Window.COSINE  # shape of the attenuation

    needs_fit = False

    def __post_init__(self) -> None:
        check_option(self.window in ATTENUATING, "process.window", f"an attenuation window "
                     f"({', '.join(w.value for w in ATTENUATING)}); without attenuation use process.kind = subspace",
                     self.window.value)  # fmt: skip
        self.stages()

    def stages(self) -> Stages:
        return _stages(tuple(self.turning_points), tuple(self.window_widths), self.window)

    def num_levels(self) -> int:
        return len(self.turning_points) + 1

    def parameterizations(self) -> tuple[Parameterization, ...]:
        return tuple(Parameterization)

    def fit(self, latents: Tensor) -> DVDPOptions:
        return self

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> DimensionVaryingProcess:
        return _build(self.stages(), shape, schedule, num_steps)


@dataclass(frozen=True)
class SubspaceOptions:
    turning_points: tuple[float, ...] = ()  # switch times tau_1 < ... < tau_K in (0, 1); at least one
    # s_perp, rms per dimension of each dropped component of the data (one per turning point), for data in
    # [-1, 1] in orthonormal pooled coordinates; () = estimated from the training data when training starts
    complement_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_option(bool(self.turning_points), "process.turning_points", "at least one switch time for subspace",
                     list(self.turning_points))  # fmt: skip
        if self.complement_std:
            check_option(len(self.complement_std) == len(self.turning_points) and min(self.complement_std) >= 0,
                         "process.complement_std", f"{len(self.turning_points)} values >= 0 (one per turning point)",
                         list(self.complement_std))  # fmt: skip
        self.stages()

    def stages(self) -> Stages:
        return _stages(tuple(self.turning_points), (), Window.NONE)

    def num_levels(self) -> int:
        return len(self.turning_points) + 1

    def parameterizations(self) -> tuple[Parameterization, ...]:
        return tuple(Parameterization)

    @property
    def needs_fit(self) -> bool:
        return not self.complement_std

    def fit(self, latents: Tensor) -> SubspaceOptions:
        """s_perp estimated from ``latents`` where none is given."""
        if not self.needs_fit:
            return self
        return dataclasses.replace(self, complement_std=estimate_complement_std(latents, len(self.turning_points)))

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> DimensionVaryingProcess:
        """Without complement_std the process builds (training estimates it), but refuses to cross a switch time."""
        return _build(self.stages(), shape, schedule, num_steps, tuple(self.complement_std))


def estimate_complement_std(images: Sequence[Tensor] | Tensor, num_levels: int) -> tuple[float, ...]:
    """s_perp_k for k = 1..K from data in [-1, 1]: the rms per dimension of c_{k-1}(x0), the
    component dropped at tau_k (in its orthonormal coordinates, where it has 3/4 of the
    dimensions of stage k-1). ``images``: (N, C, H, W), or a sequence of (C, H, W) images."""
    x = torch.stack(list(images)) if not isinstance(images, Tensor) else images
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"expected images of shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    x = x.double()
    dims = x[0].numel()
    parts = components(x, num_levels)[:num_levels]  # c_0 .. c_{K-1}
    return tuple(math.sqrt(float(c.pow(2).sum()) / (len(x) * dims * 0.75 / 4**j)) for j, c in enumerate(parts))
