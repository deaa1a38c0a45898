"""`dimdiff bench sampling|training|quality|oracle`: the command line over `dimdiff.bench`.

    dimdiff bench sampling [--config FILE] [section.key=value ...] [--steps 50] [--batch 16] [--repeats 10]
    dimdiff bench training [--config FILE] [section.key=value ...] [--batch 16] [--repeats 10]
    dimdiff bench quality  [--config FILE] [section.key=value ...] [--datasets digits,patches] [--steps 10,20,50]
    dimdiff bench oracle   [--config FILE] [section.key=value ...] [--steps 10,20,50,100] [--samples 20000]

Without --config, sampling and training use a `tiny`-like U-Net on 3x32x32 images (SPEED_DEFAULTS)
and quality a small U-Net on 16 px digits (QUALITY_DEFAULTS); oracle needs no network and uses
the process, sampler and image shape (ORACLE_DEFAULTS: 1x16x16); overrides apply on top of any.
Results go to --out (benchmarks/results): <benchmark>.json (with the machine, versions, git commit,
seeds and command line), <benchmark>.md (the table printed) and, for quality, quality.png.

The quality bench trains models with the trainer that the layer above hands in (`dimdiff.cli`,
or this module run as a script, passes `dimdiff.train.loop.train`); nothing here imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dimdiff.config import Config, ConfigError, Device, apply_overrides, config_from_dict, load_config

if TYPE_CHECKING:
    from dimdiff.bench.quality import Trainer

__all__ = ["add_bench_parser", "run_bench", "main", "SPEED_DEFAULTS", "QUALITY_DEFAULTS", "ORACLE_DEFAULTS"]

# UNET_PRESETS["tiny"] (24 wide, 2 ResBlocks per level, attention at level 1) on 32 px RGB.
SPEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"base_channels": 24, "channel_mult": [1, 2, 2], "num_res_blocks": 2, "attention_resolutions": [16],
              "num_heads": 4},
    "data": {"name": "patches", "resolution": 32, "channels": 3},
    "sample": {"steps": 50},
}  # fmt: skip

# A 0.3M-parameter U-Net on 16 px digits: 1500 steps of 64 train in about 1.5 minutes on 2 cores.
QUALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"base_channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [4]},
    "data": {"name": "digits", "resolution": 16},
    "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.995,
              "log_every": 50},
}  # fmt: skip


# Gaussian stand-ins for 16 px digits: one channel (the exact denoiser is a dense d x d solve per step).
ORACLE_DEFAULTS: dict[str, dict[str, Any]] = {"data": {"name": "digits", "resolution": 16}}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,20,50, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _common(p: argparse.ArgumentParser, defaults: str) -> None:
    p.add_argument("--config", default=None, help=f"TOML config of the shared U-Net/process (default: {defaults})")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. model.base_channels=32")
    p.add_argument("--methods", default=None, help="comma-separated method keys (default: all; ddim is always in)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, noise and t")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where nets run")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the result files")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` and its three subcommands to a `dimdiff` argparse subparsers object."""
    bench = subparsers.add_parser("bench", help="benchmarks: sampling cost, training cost, quality at equal budget",
                                  description=__doc__.split("\n")[0])  # fmt: skip
    sub = bench.add_subparsers(dest="benchmark", required=True)

    p = sub.add_parser("sampling", help="time, FLOPs, NFE and memory per image of N-step sampling, and the peer")
    _common(p, "SPEED_DEFAULTS: tiny U-Net, 3x32x32")
    p.add_argument("--steps", type=_positive, default=None, help="sampling steps N (default: sample.steps, 50)")
    p.add_argument("--batch", type=_positive, default=16, help="images per sampling run")
    p.add_argument("--repeats", type=_positive, default=10, help="timed runs per method, interleaved")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per method first")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip diffusers UNet2DModel + DDIMScheduler")

    p = sub.add_parser("training", help="examples per second and FLOPs per example of a training step")
    _common(p, "SPEED_DEFAULTS: tiny U-Net, 3x32x32")
    p.add_argument("--batch", type=_positive, default=16, help="examples per training step")
    p.add_argument("--repeats", type=_positive, default=10, help="timed steps per method and level, interleaved")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method and level first")
    p.add_argument("--flop-batches", type=_positive, default=8,
                   help="draws of t per level that FLOPs are averaged over")  # fmt: skip

    p = sub.add_parser("quality", help="train every method with one budget, sample, score, plot against time")
    _common(p, "QUALITY_DEFAULTS: small U-Net, 16 px digits, 1500 steps x 64")
    p.add_argument("--datasets", default="digits", help="comma-separated: digits, patches")
    p.add_argument("--train-steps", type=_positive, default=None, help="training steps (default: train.steps)")
    p.add_argument("--train-batch", type=_positive, default=None, help="training batch (default: train.batch_size)")
    p.add_argument("--steps", type=_int_list, default=(10, 20, 50), help="sampling step counts N, e.g. 10,20,50")
    p.add_argument("--samples", type=_positive, default=500, help="images scored per method and N")
    p.add_argument("--sample-batch", type=_positive, default=100, help="images per sampling batch")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics (default digits: fd-digits,kid,pr,swd,confidence; else swd)")
    p.add_argument("--reference-split", choices=["train", "test"], default="train", help="real images scored against")
    p.add_argument("--runs-dir", default="runs/bench_quality", help="training runs and sample grids")
    p.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05 weights file (for fid)")
    p.add_argument("--cache-dir", default=None,
                   help="reference feature cache (default: $DIMDIFF_CACHE or ~/.cache/dimdiff)")  # fmt: skip
    p.add_argument("--plot-metric", default=None, help="score key on the plot's y axis (default: the first metric's)")
    p.add_argument("--progress", action="store_true", help="training progress bars")

    p = sub.add_parser("oracle", help="sampler error with the exact denoiser of Gaussian images (no training)")
    _common(p, "ORACLE_DEFAULTS: 1x16x16")
    p.add_argument("--steps", type=_int_list, default=(10, 20, 50, 100), help="sampling step counts N")
    p.add_argument("--samples", type=_positive, default=20_000, help="samples per method and N")
    p.add_argument("--variance", type=float, default=0.3, help="per-pixel variance of the Gaussian images")
    p.add_argument("--corner", type=float, default=1.5, help="spectrum corner f_c = corner / resolution")
    return bench


def _base_config(args: argparse.Namespace, defaults: dict[str, dict[str, Any]]) -> Config:
    if args.config is not None:
        return load_config(args.config, args.overrides)
    return config_from_dict(apply_overrides(defaults, args.overrides))


def _methods(args: argparse.Namespace, base: Config) -> list:
    from dimdiff.bench.registry import available_methods, select_methods

    keys = [k.strip() for k in args.methods.split(",") if k.strip()] if args.methods else None
    return select_methods(available_methods(base), keys)


def _write(result: dict[str, Any], table: str, out: Path, stem: str) -> list[Path]:
    from dimdiff.bench.report import write_json, write_text

    print(table)
    return [write_json(result, out / f"{stem}.json"), write_text(table, out / f"{stem}.md")]


def _sampling(args: argparse.Namespace) -> list[Path]:
    from dimdiff.bench.report import sampling_table
    from dimdiff.bench.sampling import SamplingOptions, sampling_bench

    base = _base_config(args, SPEED_DEFAULTS)
    if args.steps is not None:
        base = dataclasses.replace(base, sample=dataclasses.replace(base.sample, steps=args.steps))
    if base.sample.steps > base.process.num_steps:
        raise ConfigError(f"--steps: expected at most process.num_steps = {base.process.num_steps}, "
                          f"got {base.sample.steps}")  # fmt: skip
    options = SamplingOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                              device=args.device, peer=args.peer)  # fmt: skip
    result = sampling_bench(_methods(args, base), options)
    return _write(result, sampling_table(result), args.out, "sampling")


def _training(args: argparse.Namespace) -> list[Path]:
    from dimdiff.bench.report import training_table
    from dimdiff.bench.training import TrainingOptions, training_bench

    base = _base_config(args, SPEED_DEFAULTS)
    options = TrainingOptions(batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                              flop_batches=args.flop_batches, seed=args.seed, device=args.device)  # fmt: skip
    result = training_bench(_methods(args, base), options)
    return _write(result, training_table(result), args.out, "training")


def _quality_options(args: argparse.Namespace, base: Config) -> Any:
    from dimdiff.bench.quality import QualityOptions
    from dimdiff.data import DatasetName, Split
    from dimdiff.evaluate import default_cache_dir, parse_metrics

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    valid = [DatasetName.DIGITS.value, DatasetName.PATCHES.value]
    if not names or any(n not in valid for n in names):
        raise ConfigError(f"--datasets: expected a comma-separated list from {', '.join(valid)}, got {args.datasets!r}")
    if max(args.steps) > base.process.num_steps:
        raise ConfigError(f"--steps: expected step counts <= process.num_steps = {base.process.num_steps}, "
                          f"got {max(args.steps)}")  # fmt: skip
    return QualityOptions(
        datasets=tuple(DatasetName(n) for n in names), sample_steps=tuple(args.steps), samples=args.samples,
        sample_batch=args.sample_batch, metrics=tuple(parse_metrics(args.metrics)) if args.metrics else None,
        reference_split=Split(args.reference_split), seed=args.seed, runs_dir=args.runs_dir,
        inception_weights=args.inception_weights, cache_dir=args.cache_dir or str(default_cache_dir()),
        device=args.device, progress=args.progress,
    )  # fmt: skip


def _quality(args: argparse.Namespace, trainer: Trainer | None) -> list[Path]:
    from dimdiff.bench.quality import quality_bench
    from dimdiff.bench.report import quality_plot, quality_table

    if trainer is None:
        raise ConfigError("the quality bench trains every method: expected a trainer (dimdiff.train.loop.train, "
                          "which `dimdiff bench quality` hands in), got none")  # fmt: skip
    base = _base_config(args, QUALITY_DEFAULTS)
    train = {"steps": args.train_steps, "batch_size": args.train_batch, "device": Device(args.device)}
    train = {k: v for k, v in train.items() if v is not None}
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, **train))
    result = quality_bench(_methods(args, base), _quality_options(args, base), trainer=trainer)
    metric = args.plot_metric
    if metric and not any(metric in r["scores"] for r in result["rows"]):
        print(f"note: --plot-metric {metric!r} is not among the scores {sorted(result['rows'][0]['scores'])}; "
              "plotting each dataset's headline score")  # fmt: skip
        metric = None
    plot = args.out / "quality.png"
    result["plot"] = str(plot)
    written = _write(result, quality_table(result), args.out, "quality")
    return written + [quality_plot(result, plot, metric)]


def _oracle(args: argparse.Namespace) -> list[Path]:
    from dimdiff.bench.oracle import OracleOptions, oracle_bench
    from dimdiff.bench.report import oracle_table

    if args.device != "cpu":
        raise ConfigError(f"--device: the oracle bench solves float64 systems on the CPU, got {args.device!r}")
    base = _base_config(args, ORACLE_DEFAULTS)
    if max(args.steps) > base.process.num_steps:
        raise ConfigError(f"--steps: expected step counts <= process.num_steps = {base.process.num_steps}, "
                          f"got {max(args.steps)}")  # fmt: skip
    options = OracleOptions(steps=tuple(args.steps), samples=args.samples, variance=args.variance,
                            corner=args.corner, seed=args.seed)  # fmt: skip
    result = oracle_bench(_methods(args, base), options)
    return _write(result, oracle_table(result), args.out, "oracle")


def run_bench(args: argparse.Namespace, trainer: Trainer | None = None) -> int:
    """Run the benchmark that ``args.benchmark`` names; print its table and where it was written.
    ``trainer`` (`dimdiff.train.loop.train`) is what the quality bench trains with."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    commands = {"sampling": _sampling, "training": _training, "oracle": _oracle,
                "quality": functools.partial(_quality, trainer=trainer)}  # fmt: skip
    written = commands[args.benchmark](args)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def main(argv: Sequence[str] | None = None, *, trainer: Trainer | None = None) -> int:
    """`python -m dimdiff.bench.cli sampling ...`, the same as `dimdiff bench sampling ...`; the quality
    bench needs ``trainer`` (run as a script, this module hands in `dimdiff.train.loop.train`)."""
    from dimdiff.data import DataError

    parser = argparse.ArgumentParser(prog="dimdiff")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args, extra = parser.parse_known_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    if extra and all("=" in e and not e.startswith("-") for e in extra):  # overrides after options
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return run_bench(args, trainer)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    from dimdiff.train.loop import train  # run as a script, this module is the top layer

    raise SystemExit(main(trainer=train))
