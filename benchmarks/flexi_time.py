"""Time of SSD's network calls at the authors' 64 px widths, and of whole sampling runs built from them.

The same net as benchmarks/flexi_flops.py (dimdiff's U-Net at the SSD authors' CelebA-64 widths: 128
channels, multipliers 1, 2, 3, 4, two ResBlocks per level, attention at 16 and 8 px; 92.3 M parameters),
wrapped as a Flexi-UNet and as the upsampled plain U-Net (model.layout = upsampled). Each network call a
sampling run makes is timed at batch --batch, every kind interleaved with the others (A B C A B C ...,
median of --repeats), so that load drifts hit all alike. A run's time is then the sum over its grid of the
time of the call each step makes (the sampler's own arithmetic is under 0.1 % of a 92 M-parameter
forward): DDPM/DDIM at full resolution make N plain-U-Net calls; SSD makes the calls its grid asks for
(`ScaleSpaceProcess.timesteps(N)`: N steps plus the resolution changes, 1000 at N = 1000). The ratio of
DDPM's time to SSD's is the speed-up; the authors report 1.58x for 64 px and 4 levels.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/flexi_time.py --threads 2
    python benchmarks/flexi_time.py --device cuda --batch 64 --out-dir benchmarks/results/ssd_time_cuda

Writes benchmarks/results/ssd_time/time.json and time.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

from dimdiff.bench.environment import environment_record, machine_summary
from dimdiff.bench.timing import interleaved_times
from dimdiff.nets.flexi_unet import FlexiUNet
from dimdiff.nets.unet import UNet
from dimdiff.nets.upsampled import UpsampledNet
from dimdiff.process.scale_space import ScaleSpaceProcess

RESOLUTION, LEVELS, T = 64, 4, 1000
REFERENCE_SPEEDUP = 1.58  # the authors' inference speed-up of SSD (4 levels, Flexi-UNet) over DDPM at 64 px


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", default="100,1000", help="sampling steps N of the runs to cost")
    p.add_argument("--base-channels", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronise the device)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/ssd_time"))
    return p.parse_args()


def grid_calls(process: ScaleSpaceProcess, steps: int) -> Counter:
    """(input px, output px) -> how many network calls an N-step SSD run makes on that path."""
    calls: Counter = Counter()
    for t in process.timesteps(steps).tolist()[:-1]:  # the grid ends at t = 0, where no call is made
        calls[process.shape_at(t)[1], process.target_shape_at(t)[1]] += 1
    return calls


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet(in_channels=3, out_channels=3, base_channels=args.base_channels, channel_mult=(1, 2, 3, 4),
                num_res_blocks=2, attention_levels=(2, 3), num_heads=4, dropout=0.0, scale_shift=True)  # fmt: skip
    device = torch.device(args.device)
    flexi = FlexiUNet(unet, full_size=(RESOLUTION, RESOLUTION), levels=LEVELS).to(device).eval()
    upsampled = UpsampledNet(unet, full_size=(RESOLUTION, RESOLUTION), levels=LEVELS).to(device).eval()
    process = ScaleSpaceProcess((3, RESOLUTION, RESOLUTION), levels=LEVELS, num_steps=T)
    paths = sorted({pair for pair, _ in grid_calls(process, T).items()}, reverse=True)
    t = torch.full((args.batch,), 0.5, device=device)
    full = torch.randn(args.batch, 3, RESOLUTION, RESOLUTION, device=device)
    calls = {"plain 64->64": lambda: unet(full, t)}
    for s_in, s_out in paths:
        x = torch.randn(args.batch, 3, s_in, s_in, device=device)
        calls[f"flexi {s_in}->{s_out}"] = lambda x=x, s=s_out: flexi(x, t, out_size=(s, s))
        if s_in != RESOLUTION:
            calls[f"upsampled {s_in}->{s_out}"] = lambda x=x, s=s_out: upsampled(x, t, out_size=(s, s))
    start = time.perf_counter()
    with torch.inference_mode():
        seconds = interleaved_times(list(calls.values()), args.repeats, warmup=1, device=device)
    per_call = {name: statistics.median(s) / args.batch for name, s in zip(calls, seconds, strict=True)}
    runs = {}
    for n in (int(v) for v in args.steps.split(",")):
        grid = grid_calls(process, n)
        plain = n * per_call["plain 64->64"]
        ssd = sum(count * per_call[f"flexi {a}->{b}"] for (a, b), count in grid.items())
        ssd_up = sum(count * per_call["plain 64->64" if a == RESOLUTION else f"upsampled {a}->{b}"]
                     for (a, b), count in grid.items())  # fmt: skip
        runs[n] = {"ssd_calls": sum(grid.values()), "ddpm_s": plain, "ssd_flexi_s": ssd, "ssd_upsampled_s": ssd_up,
                   "speedup_flexi": plain / ssd, "speedup_upsampled": plain / ssd_up,
                   "calls_per_path": {f"{a}->{b}": c for (a, b), c in sorted(grid.items(), reverse=True)}}  # fmt: skip
    environment = environment_record(seeds={"weights": 0})
    result = {"benchmark": "ssd_time", "settings": vars(args) | {"out_dir": str(args.out_dir)},
              "parameters": sum(p.numel() for p in flexi.parameters()), "seconds_per_image_call": per_call,
              "runs": runs, "reference_speedup": REFERENCE_SPEEDUP, "wall_s": time.perf_counter() - start,
              "environment": environment}  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "time.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, machine_summary(environment))
    (args.out_dir / "time.md").write_text(md)
    print(md)


def markdown(result: dict, machine: str) -> str:
    s = result["settings"]
    lines = [f"Network calls of SSD at 64 px, 4 levels, base {s['base_channels']} channels "
             f"({result['parameters']:,} parameters with the Flexi-UNet's adapters), batch {s['batch']}, median of "
             f"{s['repeats']} interleaved repeats; {machine}, {s['threads']} threads.", "",
             "| call | ms / image |", "|---|---:|"]  # fmt: skip
    lines += [f"| {name} | {1000 * v:.1f} |" for name, v in result["seconds_per_image_call"].items()]
    lines += ["", "| N | SSD calls | DDPM s / image | SSD Flexi-UNet s / image | speed-up | SSD upsampled plain U-Net "
              "s / image | speed-up |", "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for n, r in result["runs"].items():
        lines.append(f"| {n} | {r['ssd_calls']} | {r['ddpm_s']:.2f} | {r['ssd_flexi_s']:.2f} | "
                     f"{r['speedup_flexi']:.3f}x | {r['ssd_upsampled_s']:.2f} | "
                     f"{r['speedup_upsampled']:.3f}x |")  # fmt: skip
    lines += ["", f"The authors report {result['reference_speedup']}x for SSD with a Flexi-UNet over DDPM."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
