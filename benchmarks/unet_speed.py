"""Speed of dimdiff's UNet against diffusers' UNet2DModel at matched widths, on CPU.

Both nets get the same levels, widths, ResBlocks per level, attention level, heads and time
injection, so their parameter counts agree within 5 % (a warning is printed otherwise).
Timings are interleaved (ours, peer, ours, peer, ...) so that drifts in machine load hit
both alike; the reported ratio is the median of the per-pair ratios peer / ours (> 1 means
ours is faster). diffusers runs as shipped (NCHW) and, for reference, converted to
channels_last (our U-Net's internal layout), since most of our edge comes from that layout.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/unet_speed.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from dimdiff.bench.environment import environment_record
from dimdiff.bench.peer import MISSING_NOTE, diffusers_unet, load_diffusers
from dimdiff.bench.timing import count_flops, interleaved_times
from dimdiff.nets.unet import UNet, num_parameters


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15, help="timed pairs per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per net first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-channels", type=int, default=64)
    p.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2, 2, 2])
    p.add_argument("--num-res-blocks", type=int, default=2)
    p.add_argument("--attention-level", type=int, default=1)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--additive", action="store_true",
                   help="additive time injection (DDPM) instead of scale-shift norm (ADM)")
    p.add_argument("--no-peer-channels-last", dest="peer_channels_last", action="store_false",
                   help="skip the extra run of diffusers converted to channels_last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/unet_speed.json"))
    return p.parse_args()


def build_ours(args: argparse.Namespace) -> nn.Module:
    return UNet(
        in_channels=3, out_channels=3, base_channels=args.base_channels,
        channel_mult=tuple(args.channel_mult), num_res_blocks=args.num_res_blocks,
        attention_levels=(args.attention_level,), num_heads=args.num_heads,
        scale_shift=not args.additive,
    )


def build_peer(args: argparse.Namespace) -> nn.Module | None:
    """diffusers' UNet2DModel with our widths, or None if diffusers is missing."""
    diffusers = load_diffusers()
    if diffusers is None:
        print(f"note: {MISSING_NOTE}")
        return None
    return diffusers_unet(
        diffusers, channels=3, resolution=args.resolution, base_channels=args.base_channels,
        channel_mult=tuple(args.channel_mult), num_res_blocks=args.num_res_blocks,
        attention_levels=(args.attention_level,), num_heads=args.num_heads, scale_shift=not args.additive,
    )


def forward_call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, peer: bool) -> torch.Tensor:
    if peer:
        return net(x, t * 1000).sample  # diffusers takes DDPM step indices
    return net(x, t)


def make_steps(net: nn.Module, x: torch.Tensor, t: torch.Tensor, peer: bool
               ) -> tuple[Callable[[], None], Callable[[], None]]:
    """A forward-only step (inference mode) and a forward+backward step (training mode)."""

    def forward() -> None:
        net.eval()
        with torch.inference_mode():
            forward_call(net, x, t, peer)

    def forward_backward() -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        forward_call(net, x, t, peer).square().mean().backward()

    return forward, forward_backward


def best_gflops(step: Callable[[], object], flop: float, repeats: int = 7) -> float:
    """Throughput of the fastest of `repeats` calls (peak capability, robust to load)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return flop / min(times) / 1e9


def matmul_gflops(n: int = 2048) -> dict[str, float]:
    """Dense fp32 n x n x n GEMM throughput at the current thread count, by two libraries.

    torch.mm goes to the BLAS torch was built with (MKL on x86, which may take slow code
    paths on non-Intel CPUs); a 1x1 convolution of an n-channel NHWC map with n positions is
    the same GEMM done by oneDNN, the library that runs the U-Net's convolutions.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = torch.randn(1, n, 32, n // 32).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return {"torch_mm": best_gflops(lambda: a @ b, 2 * n**3),
                "onednn_conv1x1": best_gflops(lambda: torch.conv2d(x, w), 2 * n**3)}


def forward_flops(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> int:
    """FLOPs of one forward (attention included: dimdiff.bench.timing.count_flops)."""
    net.eval()
    with torch.inference_mode():
        return count_flops(lambda: net(x, t))


def summarize(names: list[str], times: list[list[float]]) -> dict:
    """Median ms of each contestant and median per-pair ratio contestant / ours."""
    ours = times[0]
    return {
        name: {"median_ms": 1e3 * statistics.median(ts),
               "median_ratio_over_ours": statistics.median(
                   [other / mine for mine, other in zip(ours, ts, strict=True)]),
               "times_s": ts}
        for name, ts in zip(names, times, strict=True)
    }


def markdown(result: dict) -> str:
    names = list(result["forward"])
    lines = ["| net | params | forward (ms) | ratio to ours | forward+backward (ms) "
             "| ratio to ours |", "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        fwd, both = result["forward"][name], result["forward_backward"][name]
        lines.append(f"| {name} | {result['params'][name]:,} | {fwd['median_ms']:.1f} | "
                     f"{fwd['median_ratio_over_ours']:.3f} | {both['median_ms']:.1f} | "
                     f"{both['median_ratio_over_ours']:.3f} |")
    f = result["flops"]
    mm, frac = f["matmul_gflops"], f["fraction_of_matmul"]
    lines += ["", "| dimdiff forward | GFLOP/s | ours as % of it |", "|---|---:|---:|",
              f"| achieved ({f['forward_gflop']:.1f} GFLOP per batch, median time) "
              f"| {f['forward_gflops_achieved']:.1f} | 100 % |",
              f"| dense fp32 matmul 2048, torch.mm (best of 7) | {mm['torch_mm']:.1f} "
              f"| {100 * frac['torch_mm']:.0f} % |",
              f"| same GEMM as a oneDNN 1x1 conv (best of 7) | {mm['onednn_conv1x1']:.1f} "
              f"| {100 * frac['onednn_conv1x1']:.0f} % |"]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution)
    t = torch.rand(args.batch)
    ours = build_ours(args)
    peer = build_peer(args)
    contestants = {"dimdiff": make_steps(ours, x, t, peer=False)}
    params = {"dimdiff": num_parameters(ours)}
    if peer is not None:
        contestants["diffusers"] = make_steps(peer, x, t, peer=True)
        params["diffusers"] = num_parameters(peer)
        if args.peer_channels_last:  # the peer at its best memory format, for reference
            peer_nhwc = copy.deepcopy(peer).to(memory_format=torch.channels_last)
            x_nhwc = x.contiguous(memory_format=torch.channels_last)
            contestants["diffusers, channels_last"] = make_steps(peer_nhwc, x_nhwc, t, peer=True)
            params["diffusers, channels_last"] = params["diffusers"]
        gap = params["diffusers"] / params["dimdiff"] - 1
        print(f"parameters: dimdiff {params['dimdiff']:,}, diffusers {params['diffusers']:,} "
              f"({100 * gap:+.2f} %)")
        if abs(gap) > 0.05:
            print("warning: parameter counts differ by more than 5 %; the widths do not match")

    load_before = os.getloadavg()  # other processes on the machine skew every timing
    matmul_before = matmul_gflops()
    result: dict = {"config": {k: str(v) if isinstance(v, Path) else v
                               for k, v in vars(args).items()}, "params": params}
    names = list(contestants)
    for index, measurement in enumerate(("forward", "forward_backward")):
        steps = [pair[index] for pair in contestants.values()]
        result[measurement] = summarize(names, interleaved_times(steps, args.repeats, args.warmup))
    matmul_after = matmul_gflops()
    matmul = {k: max(matmul_before[k], matmul_after[k]) for k in matmul_before}

    flops = forward_flops(ours, x, t)
    achieved = flops / (result["forward"]["dimdiff"]["median_ms"] / 1e3) / 1e9
    result["flops"] = {"forward_gflop": flops / 1e9, "forward_gflops_achieved": achieved,
                       "matmul_gflops": matmul,
                       "fraction_of_matmul": {k: achieved / v for k, v in matmul.items()}}
    result["environment"] = environment_record(seeds={"weights_and_inputs": args.seed}) | {
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
