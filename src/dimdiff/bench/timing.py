"""Measuring cost the same way for every method: interleaved wall-clock medians, FLOPs
counted by torch.utils.flop_counter, and peak memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["interleaved_times", "count_flops", "peak_memory_mb", "median_ratio", "synchronize"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    functions: Sequence[Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> list[list[float]]:
    """Seconds per call for each function, run A B C A B C ... so that drifts in machine load
    hit all of them alike. Returns one list of ``repeats`` timings per function."""
    device = device or torch.device("cpu")
    for fn in functions:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[i].append(time.perf_counter() - start)
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of per-repeat ratios numerator[i] / denominator[i] (pairs ran side by side)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmuls and convolutions, as counted by PyTorch)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory allocated by one call, in MiB: exact on CUDA (allocator statistics); on CPU,
    the high-water mark of tensor allocations recorded by the profiler's memory tracking."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.cpu_memory_usage else 0
        peak = max(peak, current)
    return peak / 2**20
