"""The contract every diffusion process in dimdiff implements.

Samplers and the trainer see a process only through this protocol, so a process whose signal
dimension changes with t (DVDP, scale space) plugs in without touching either: it declares the
shape of the state at each t and crosses resolution changes inside ``reverse_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dimdiff.process.parameterization import Parameterization
from dimdiff.process.timesteps import Spacing

__all__ = [
    "CrossHook", "DiffusionProcess", "ReverseNoise", "TimeLike", "TrainingLevel", "broadcast_time", "check_level",
]  # fmt: skip

TimeLike = Tensor | float
CrossHook = Callable[[Tensor, float], Tensor]  # (state just after an upward crossing, tau) -> state to go on from
# explicit noise of one reverse step: a tensor, or (first part, rest) for a step that straddles a
# resolution change (see DiffusionProcess.reverse_step)
ReverseNoise = Tensor | tuple["ReverseNoise", "ReverseNoise"]


@dataclass(frozen=True)
class TrainingLevel:
    """One resolution level of training: the share of batches drawn at it and their times."""

    probability: float  # share of training batches at this level (the levels' shares sum to 1)
    t_low: float  # its batches' times lie between t_low and t_high (drawn uniformly)
    t_high: float


@runtime_checkable
class DiffusionProcess(Protocol):
    data_shape: tuple[int, int, int]  # (C, H, W) of the clean data x0
    num_steps: int  # the discrete step count T that samplers' timestep grids refer to
    # True: a reverse step may end at a finer resolution than its x0 estimate's, the process refilling the
    # detail itself (DVDP's crossing); False: the x0 estimate must be at least as fine as the state at s,
    # and the process's own grids never ask for more (scale-space diffusion's change steps)
    refills_on_crossing: bool

    def shape_at(self, t: float) -> tuple[int, int, int]:
        """Shape (C, H, W) of the state x_t at time t."""
        ...

    def prior_sample(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """n samples of x_1 from the prior, shape (n, *shape_at(1))."""
        ...

    def sample_training_t(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
        level: int | None = None,
    ) -> Tensor:
        """Training times, shape (n,). All of one batch share the state's shape. ``level`` (an index into
        ``training_levels()``) restricts the batch to that level's times; None draws the level too, with
        its probability."""
        ...

    def training_levels(self) -> tuple[TrainingLevel, ...]:
        """The levels ``sample_training_t`` draws a batch from, one per entry of ``net_shapes()`` and in
        its order (finest first), with their probabilities and time ranges: a process whose state never
        changes resolution has one, of probability 1."""
        ...

    def forward_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x0); x0 at data resolution, noise of shape_at(t)."""
        ...

    def noise_like(self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise of the shape that forward_sample(x0, t, .) expects."""
        ...

    def forward_transition(self, x_s: Tensor, s: float, t: float, noise: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x_s) for s < t, linear in (x_s, noise): x_s and ``noise`` of
        shape (B, *shape_at(s)), the result of shape (B, *shape_at(t)) (a process whose resolution
        falls between s and t drops what is dead at t). Chained from forward_sample(x0, s, .) it has
        the law of forward_sample(x0, t, .)."""
        ...

    def x0_from_prediction(self, x_t: Tensor, prediction: Tensor, t: Tensor, kind: Parameterization) -> Tensor:
        """The x0 estimate implied by a network output of the given parameterization."""
        ...

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor, kind: Parameterization) -> Tensor:
        """What a network of the given parameterization should output for (x0, noise, t)."""
        ...

    def reverse_step(
        self,
        x_t: Tensor,
        x0_hat: Tensor,
        t: float,
        s: float,
        *,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise: ReverseNoise | None = None,
        on_cross: CrossHook | None = None,
    ) -> Tensor:
        """One step from time t to time s < t given an x0 estimate (eta = 1: ancestral DDPM
        posterior; eta = 0: deterministic DDIM). Where the step crosses a resolution change, the
        state just after it goes through ``on_cross`` (processes that never cross ignore it).

        ``noise`` replaces every draw from ``generator`` (the result is then a deterministic, linear
        function of x_t, x0_hat and the noise, whatever the generator):
          - a step that stays at one resolution, or ends exactly on a resolution change and crosses
            up there: one standard normal tensor of the destination shape (B, *shape_at(s))
            (a crossing takes the in-stage noise and the refilled detail from orthogonal
            projections of it, so the step is exact in distribution);
          - a step that straddles a resolution change tau (s < tau < t): a pair (noise for the step
            down to and across tau, noise for the step tau -> s), each by these rules; a plain
            tensor there is a ValueError.
        With ``noise`` None the draws come from ``generator``."""
        ...

    def log_snr(self, t: TimeLike) -> Tensor:
        """Log signal-to-noise ratio of the (coarsest kept) signal at t, float64."""
        ...

    def timesteps(self, n: int, spacing: Spacing) -> Tensor:
        """The n-step grid t_n > ... > t_0 = 0 that samplers walk for this process."""
        ...

    def x0_bound(self, t: float) -> float:
        """Largest |x0| in the state's coordinates at t for data in [-1, 1] (for clipping)."""
        ...

    def target_shape_at(self, t: float) -> tuple[int, int, int]:
        """Shape (C, H, W) of the x0 estimate that ``reverse_step`` takes at t, and so of what the
        network must produce (a process may ask for x0 at another resolution than x_t's)."""
        ...

    def net_shapes(self) -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
        """Every (state shape, target shape) pair the network meets, one per resolution level,
        finest state first (level k of a staged network serves entry k)."""
        ...

    def loss_dim(self, target_shape: tuple[int, int, int]) -> int:
        """N, what a per-example squared error summed over a target of ``target_shape`` (C, h, w) is divided by."""
        ...

    def state_scale(self, t: float) -> float:
        """c with state = c x (average-pooled pixel values) at t: 1 for a state in pixel units. A denoiser in
        pixel units feeds the network x_t / c and multiplies its output by c (EDM's c_in, c_out)."""
        ...


def broadcast_time(t: TimeLike, like: Tensor) -> Tensor:
    """t as a float64 tensor for a batch ``like`` of shape (B, ...): shape () for one time
    shared by the batch (cheap), else (B,)."""
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device)
    if t.ndim == 0:
        return t
    if t.shape != (like.shape[0],):
        raise ValueError(f"expected t of shape () or ({like.shape[0]},), got {tuple(t.shape)}")
    return t


def check_level(level: int | None, levels: int) -> None:
    """Refuse a training level that is not an index into a process's ``levels`` training levels."""
    if level is not None and not 0 <= level < levels:
        raise ValueError(f"expected a training level in 0..{levels - 1} (an index into training_levels()), "
                         f"got {level}")  # fmt: skip
