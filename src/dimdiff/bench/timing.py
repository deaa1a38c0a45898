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


def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Q K^T and (softmax) V of fused attention: 2 b h s_q s_k (d_q + d_v)."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _cpu_sdpa_backward_flops(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                             *args: Any, **kwargs: Any) -> int:  # fmt: skip
    """The four matmuls of the attention backward (grad V, grad scores, grad Q, grad K): twice the forward."""
    return 2 * _cpu_sdpa_flops(query_shape, key_shape, value_shape)


# PyTorch's flop counter knows the CUDA fused-attention kernels but not the CPU one, so on the CPU
# scaled_dot_product_attention would count as zero FLOPs; these formulas fill the gap.
_EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmuls, convolutions and attention, as counted by
    torch.utils.flop_counter, plus CPU fused attention which it does not know)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory allocated by one call above what was allocated before it, in MiB: exact on CUDA
    (allocator statistics); on CPU, the high-water mark of tensor allocations recorded by the
    profiler's memory tracking (each operator's own allocations, so nested operators are not
    counted twice; buffers that libraries such as oneDNN allocate outside PyTorch are not seen)."""
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
        current += event.self_cpu_memory_usage or 0
        peak = max(peak, current)
    return peak / 2**20
