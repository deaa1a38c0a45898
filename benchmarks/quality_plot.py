"""Quality against sampling time on 32 px digits, every method of the README's quality protocol in one table and
one plot: fd-digits (mean and standard deviation over training seeds, 2000 samples each, N = 50) from the
quality_seeds results, against the time per image that `dimdiff bench sampling` measured for the same
architectures side by side in one run (N = 50, ratios to full-resolution DDIM).

    OMP_NUM_THREADS=1 dimdiff bench sampling data.name=digits data.resolution=32 data.channels=1 \\
        model.base_channels=16 'model.channel_mult=[1,2,2]' model.num_res_blocks=1 'model.attention_resolutions=[8]' \\
        process.parameterization=v process.kind=dvdp 'process.turning_points=[0.35,0.65]' \\
        'process.window_widths=[0.2,0.2]' --steps 50 --batch 16 --repeats 5 --threads 1 --no-peer \\
        --methods ddpm,dvdp-perstage-ddim,dvdp-perstage-ddpm,dvdp-flexi-ddim,dvdp-flexi-ddpm,ssd-ddim,ssd-ddpm,\\
ssd-fewer-ddim,ssd-fewer-ddpm \\
        --out benchmarks/results/quality_time
    python benchmarks/quality_plot.py --timing benchmarks/results/quality_time/sampling.json \\
        --out benchmarks/results/quality_time
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path("benchmarks/results")
# (label, results file, method key in it): each is sampled ancestrally (ddpm) and deterministically (ddim)
SERIES = [
    ("DDPM / DDIM, full resolution", RESULTS / "quality_digits32/seeds.jsonl", "ddpm", "ddpm", "ddim"),
    ("DVDP 0.35/0.65, U-Net per stage (3x params)", RESULTS / "quality_digits32/seeds.jsonl", "dvdp-perstage-ddpm",
     "dvdp-perstage-ddpm", "dvdp-perstage-ddim"),
    ("DVDP 0.35/0.65, one Flexi-UNet", RESULTS / "quality_flexi/dvdp-flexi-ddpm.jsonl", "dvdp-flexi-ddpm",
     "dvdp-flexi-ddpm", "dvdp-flexi-ddim"),
    ("SSD, 3 levels, Flexi-UNet", RESULTS / "quality_ssd/ssd-ddpm.jsonl", "ssd-ddpm", "ssd-ddpm", "ssd-ddim"),
    ("SSD, 2 levels, Flexi-UNet", RESULTS / "quality_ssd/ssd-fewer-ddpm.jsonl", "ssd-fewer-ddpm", "ssd-fewer-ddpm",
     "ssd-fewer-ddim"),
]  # fmt: skip
SAMPLERS = (("ddpm", "ancestral"), ("ddim", "deterministic"))


def _rows(path: Path, key: str, sampler: str, steps: int) -> list[float]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    scores = {r["seed"]: r["fd-digits"] for r in rows
              if (r["method"], r["sampler"], r["steps"], r["n"]) == (key, sampler, steps, 2000)}  # fmt: skip
    return [scores[s] for s in sorted(scores)]


def table(timing: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    times = {r["key"]: r for r in timing["rows"]}
    out = []
    for label, path, key, *timing_keys in SERIES:
        for (sampler, name), timing_key in zip(SAMPLERS, timing_keys, strict=True):
            fd = _rows(path, key, sampler, steps)
            if not fd or timing_key not in times:
                continue
            t = times[timing_key]
            out.append({"method": label, "sampler": name, "seeds": len(fd), "fd_per_seed": fd,
                        "fd_mean": statistics.fmean(fd), "fd_sd": statistics.stdev(fd) if len(fd) > 1 else 0.0,
                        "ms_per_image": 1e3 * t["time_per_image_s"], "time_ratio": t["time_ratio_to_ddim"],
                        "gflops_per_image": t["flops_per_image"] / 1e9,
                        "flops_ratio": t["flops_ratio_to_ddim"]})  # fmt: skip
    return out


def markdown(rows: list[dict[str, Any]], timing: dict[str, Any], steps: int) -> str:
    env = timing.get("environment", {})
    lines = [f"Quality against sampling time, 32 px digits, N = {steps}: fd-digits over training seeds (2000 samples "
             f"each) and time per image of the same architectures in one `dimdiff bench sampling` run "
             f"(batch {timing['settings']['batch']}, {env.get('cpu', 'CPU')}, {timing['settings'].get('threads')} "
             f"thread(s)); ratios are to full-resolution DDIM.", "",
             "| method | sampler | seeds | fd-digits per seed | mean ± sd | ms / image | time ratio | GFLOP / image |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        per_seed = " / ".join(f"{v:.3f}" for v in r["fd_per_seed"])
        lines.append(f"| {r['method']} | {r['sampler']} | {r['seeds']} | {per_seed}"
                     f" | {r['fd_mean']:.3f} ± {r['fd_sd']:.3f} | {r['ms_per_image']:.1f} | {r['time_ratio']:.3f} | "
                     f"{r['gflops_per_image']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.2))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for r in rows:
        filled = r["sampler"] == "ancestral"
        ax.errorbar(r["time_ratio"], r["fd_mean"], yerr=r["fd_sd"], fmt="o" if filled else "s", capsize=3,
                    color=colours[r["method"]], markerfacecolor=colours[r["method"]] if filled else "white",
                    label=f"{r['method']}, {r['sampler']} ({r['seeds']} seeds)")  # fmt: skip
    ax.set_xlabel(f"sampling time per image relative to full-resolution DDIM (N = {steps})")
    ax.set_ylabel("fd-digits (lower is better)")
    ax.set_title("32 px digits, equal training steps (2500 x 64)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timing", type=Path, required=True, help="sampling.json of `dimdiff bench sampling` at N")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    timing = json.loads(args.timing.read_text())
    rows = table(timing, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_time.md").write_text(markdown(rows, timing, args.steps))
    (args.out / "quality_time.json").write_text(json.dumps(rows, indent=2))
    plot(rows, args.out / "quality_time.png", args.steps)
    print(markdown(rows, timing, args.steps))


if __name__ == "__main__":
    main()
