"""The process kinds dimdiff knows: one row per kind in `PROCESSES`, keyed by its enum member.

A row maps a kind to the class of its options: a frozen dataclass (`ProcessOptions`) whose fields are
the kind's own keys of the ``[process]`` section (written flat beside the common keys ``kind``,
``schedule``, ``num_steps`` and ``parameterization``), checked in the options' own ``__post_init__``,
and which builds the process. A new process joins by adding its module, an enum member and a row;
configuration, training, sampling and the CLI then accept it by name.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from torch import Tensor

from dimdiff.errors import find_kind
from dimdiff.process.base import DiffusionProcess
from dimdiff.process.dvdp_options import DVDPOptions, SubspaceOptions
from dimdiff.process.gaussian import GaussianOptions
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.scale_space import ScaleSpaceOptions
from dimdiff.process.schedules import Schedule

__all__ = ["PROCESSES", "ProcessKind", "ProcessOptions", "process_kind"]


class ProcessKind(str, enum.Enum):
    GAUSSIAN = "gaussian"  # DDPM/DDIM variance-preserving baseline
    DVDP = "dvdp"  # dimensionality-varying diffusion: attenuate and drop detail components
    SUBSPACE = "subspace"  # subspace diffusion: drop detail components unattenuated (approximate crossing)
    SSD = "ssd"  # scale-space diffusion: the forward process also downsamples


class ProcessOptions(Protocol):
    """The options of one process kind (a frozen dataclass; ConfigErrors name ``process.<key>``)."""

    def num_levels(self) -> int:
        """How many resolutions the state takes (1: it keeps the data's all along)."""
        ...

    def parameterizations(self) -> tuple[Parameterization, ...]:
        """What the network may predict for this process."""
        ...

    @property
    def needs_fit(self) -> bool:
        """Whether something must still be estimated from the training data (`fit`)."""
        ...

    def fit(self, latents: Tensor) -> ProcessOptions:
        """These options with what they estimate from training latents (N, C, H, W) filled in."""
        ...

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> DiffusionProcess:
        """The process for clean data (latents) of ``shape`` (C, H, W)."""
        ...


PROCESSES: dict[Any, type] = {
    ProcessKind.GAUSSIAN: GaussianOptions,
    ProcessKind.DVDP: DVDPOptions,
    ProcessKind.SUBSPACE: SubspaceOptions,
    ProcessKind.SSD: ScaleSpaceOptions,
}


def process_kind(value: Any) -> enum.Enum:
    """The registered kind named ``value`` (its enum member or its value)."""
    return find_kind(PROCESSES, value, "process.kind")
