"""The ``dimdiff`` command: thin subcommands over importable functions.

    dimdiff train --config configs/NAME.toml [section.key=value ...] [--dry-run] [--resume auto|DIR]
    dimdiff sample --checkpoint DIR --n 64 --steps 50 --sampler ddim --eta 0 --seed 0 --out DIR [--npz]
    dimdiff eval --checkpoint DIR --n 2000 --metrics fd-digits,kid,swd,pr
    dimdiff eval --samples DIR|FILE.npz --reference digits|FOLDER|FILE.npz
    dimdiff bench sampling|training|quality [--config FILE] [section.key=value ...]
    dimdiff info DIR [--verify [--sizes-only]]
    dimdiff codec fit|eval|encode|decode|show ...   (quantized patch codecs; see dimdiff.codec_tool)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from dimdiff.bench.cli import add_bench_parser, run_bench
from dimdiff.checkpoint import CheckpointError
from dimdiff.codec_tool import add_codec_parser, run_codec
from dimdiff.config import ConfigError, SampleConfig, SamplerKind
from dimdiff.data import DataError, Split
from dimdiff.devices import parse_device
from dimdiff.evaluate import Metric
from dimdiff.metrics import INCEPTION_WEIGHTS_ENV, FeatureNetworkError
from dimdiff.samplers import Spacing

__all__ = ["main"]

_USER_ERRORS = (ConfigError, DataError, CheckpointError, FeatureNetworkError, FileNotFoundError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dimdiff", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a TOML config")
    p.add_argument("--config", required=True, help="TOML file (see configs/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100")
    p.add_argument("--dry-run", action="store_true",
                   help="make every check training makes before it reads data or writes anything (config, device, "
                        "U-Net levels against the process's resolutions), print the config and model size, stop")
    p.add_argument("--resume", default=None, help="'auto' (newest checkpoint in train.out_dir) or a checkpoint folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("sample", help="sample images from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (newest checkpoint)")
    p.add_argument("--n", type=int, default=64, help="number of images (>= 1)")
    _add_sampler_options(p)
    p.add_argument("--out", required=True, help="output folder: grid.png, images/, samples.npz")
    p.add_argument("--npz", action="store_true", help="also write samples.npz (uint8 NHWC under 'images')")
    p.add_argument("--no-images", action="store_true", help="skip the individual PNGs")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA (default: sample.use_ema)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")

    p = sub.add_parser("eval", help="score a checkpoint's samples, or saved samples, against reference data")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="sample from this checkpoint (or run folder) and score")
    source.add_argument("--samples", help="score saved samples: a folder of images or a .npz")
    p.add_argument("--reference", default=None,
                   help="digits, patches, an image folder or a .npz (default: the checkpoint's training data)")
    p.add_argument("--split", choices=[s.value for s in Split], default="train", help="reference split")
    p.add_argument("--n", type=int, default=2000, help="samples to draw from a checkpoint (>= 1)")
    p.add_argument("--metrics", default="fd-digits,kid,swd,pr",
                   help=f"comma-separated, from {', '.join(m.value for m in Metric)}")
    _add_sampler_options(p)
    p.add_argument("--inception-weights", default=None,
                   help=f"pt_inception-2015-12-05 weights file for fid (or set {INCEPTION_WEIGHTS_ENV})")
    p.add_argument("--cache-dir", default=None,
                   help="reference feature cache (default: $DIMDIFF_CACHE or ~/.cache/dimdiff)")
    p.add_argument("--out", default=None, help="JSON result file (default: beside the checkpoint or samples)")
    p.add_argument("--save-samples", default=None, help="also write the generated samples to this FILE.npz")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")

    add_bench_parser(sub)
    add_codec_parser(sub)

    p = sub.add_parser("info", help="print a checkpoint's config, step and parameter count, or --verify its files")
    p.add_argument("checkpoint", help="checkpoint folder or run folder")
    p.add_argument("--verify", action="store_true",
                   help="check every file of the checkpoint (of every checkpoint of a run folder) against its "
                        "manifest; exit status 1 if any is damaged")
    p.add_argument("--sizes-only", action="store_true", help="with --verify: compare sizes, skip the sha256")
    return parser


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="network evaluations (default: the checkpoint's)")
    p.add_argument("--sampler", choices=[k.value for k in SamplerKind], default=None)
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (0 deterministic)")
    p.add_argument("--spacing", choices=[s.value for s in Spacing], default=None, help="timestep grid")
    p.add_argument("--corrector-steps", type=int, default=None,
                   help="dvdp/subspace: Langevin steps on the refilled detail after each upward crossing")
    p.add_argument("--corrector-snr", type=float, default=None, help="target SNR of the Langevin step size")
    p.add_argument("--code-choice", choices=["argmax", "draw", "mean"], default=None,
                   help="categorical head: each position's word by argmax, a draw, or the expected latent")
    p.add_argument("--code-temperature", type=float, default=None, help="categorical head: softmax temperature")
    p.add_argument("--code-smoothing", type=float, default=None,
                   help="categorical head: mix of the predicted distribution with the uniform one, in [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="integer >= 0; batch i draws from a stream of (seed, i)")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampling batch (>= 1)")


def _sample_config(args: argparse.Namespace, base: SampleConfig) -> SampleConfig:
    """The checkpoint's sampling settings with the command line's changes."""
    from dimdiff.generate import sample_config_with

    return sample_config_with(
        base,
        steps=args.steps, eta=args.eta, corrector_steps=args.corrector_steps, corrector_snr=args.corrector_snr,
        code_choice=args.code_choice, code_temperature=args.code_temperature, code_smoothing=args.code_smoothing,
        sampler=SamplerKind(args.sampler) if args.sampler else None,
        spacing=Spacing(args.spacing) if args.spacing else None,
    )  # fmt: skip


def _check_run_args(args: argparse.Namespace) -> torch.device:
    """The counts and device of `sample` / `eval`, checked before any checkpoint is read; applies --threads."""
    for flag, value, least in (("--n", args.n, 1), ("--batch-size", args.batch_size, 1),
                               ("--threads", args.threads, 0), ("--seed", args.seed, 0)):  # fmt: skip
        if value < least:
            raise ConfigError(f"{flag}: expected an integer >= {least}, got {value}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return parse_device(args.device, "--device")


def _cmd_train(args: argparse.Namespace) -> int:
    from dimdiff.build import data_channels
    from dimdiff.config import dumps, load_config
    from dimdiff.preflight import preflight

    config = load_config(args.config, args.overrides)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    if args.dry_run:
        process, net = preflight(config)  # the checks a training run makes before it reads or writes anything
        channels = data_channels(config)
        print(dumps(config))
        levels = len(process.net_shapes())
        nets = f"{levels} UNets (one per stage)" if config.model.per_stage_nets else type(net).__name__
        state = "x".join(map(str, process.data_shape))
        latent = "" if config.codec.kind.value == "pixel" else f", diffusing {config.codec.kind.value} codes of {state}"
        print(f"model: {nets} with {sum(p.numel() for p in net.parameters()):,} parameters "
              f"at {channels}x{config.data.resolution}x{config.data.resolution}{latent}")  # fmt: skip
        return 0
    from dimdiff.train.loop import train

    result = train(config, resume=args.resume, progress=not args.no_progress)
    if result.checkpoint is not None and str(result.checkpoint) != ".":
        print(f"checkpoint: {result.checkpoint}")
    if result.grid is not None:
        print(f"samples:    {result.grid}")
    if result.loss_plot is not None:
        print(f"loss curve: {result.loss_plot}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from dimdiff.generate import generate, load_model, write_samples

    device = _check_run_args(args)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out: expected a folder (new or existing), got the file {args.out}")
    model = load_model(args.checkpoint, use_ema=False if args.no_ema else None, device=device)
    sample = _sample_config(args, model.info.config.sample)
    images = generate(model, args.n, sample, seed=args.seed, batch_size=args.batch_size, progress=True)
    written = write_samples(images, args.out, npz=args.npz, individual=not args.no_images)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from dimdiff.bench.environment import environment_record
    from dimdiff.checkpoint import read_checkpoint_info
    from dimdiff.evaluate import (
        EvalReport,
        default_cache_dir,
        evaluate_checkpoint,
        load_reference,
        load_samples,
        parse_metrics,
        score_images,
    )
    from dimdiff.images import save_npz

    device = _check_run_args(args)
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out: expected a path for the JSON result file, got the folder {args.out}")
    if args.save_samples and Path(args.save_samples).suffix != ".npz":
        raise ConfigError(f"--save-samples: expected a path ending in .npz, got {args.save_samples}")
    metrics = parse_metrics(args.metrics)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise ConfigError(f"--cache-dir: expected a folder (new or existing), got the file {cache}")
    if args.checkpoint:
        base = read_checkpoint_info(args.checkpoint)
        report, images = evaluate_checkpoint(
            base.path, n=args.n, metrics=metrics, sample=_sample_config(args, base.config.sample), seed=args.seed,
            batch_size=args.batch_size, reference=args.reference, split=Split(args.split),
            inception_weights=args.inception_weights, cache_dir=cache, device=str(device), progress=True,
        )  # fmt: skip
        if args.save_samples:
            save_npz(args.save_samples, images)
        out = Path(args.out) if args.out else base.path.parent.parent / "eval" / f"eval_step_{base.step:08d}.json"
    else:
        if args.reference is None:
            raise ConfigError("--samples needs --reference (digits, patches, a folder or a .npz)")
        samples = load_samples(args.samples)
        ref = load_reference(args.reference, resolution=samples.shape[-1], channels=samples.shape[1],
                             split=Split(args.split))  # fmt: skip
        scores = score_images(samples, ref, metrics, inception_weights=args.inception_weights, seed=args.seed,
                              cache_dir=cache)  # fmt: skip
        report = EvalReport(scores, len(samples), ref.key, {"samples": str(args.samples)})
        source = Path(args.samples)
        out = Path(args.out) if args.out else (source.parent if source.is_file() else source) / "eval.json"
    print(f"{'metric':<14} value")
    for name, value in report.metrics.items():
        print(f"{name:<14} {value:.6g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report.to_json(), "environment": environment_record({"seed": args.seed})}, indent=2))
    print(f"results: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dimdiff.train.loop import train

    return run_bench(args, trainer=train)  # the quality bench trains with the trainer handed in from here


def _cmd_info(args: argparse.Namespace) -> int:
    from dimdiff.checkpoint import read_checkpoint_info
    from dimdiff.config import config_to_dict

    if args.verify:
        return _verify(Path(args.checkpoint), sizes_only=args.sizes_only)
    if args.sizes_only:
        raise ConfigError("--sizes-only: expected together with --verify, got it alone")
    info = read_checkpoint_info(args.checkpoint)
    print(f"checkpoint: {info.path}")
    print(f"step:       {info.step}")
    print(f"parameters: {info.num_parameters:,}")
    print(f"data shape: {'x'.join(map(str, info.data_shape))}")
    print("config:")
    print(json.dumps(config_to_dict(info.config), indent=2))
    return 0


def _verify(path: Path, *, sizes_only: bool) -> int:
    """``dimdiff info --verify``: each checkpoint intact or damaged (which file, why); 1 if any is damaged."""
    from dimdiff import checkpoint as ckpt
    from dimdiff.train.run_folder import other_folders

    folders = ckpt.list_checkpoints(path) if (path / "checkpoints").is_dir() else [ckpt.find_checkpoint(path)]
    if not folders:
        raise CheckpointError(f"{path / 'checkpoints'} holds no checkpoint (step_*) to verify")
    level = ckpt.Verify.SIZES if sizes_only else ckpt.Verify.FULL
    damaged = 0
    for folder in folders:
        problems = ckpt.verify_checkpoint(folder, level)
        damaged += bool(problems)
        note = "sizes checked" if sizes_only else "sizes and sha256 checked"
        if not (folder / ckpt.MANIFEST).exists():
            note = "no manifest (written before dimdiff kept one): structure checked, contents cannot be"
        print(f"{folder}: DAMAGED" if problems else f"{folder}: intact ({note})")
        for problem in problems:
            print("  " + problem.replace(f"{folder}{os.sep}", "").replace("\n", "\n  "))
    for other, what in other_folders(path) if (path / "checkpoints").is_dir() else []:
        print(f"{other}: not a checkpoint: {what}")
    print(f"{len(folders) - damaged} intact, {damaged} damaged")
    return 1 if damaged else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after options (`--config X a.b=1 --dry-run c.d=2`)
    takes_overrides = args.command in ("train", "bench", "codec") and hasattr(args, "overrides")
    if takes_overrides and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    commands = {"train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval, "bench": _cmd_bench, "info": _cmd_info,
                "codec": run_codec}  # fmt: skip
    from dimdiff.train.loop import TrainingError

    try:
        return commands[args.command](args)
    except (*_USER_ERRORS, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

