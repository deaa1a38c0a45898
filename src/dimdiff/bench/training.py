"""Training cost of every method: examples per second and FLOPs per example, averaged over the
distribution of t that each process trains with.

One timed step is what the training loop does per optimizer step: draw t from
``process.sample_training_t``, noise, x_t = forward_sample, target, forward, loss, backward,
gradient clipping and an AdamW step (no EMA, no data loading: x0 is synthetic, uniform in
[-1, 1], since pixel values do not change the cost). For the Gaussian baseline every t costs the
same; for a dimension-varying process t decides the resolution, so FLOPs are averaged over
``flop_batches`` seeded batches and examples per second is total examples / total time.
Methods that differ only in the sampler train the same model and share one row.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
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

__all__ = ["TrainingOptions", "TrainingStep", "training_bench"]

_FLOP_BATCHES = 1_000_000  # batch indices of FLOP counting, apart from those of timed steps


@dataclass(frozen=True)
class TrainingOptions:
    batch: int = 16  # examples per step
    repeats: int = 10  # timed steps per method (interleaved)
    warmup: int = 2  # untimed steps per method first
    flop_batches: int = 8  # seeded batches (t draws) that FLOPs are averaged over
    seed: int = 0  # weights, data, t and noise
    device: str = "cpu"


class TrainingStep:
    """One method's training step on synthetic data; batch i is the same on every call."""

    def __init__(self, config: Config, batch: int, seed: int, device: torch.device) -> None:
        config, self.codec = with_data_statistics(config)
        self.config, self.batch, self.seed, self.device = config, batch, seed, device
        self.shape = data_shape(config, data_channels(config))  # of the images
        self.process = build_process(config.process, self.codec.latent_shape(self.shape))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.net = build_net(config.model, self.process, build_head(config)).to(device).train()
        self.denoiser = build_denoiser(config, self.net, self.process)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.train.lr)
        self.calls = 0  # batch index of the next timed step

    def loss(self, index: int, backward: bool = True) -> tuple[Tensor, int]:
        """Loss of batch ``index`` (and its gradients); also the dimension of its x_t per example."""
        g = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + index)
        x0 = torch.rand((self.batch, *self.shape), generator=g, device=self.device) * 2 - 1  # (b, C, H, W)
        t = self.process.sample_training_t(self.batch, generator=g, device=self.device)  # (b,)
        z0 = self.codec.encode(x0)  # (b, C', H', W')
        noise = self.process.noise_like(z0, t, generator=g)  # shape of z_t
        with torch.set_grad_enabled(backward):
            loss, _ = self.denoiser.loss(z0, t, noise)
            if backward:
                loss.backward()
        return loss.detach(), noise[0].numel()

    def step(self) -> None:
        """One optimizer step, as the training loop takes it."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.calls)
        self.calls += 1
        clip = self.config.train.grad_clip
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), clip if clip > 0 else math.inf)
        self.optimizer.step()

    def flops_per_example(self, batches: int, backward: bool = True) -> float:
        """FLOPs of forward (+ loss + backward), per example, averaged over seeded batches."""
        per_batch = [count_flops(lambda i=i: self.loss(_FLOP_BATCHES + i, backward)) for i in range(batches)]
        self.net.zero_grad(set_to_none=True)
        return statistics.fmean(per_batch) / self.batch

    def dimension_ratio(self, batches: int) -> float:
        """Mean dim(x_t) / dim(x0) over the same batches (1 for full-resolution processes)."""
        with torch.no_grad():
            dims = [self.loss(_FLOP_BATCHES + i, backward=False)[1] for i in range(batches)]
        return statistics.fmean(dims) / math.prod(self.shape)


def _row(group: list[BenchMethod], step: TrainingStep, seconds: list[float], options: TrainingOptions,
         device: torch.device) -> dict[str, Any]:  # fmt: skip
    full = step.flops_per_example(options.flop_batches)
    forward = step.flops_per_example(options.flop_batches, backward=False)
    return {
        "key": "+".join(m.key for m in group),
        "name": " / ".join(m.name for m in group),
        "process": group[0].config.process.kind.value,
        "parameters": num_parameters(step.net),
        "batch": options.batch,
        "examples_per_s": options.batch * len(seconds) / sum(seconds),
        "examples_per_s_median": options.batch / statistics.median(seconds),
        "times_s": seconds,
        "flops_per_example": full,
        "forward_flops_per_example": forward,
        "training_over_forward_flops": full / forward,
        "dimension_ratio": step.dimension_ratio(options.flop_batches),
        "peak_memory_mb": peak_memory_mb(step.step, device),
    }


def training_bench(methods: Sequence[BenchMethod], options: TrainingOptions = TrainingOptions()) -> dict[str, Any]:
    """Measure one training step of every distinct training set-up, interleaved; a JSON-able result."""
    environment = environment_record(seeds={"weights_data_t_noise": options.seed})
    device = torch.device(options.device)
    groups = training_groups(methods)
    steps = [TrainingStep(g[0].config, options.batch, options.seed, device) for g in groups]
    times = interleaved_times([s.step for s in steps], options.repeats, options.warmup, device)
    rows = [_row(g, s, t, options, device) for g, s, t in zip(groups, steps, times, strict=True)]
    ref = next(r for r, g in zip(rows, groups, strict=True) if any(m.key == REFERENCE_KEY for m in g))
    for row in rows:
        row["time_ratio_to_ddim"] = ref["examples_per_s"] / row["examples_per_s"]
        row["flops_ratio_to_ddim"] = row["flops_per_example"] / ref["flops_per_example"]
    missing = unregistered_kinds()
    notes = [f"process kinds without a benchmark entry: {', '.join(k.value for k in missing)}"] if missing else []
    config = config_to_dict(methods[0].config)
    return {
        "benchmark": "training",
        "settings": asdict(options) | {"reference": REFERENCE_KEY},
        "model": config["model"], "data": config["data"], "train": config["train"],
        "rows": rows,
        "notes": notes,
        "environment": environment,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
