"""Training cost of every method: examples per second and FLOPs per example, as expectations over
the distribution of t that each process trains with.

One timed step is what the training loop does per optimizer step: draw t, noise, x_t =
forward_sample, target, forward, loss, backward, gradient clipping and an AdamW step (no EMA, no
data loading: x0 is synthetic, uniform in [-1, 1], since pixel values do not change the cost).

A process whose state changes resolution trains each batch at one level (a DVDP stage), drawn
with the probability ``process.training_levels()`` gives it. A handful of random draws would
weigh the levels by chance, so every level is measured on its own, with batches forced to its
times (``sample_training_t(level=k)``), and the levels are combined by their probabilities p_k:

    seconds per example = sum_k p_k s_k   (examples per second is its inverse)
    FLOPs per example   = sum_k p_k F_k
    peak memory         = max_k M_k

The timings of all (set-up, level) pairs are interleaved. A process with one level (Gaussian)
is measured exactly as a plain training step. Methods that differ only in the sampler train the
same model and share one row; its ``levels`` keep the per-level figures.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from dimdiff.bench.environment import environment_record
from dimdiff.bench.registry import (
    REFERENCE_KEY,
    BenchMethod,
    data_channels,
    training_groups,
    unregistered_kinds,
    with_data_statistics,
)  # fmt: skip
from dimdiff.bench.timing import count_flops, interleaved_times, peak_memory_mb
from dimdiff.build import build_denoiser, build_head, build_net, build_process, data_shape
from dimdiff.config import Config, config_to_dict
from dimdiff.nets.unet import num_parameters

__all__ = ["TrainingOptions", "TrainingStep", "LevelCost", "TrainingRow", "ExpectedCost", "training_bench",
           "expected_cost"]  # fmt: skip

_FLOP_BATCHES = 1_000_000  # batch indices of FLOP counting, apart from those of timed steps


@dataclass(frozen=True)
class TrainingOptions:
    batch: int = 16  # examples per step
    repeats: int = 10  # timed steps per method and level (interleaved)
    warmup: int = 2  # untimed steps per method and level first
    flop_batches: int = 8  # seeded batches (t draws) per level that FLOPs are averaged over
    seed: int = 0  # weights, data, t and noise
    device: str = "cpu"


@dataclass(frozen=True)
class LevelCost:
    """A training step with every batch at one level (``process.training_levels()[level]``)."""

    level: int  # index into process.training_levels(), finest first
    probability: float  # share of training batches at this level
    t_range: tuple[float, float]  # (t_low, t_high) of its batches
    state_shape: tuple[int, ...]  # (C, H, W) of x_t at this level
    examples_per_s: float  # batch * repeats / total seconds
    examples_per_s_median: float  # batch / median seconds
    times_s: list[float]  # seconds of each timed step
    flops_per_example: float  # forward, loss and backward
    forward_flops_per_example: float
    peak_memory_mb: float | None


@dataclass(frozen=True)
class TrainingRow:
    """One training set-up: expectations over its levels, and ratios to full-resolution DDIM's."""

    key: str  # the keys of the methods that share this training, joined by "+"
    name: str
    process: str
    parameters: int
    batch: int
    examples_per_s: float  # 1 / sum_k p_k (seconds per example at level k)
    examples_per_s_median: float  # the same from each level's median step
    flops_per_example: float  # sum_k p_k F_k, forward, loss and backward
    forward_flops_per_example: float  # sum_k p_k F_k of the forward alone
    training_over_forward_flops: float
    dimension_ratio: float  # sum_k p_k dim(x_t at level k) / dim(x0)
    peak_memory_mb: float | None  # the largest over the levels
    time_ratio_to_ddim: float  # seconds per example over DDIM's
    flops_ratio_to_ddim: float  # FLOPs per example over DDIM's
    levels: tuple[LevelCost, ...]  # finest first


class TrainingStep:
    """One method's training step on synthetic data; batch i is the same on every call."""

    def __init__(self, config: Config, batch: int, seed: int, device: torch.device) -> None:
        config, self.codec = with_data_statistics(config)
        self.config, self.batch, self.seed, self.device = config, batch, seed, device
        self.shape = data_shape(config, data_channels(config))  # of the images
        self.process = build_process(config.process, self.codec.latent_shape(self.shape))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.net = build_net(config.model, self.process, build_head(config, self.codec)).to(device).train()
        self.denoiser = build_denoiser(config, self.net, self.process, codec=self.codec)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.train.lr)
        self.calls = 0  # batch index of the next timed step

    def loss(self, index: int, level: int | None = None, backward: bool = True) -> tuple[Tensor, tuple[int, ...]]:
        """Loss of batch ``index`` (and its gradients), its t drawn at ``level`` (None: the level
        drawn too); also the shape (C, H, W) of its x_t."""
        g = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + index)
        x0 = torch.rand((self.batch, *self.shape), generator=g, device=self.device) * 2 - 1  # (b, C, H, W)
        t = self.process.sample_training_t(self.batch, generator=g, device=self.device, level=level)  # (b,)
        z0 = self.codec.encode(x0)  # (b, C', H', W')
        noise = self.process.noise_like(z0, t, generator=g)  # shape of z_t
        with torch.set_grad_enabled(backward):
            loss, _ = self.denoiser.loss(z0, t, noise)
            if backward:
                loss.backward()
        return loss.detach(), tuple(noise.shape[1:])

    def step(self, level: int | None = None) -> None:
        """One optimizer step, as the training loop takes it (its batch at ``level`` when given)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.calls, level)
        self.calls += 1
        clip = self.config.train.grad_clip
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip if clip > 0 else math.inf)
        self.optimizer.step()

    def flops_per_example(self, batches: int, level: int | None = None, backward: bool = True) -> float:
        """FLOPs of forward (+ loss + backward), per example, averaged over seeded batches at ``level``."""
        per_batch = [count_flops(lambda i=i: self.loss(_FLOP_BATCHES + i, level, backward)) for i in range(batches)]
        self.net.zero_grad(set_to_none=True)
        return statistics.fmean(per_batch) / self.batch

    def state_shape(self, level: int) -> tuple[int, ...]:
        """Shape (C, H, W) of x_t in a batch at ``level``."""
        with torch.no_grad():
            return self.loss(_FLOP_BATCHES, level, backward=False)[1]


def _level_cost(step: TrainingStep, level: int, seconds: list[float], options: TrainingOptions,
                device: torch.device) -> LevelCost:  # fmt: skip
    """The untimed measurements of one level, with its timings."""
    spec = step.process.training_levels()[level]
    return LevelCost(
        level=level, probability=spec.probability, t_range=(spec.t_low, spec.t_high),
        state_shape=step.state_shape(level),
        examples_per_s=options.batch * len(seconds) / sum(seconds),
        examples_per_s_median=options.batch / statistics.median(seconds), times_s=seconds,
        flops_per_example=step.flops_per_example(options.flop_batches, level),
        forward_flops_per_example=step.flops_per_example(options.flop_batches, level, backward=False),
        peak_memory_mb=peak_memory_mb(functools.partial(step.step, level), device),
    )  # fmt: skip


@dataclass(frozen=True)
class ExpectedCost:
    """A set-up's cost over the levels it trains at, weighted by their probabilities."""

    examples_per_s: float  # 1 / sum_k p_k (seconds per example at level k)
    examples_per_s_median: float  # the same from each level's median step
    flops_per_example: float  # sum_k p_k F_k
    forward_flops_per_example: float
    peak_memory_mb: float | None  # max_k M_k


def expected_cost(levels: Sequence[LevelCost]) -> ExpectedCost:
    """The probability-weighted expectations over ``levels`` (examples per second from the expected
    seconds per example) and the largest peak memory."""

    def expected(value: Callable[[LevelCost], float]) -> float:
        return math.fsum(lv.probability * value(lv) for lv in levels)

    peaks = [lv.peak_memory_mb for lv in levels if lv.peak_memory_mb is not None]
    return ExpectedCost(
        examples_per_s=1.0 / expected(lambda lv: 1.0 / lv.examples_per_s),
        examples_per_s_median=1.0 / expected(lambda lv: 1.0 / lv.examples_per_s_median),
        flops_per_example=expected(lambda lv: lv.flops_per_example),
        forward_flops_per_example=expected(lambda lv: lv.forward_flops_per_example),
        peak_memory_mb=max(peaks) if peaks else None,
    )


def _row(group: list[BenchMethod], step: TrainingStep, levels: tuple[LevelCost, ...], reference: ExpectedCost,
         options: TrainingOptions) -> TrainingRow:  # fmt: skip
    cost = expected_cost(levels)
    dimension = math.fsum(lv.probability * math.prod(lv.state_shape) for lv in levels) / math.prod(step.shape)
    return TrainingRow(
        key="+".join(m.key for m in group), name=" / ".join(m.name for m in group),
        process=group[0].config.process.kind.value, parameters=num_parameters(step.net), batch=options.batch,
        examples_per_s=cost.examples_per_s, examples_per_s_median=cost.examples_per_s_median,
        flops_per_example=cost.flops_per_example, forward_flops_per_example=cost.forward_flops_per_example,
        training_over_forward_flops=cost.flops_per_example / cost.forward_flops_per_example,
        dimension_ratio=dimension, peak_memory_mb=cost.peak_memory_mb,
        time_ratio_to_ddim=reference.examples_per_s / cost.examples_per_s,
        flops_ratio_to_ddim=cost.flops_per_example / reference.flops_per_example, levels=levels,
    )  # fmt: skip


def _measure(steps: Sequence[TrainingStep], options: TrainingOptions,
             device: torch.device) -> list[tuple[LevelCost, ...]]:  # fmt: skip
    """Every level of every set-up that training draws (probability > 0), timed interleaved."""
    pairs = [(step, k) for step in steps for k, spec in enumerate(step.process.training_levels())
             if spec.probability > 0]  # fmt: skip
    times = interleaved_times([functools.partial(s.step, k) for s, k in pairs], options.repeats, options.warmup,
                              device)  # fmt: skip
    costs = [(s, _level_cost(s, k, t, options, device)) for (s, k), t in zip(pairs, times, strict=True)]
    return [tuple(c for s, c in costs if s is step) for step in steps]


def training_bench(methods: Sequence[BenchMethod], options: TrainingOptions = TrainingOptions()) -> dict[str, Any]:
    """Measure one training step of every distinct training set-up, interleaved; a JSON-able result."""
    environment = environment_record(seeds={"weights_data_t_noise": options.seed})
    device = torch.device(options.device)
    groups = training_groups(methods)
    steps = [TrainingStep(g[0].config, options.batch, options.seed, device) for g in groups]
    levels = _measure(steps, options, device)
    ref = next(i for i, g in enumerate(groups) if any(m.key == REFERENCE_KEY for m in g))
    reference = expected_cost(levels[ref])
    rows = [_row(g, s, lv, reference, options) for g, s, lv in zip(groups, steps, levels, strict=True)]
    missing = unregistered_kinds()
    notes = [f"kinds without a benchmark entry: {', '.join(missing)}"] if missing else []
    config = config_to_dict(methods[0].config)
    return {
        "benchmark": "training",
        "settings": asdict(options) | {"reference": REFERENCE_KEY},
        "model": config["model"], "data": config["data"] | {"channels": data_channels(methods[0].config)},
        "train": config["train"],
        "rows": [asdict(row) for row in rows],
        "notes": notes,
        "environment": environment,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
