"""A throwaway process kind that exists only in the tests: the Gaussian process with a sigmoid log-SNR
schedule of its own, registered as a new `process.kind` by adding one row to `process.kinds.PROCESSES`
(an enum member and an options dataclass, as a real process adds in its own module). It shows that a
new process plugs in through the table alone: the contract suite (`test_process_contract`) and a whole
train -> checkpoint -> sample run (`test_process_kinds`) take it with no change to shared code."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from dimdiff.errors import check_option
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.kinds import PROCESSES
from dimdiff.process.parameterization import Parameterization
from dimdiff.process.schedules import Schedule


class ThrowawayKind(str, enum.Enum):
    SIGMOID = "sigmoid-gaussian"


@dataclass(frozen=True)
class SigmoidSchedule(Schedule):
    """log-SNR(t) = 6 - slope t, alpha^2 = sigmoid(log-SNR)."""

    slope: float = 12.0

    def log_alpha2(self, t: Tensor) -> Tensor:
        return torch.nn.functional.logsigmoid(6.0 - self.slope * t.to(torch.float64))


@dataclass(frozen=True)
class SigmoidOptions:
    slope: float = 12.0  # process.slope: how fast the log-SNR falls (its own schedule; process.schedule is unused)

    needs_fit = False

    def __post_init__(self) -> None:
        check_option(self.slope > 6.0, "process.slope", "a value > 6 (log-SNR below 0 at t = 1)", self.slope)

    def num_levels(self) -> int:
        return 1

    def parameterizations(self) -> tuple[Parameterization, ...]:
        return tuple(Parameterization)

    def fit(self, latents: Tensor) -> SigmoidOptions:
        return self

    def build(self, shape: tuple[int, int, int], schedule: Schedule, num_steps: int) -> GaussianProcess:
        return GaussianProcess(shape, SigmoidSchedule(self.slope), num_steps)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The throwaway kind in the PROCESSES table for the duration of the block."""
    PROCESSES[ThrowawayKind.SIGMOID] = SigmoidOptions
    try:
        yield
    finally:
        del PROCESSES[ThrowawayKind.SIGMOID]
