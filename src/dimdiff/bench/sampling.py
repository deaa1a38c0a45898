"""Sampling cost of every method with one U-Net and one step count N, and of the diffusers peer.

For each method: median wall time per image over interleaved runs (A B C A B C ...), FLOPs per
image (torch.utils.flop_counter over one whole N-step run), network evaluations (NFE) per image,
peak memory of one batch, and ratios to full-resolution DDIM measured in the same run. The
dimension ratio mean_n dim(x_t_n) / dim(x0) over the network evaluations is the analytic cost
bound sum_k (n_k / N) 4^-k of a convolutional net (1 for full-resolution methods). Weights are
untrained: they do not change the cost.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dimdiff.bench.environment import environment_record
from dimdiff.bench.peer import (
    MISSING_NOTE,
    diffusers_ddim_sampler,
    diffusers_scheduler,
    diffusers_unet,
    load_diffusers,
)
from dimdiff.bench.registry import (
    REFERENCE_KEY,
    BenchMethod,
    data_channels,
    reference_method,
    unregistered_kinds,
    with_data_statistics,
)  # fmt: skip
from dimdiff.bench.timing import count_flops, interleaved_times, median_ratio, peak_memory_mb
from dimdiff.build import (
    attention_levels,
    build_denoiser,
    build_head,
    build_net,
    build_process,
    data_shape,
    sample_images,
)
from dimdiff.config import SampleConfig, SamplerKind, config_to_dict
from dimdiff.nets.unet import num_parameters

__all__ = ["SamplingOptions", "Contestant", "SamplingRow", "sampling_bench", "sampler_label", "PEER_KEY",
           "PARAMETER_TOLERANCE"]  # fmt: skip

PEER_KEY = "diffusers"
PARAMETER_TOLERANCE = 0.05  # the peer's parameter count must be within 5 % of ours


@dataclass(frozen=True)
class SamplingOptions:
    batch: int = 16  # images per sampling run
    repeats: int = 10  # timed runs per contestant (interleaved)
    warmup: int = 1  # untimed runs per contestant first
    seed: int = 0  # initial weights and prior noise
    device: str = "cpu"
    peer: bool = True  # add diffusers' UNet2DModel + DDIMScheduler when importable


@dataclass(frozen=True)
class Contestant:
    key: str
    name: str
    sample: Callable[..., Tensor]  # sample(callback=None) -> one batch after N steps
    net: nn.Module  # the network whose evaluations are counted
    data_dim: int  # C * H * W of a clean image x0
    process: str  # the process kind, or the peer's scheduler
    sampler: str  # sampler_label
    steps: int  # sampling steps N
    parameters: int  # of the net
    diffusers: str | None = None  # the peer's diffusers version


@dataclass(frozen=True)
class StaticCosts:
    """What a contestant costs per image apart from time (from untimed runs)."""

    nfe: float  # network evaluations per image
    flops_per_image: float
    peak_memory_mb: float | None  # of one batch
    dimension_ratio: float | None  # mean dim(x_t) / dim(x0) over the network evaluations


@dataclass(frozen=True)
class SamplingRow:
    """One contestant's sampling cost, and its ratios to full-resolution DDIM's."""

    key: str
    name: str
    process: str
    sampler: str
    steps: int
    parameters: int
    batch: int  # images per sampling run
    time_per_image_s: float  # median run over the batch
    times_s: list[float]  # seconds of each timed run
    nfe: float
    flops_per_image: float
    peak_memory_mb: float | None
    dimension_ratio: float | None
    time_ratio_to_ddim: float  # median of per-run time ratios to DDIM's interleaved runs
    flops_ratio_to_ddim: float
    diffusers: str | None = None  # the peer's diffusers version
    parameter_gap: float | None = None  # the peer's parameters over ours, minus 1


def sampler_label(sample: SampleConfig) -> str:
    """'ddim eta=0', 'ddpm' or 'adaptive' (eta only where the sampler takes it)."""
    return f"ddim eta={sample.eta:g}" if sample.sampler is SamplerKind.DDIM else sample.sampler.value


def _method_contestant(method: BenchMethod, options: SamplingOptions) -> Contestant:
    (config, codec), device = with_data_statistics(method.config), torch.device(options.device)
    channels = data_channels(config)
    process = build_process(config.process, codec.latent_shape(data_shape(config, channels)))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)  # the same untrained weights for every method
        net = build_net(config.model, process, build_head(config, codec)).to(device).eval()
    denoiser = build_denoiser(config, net, process, codec=codec)

    @torch.inference_mode()
    def sample(callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
        generator = torch.Generator(device=device).manual_seed(options.seed)
        return sample_images(config.sample, denoiser, codec, options.batch, generator=generator, device=device,
                             callback=callback)  # fmt: skip

    dim = channels * config.data.resolution**2
    return Contestant(method.key, method.name, sample, net, dim, process=config.process.kind.value,
                      sampler=sampler_label(config.sample), steps=config.sample.steps,
                      parameters=num_parameters(net))  # fmt: skip


def _peer_contestant(reference: BenchMethod, options: SamplingOptions, notes: list[str]) -> Contestant | None:
    diffusers = load_diffusers()
    if diffusers is None:
        notes.append(MISSING_NOTE)
        return None
    config, device = reference.config, torch.device(options.device)
    channels, model = data_channels(config), config.model
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)
        unet = diffusers_unet(
            diffusers, channels=channels, resolution=config.data.resolution, base_channels=model.base_channels,
            channel_mult=tuple(model.channel_mult), num_res_blocks=model.num_res_blocks,
            attention_levels=attention_levels(model, config.data.resolution), num_heads=model.num_heads,
            scale_shift=model.scale_shift,
        ).to(device).eval()  # fmt: skip
    scheduler = diffusers_scheduler(diffusers, config.process, config.sample)
    sample = diffusers_ddim_sampler(unet, scheduler, data_shape(config, channels), options.batch,
                                    config.sample.steps, seed=options.seed, device=device)  # fmt: skip
    dim = channels * config.data.resolution**2
    return Contestant(PEER_KEY, f"diffusers UNet2DModel + DDIM {diffusers.__version__}", sample, unet, dim,
                      process="diffusers DDIMScheduler", sampler="ddim eta=0", steps=config.sample.steps,
                      parameters=num_parameters(unet), diffusers=diffusers.__version__)  # fmt: skip


def _static_costs(contestant: Contestant, batch: int, device: torch.device) -> StaticCosts:
    """FLOPs, NFE and dimension ratio per image, and peak memory of one batch (untimed runs)."""
    images, dims = [0], []

    def count(module: nn.Module, args: tuple[Any, ...]) -> None:
        images[0] += args[0].shape[0]  # each network call evaluates x_t of every image it gets

    def record(state: dict[str, Any]) -> None:
        dims.append(state["x_t"][0].numel())

    handle = contestant.net.register_forward_pre_hook(count)
    try:
        contestant.sample(record)
    finally:
        handle.remove()
    return StaticCosts(
        nfe=images[0] / batch,
        flops_per_image=count_flops(contestant.sample) / batch,
        peak_memory_mb=peak_memory_mb(contestant.sample, device),
        dimension_ratio=statistics.fmean(dims) / contestant.data_dim if dims else None,
    )


@dataclass(frozen=True)
class _Measured:
    contestant: Contestant
    seconds: list[float]  # per timed run
    costs: StaticCosts


def _row(mine: _Measured, ref: _Measured, batch: int) -> SamplingRow:
    """A contestant's row, with ratios to the reference (DDIM) measured in the same run."""
    c, seconds = mine.contestant, mine.seconds
    return SamplingRow(
        key=c.key, name=c.name, process=c.process, sampler=c.sampler, steps=c.steps, parameters=c.parameters,
        batch=batch, time_per_image_s=statistics.median(seconds) / batch, times_s=seconds, nfe=mine.costs.nfe,
        flops_per_image=mine.costs.flops_per_image, peak_memory_mb=mine.costs.peak_memory_mb,
        dimension_ratio=mine.costs.dimension_ratio, time_ratio_to_ddim=median_ratio(seconds, ref.seconds),
        flops_ratio_to_ddim=mine.costs.flops_per_image / ref.costs.flops_per_image, diffusers=c.diffusers,
        parameter_gap=c.parameters / ref.contestant.parameters - 1 if c.key == PEER_KEY else None,
    )  # fmt: skip


def _rows(contestants: Sequence[Contestant], times: list[list[float]], batch: int,
          device: torch.device) -> list[SamplingRow]:  # fmt: skip
    measured = [_Measured(c, t, _static_costs(c, batch, device)) for c, t in zip(contestants, times, strict=True)]
    ref = next(m for m in measured if m.contestant.key == REFERENCE_KEY)
    return [_row(m, ref, batch) for m in measured]


def _check_peer_size(rows: list[SamplingRow], notes: list[str]) -> None:
    ours = next(r for r in rows if r.key == REFERENCE_KEY).parameters
    for row in rows:
        if row.parameter_gap is not None and abs(row.parameter_gap) > PARAMETER_TOLERANCE:
            notes.append(f"warning: diffusers has {row.parameters:,} parameters against our {ours:,} "
                         f"({100 * row.parameter_gap:+.1f} %): the widths do not match")  # fmt: skip


def sampling_bench(methods: Sequence[BenchMethod], options: SamplingOptions = SamplingOptions()) -> dict[str, Any]:
    """Measure every method (and the peer) in one interleaved run; a JSON-able result."""
    environment = environment_record(seeds={"weights_and_noise": options.seed})
    device, notes = torch.device(options.device), []
    contestants = [_method_contestant(m, options) for m in methods]
    peer = _peer_contestant(reference_method(methods), options, notes) if options.peer else None
    contestants += [peer] if peer is not None else []
    times = interleaved_times([c.sample for c in contestants], options.repeats, options.warmup, device)
    rows = _rows(contestants, times, options.batch, device)
    _check_peer_size(rows, notes)
    missing = unregistered_kinds()
    if missing:
        notes.append(f"kinds without a benchmark entry: {', '.join(missing)}")
    return {
        "benchmark": "sampling",
        "settings": asdict(options) | {"steps": methods[0].config.sample.steps, "reference": REFERENCE_KEY},
        "model": config_to_dict(methods[0].config)["model"],
        "data": config_to_dict(methods[0].config)["data"] | {"channels": data_channels(methods[0].config)},
        "rows": [asdict(row) for row in rows],
        "notes": notes,
        "environment": environment,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
