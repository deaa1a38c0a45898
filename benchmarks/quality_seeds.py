"""Quality at equal training steps over several training seeds: the protocol of the README's DVDP and SSD
results (32 px digits, the quality bench's 0.3M-parameter U-Net, 2500 steps of 64, each checkpoint scored
on 2000 samples with fd-digits and KID).

For one bench method (a key of `dimdiff bench quality --methods`), every seed is trained into
RUNS/KEY/seedS (the bench's config with only train.seed changed; an interrupted run resumes, a finished
one is kept) and scored with every SAMPLER:N of --evals (sampling seed 0, the same as
`dimdiff eval --checkpoint RUN --n 2000 --metrics fd-digits,kid --sampler S --steps N --seed 0`).
Every score is appended to OUT/KEY.jsonl as it is made, so a rerun only does what is missing (rows of
another --n or --train-steps do not count); --summary prints the table of means over seeds for the keys
given. Runs with other overrides of the same method need another --out and --runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality_seeds.py --method ssd-ddpm --seeds 0,1,2,3 \
        --evals ddpm:20,ddpm:50,ddpm:100,ddim:50 --out benchmarks/results/quality_ssd
    .venv/bin/python benchmarks/quality_seeds.py --summary ddpm,ssd-ddpm --out benchmarks/results/quality_ssd

Overrides (section.key=value) apply to the bench's base config, as on `dimdiff bench quality`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dimdiff.bench.cli import QUALITY_DEFAULTS
from dimdiff.bench.registry import available_methods, select_methods
from dimdiff.checkpoint import read_checkpoint_info
from dimdiff.config import Config, SamplerKind, apply_overrides, config_from_dict
from dimdiff.evaluate import Metric, evaluate_checkpoint

# The DVDP quality protocol's changes to the bench defaults (Makefile DVDP_QUALITY).
PROTOCOL = ["data.resolution=32", "model.attention_resolutions=[8]", "process.parameterization=v"]
METRICS = (Metric.FD_DIGITS, Metric.KID)


def method_config(key: str, overrides: list[str], train_steps: int) -> Config:
    base = config_from_dict(apply_overrides(QUALITY_DEFAULTS, PROTOCOL + overrides))
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=train_steps))
    (method,) = [m for m in select_methods(available_methods(base), [key]) if m.key == key]
    return method.config


def _done(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train(config: Config, seed: int, out_dir: Path) -> tuple[Path, float]:
    from dimdiff.train.loop import train

    train_config = dataclasses.replace(config.train, seed=seed, out_dir=str(out_dir), threads=1,
                                       checkpoint_every=500, sample_every=0)  # fmt: skip
    start = time.perf_counter()
    result = train(dataclasses.replace(config, train=train_config), resume="auto", progress=False,
                   echo=lambda *_: None)  # fmt: skip
    if result.checkpoint is None:
        raise SystemExit(f"training seed {seed} into {out_dir}: expected a final checkpoint, got none")
    return result.checkpoint, time.perf_counter() - start


def run(args: argparse.Namespace) -> None:
    config = method_config(args.method, args.overrides, args.train_steps)
    results = args.out / f"{args.method}.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    evals = [(SamplerKind(s.split(":")[0]), int(s.split(":")[1])) for s in args.evals.split(",")]
    for seed in args.seeds:
        done = {(r["sampler"], r["steps"]) for r in _done(results)
                if (r["seed"], r["n"], r["step"]) == (seed, args.n, args.train_steps)}  # fmt: skip
        if all((s.value, n) in done for s, n in evals):
            continue
        checkpoint, seconds = _train(config, seed, args.runs / args.method / f"seed{seed}")
        print(f"{args.method} seed {seed}: trained in {seconds:.0f} s", flush=True)
        for sampler, steps in evals:
            if (sampler.value, steps) in done:
                continue
            eta = 0.0 if sampler is SamplerKind.DDIM else config.sample.eta
            sample = dataclasses.replace(config.sample, sampler=sampler, steps=steps, eta=eta)
            report, _ = evaluate_checkpoint(checkpoint, n=args.n, metrics=METRICS, sample=sample, seed=0)
            row = {"method": args.method, "seed": seed, "sampler": sampler.value, "steps": steps, "n": args.n,
                   "train_seconds": seconds, "step": read_checkpoint_info(checkpoint).step,
                   "time_per_image_s": report.extra["time_per_image_s"], **report.metrics}  # fmt: skip
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def summary(keys: list[str], out: Path) -> str:
    lines = ["| method | sampler | N | samples | training steps | fd-digits per seed | mean ± sd | KID mean | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key in keys:
        rows = _done(out / f"{key}.jsonl")
        def what(r: dict[str, Any]) -> tuple[str, int, int, int]:
            return r["sampler"], r["steps"], r["n"], r["step"]

        for sampler, steps, n, step in sorted({what(r) for r in rows}):
            cell = sorted((r for r in rows if what(r) == (sampler, steps, n, step)), key=lambda r: r["seed"])
            fd = [r["fd-digits"] for r in cell]
            kid = statistics.fmean(r["kid"] for r in cell)
            sd = statistics.stdev(fd) if len(fd) > 1 else 0.0
            lines.append(f"| {key} | {sampler} | {steps} | {n} | {step} | {' / '.join(f'{v:.3f}' for v in fd)} | "
                         f"{statistics.fmean(fd):.3f} ± {sd:.3f} | {kid:.3f} | {len(fd)} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", help="a bench method key, e.g. ssd-ddpm")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2, 3])
    p.add_argument("--evals", default="ddpm:20,ddpm:50,ddpm:100,ddim:50", help="SAMPLER:N,... to score")
    p.add_argument("--n", type=int, default=2000, help="samples per score")
    p.add_argument("--train-steps", type=int, default=2500)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_seeds"))
    p.add_argument("--runs", type=Path, default=Path("runs/quality_seeds"))
    p.add_argument("--summary", help="comma-separated method keys: print their table and stop")
    p.add_argument("overrides", nargs="*", help="section.key=value on the bench's base config")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(args.summary.split(","), args.out))
        return 0
    if not args.method:
        p.error("expected --method or --summary")
    run(args)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # the protocol's: one thread per job, as the DVDP results were made
    sys.exit(main())
