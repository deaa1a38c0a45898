"""The training loop: one function that reads top to bottom.

    batch x0 -> t ~ process -> x_t = forward_sample(x0, t, noise) -> pred = net(x_t, t)
    loss = w(t) |pred - target|^2 (+ complexity term) -> AdamW step -> EMA update

Everything random (data order, flips, t, noise, dropout) is seeded and saved in checkpoints,
so a resumed run reproduces the losses of an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dimdiff import checkpoint as ckpt
from dimdiff.build import build_denoiser, build_net, build_process, run_sampler
from dimdiff.config import Config, Device, Precision, dumps
from dimdiff.data import load_dataset
from dimdiff.images import plot_loss_curve, save_grid
from dimdiff.train.batches import BatchStream
from dimdiff.train.distributed import (
    DistInfo,
    all_equal_checksums,
    reduce_flag,
    setup_distributed,
    teardown_distributed,
)
from dimdiff.train.ema import EMA
from dimdiff.train.logging import MetricsLog
from dimdiff.train.losses import diffusion_loss, loss_weight

__all__ = ["TrainingError", "TrainResult", "train", "resolve_device"]


class TrainingError(RuntimeError):
    """Training stopped (a non-finite loss, say); the last good checkpoint is intact."""


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    step: int
    losses: list[float]  # the loss of every step run in this call
    grid: Path | None
    loss_plot: Path | None


def resolve_device(choice: Device) -> torch.device:
    if choice is Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice is Device.CUDA and not torch.cuda.is_available():
        raise TrainingError("train.device = cuda, but no CUDA device is available; use cpu or auto")
    return torch.device(choice.value)


def _autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    if precision is Precision.FP16 and device.type != "cuda":
        raise TrainingError("train.precision = fp16 needs a CUDA device; use fp32 (or bf16) on cpu")
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _learning_rate(config: Config, step: int) -> float:
    warmup = config.train.warmup_steps
    return config.train.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else config.train.lr


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _resume_path(resume: str | None, out_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        found = ckpt.list_checkpoints(out_dir)
        return found[-1] if found else None
    return ckpt.find_checkpoint(resume)


def train(config: Config, *, resume: str | None = None, progress: bool = True, echo: Any = print) -> TrainResult:
    """Train the configured model; ``resume`` is None, "auto" or a checkpoint/run folder."""
    tc = config.train
    device = resolve_device(tc.device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    dist_info = setup_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        return _train(config, device, dist_info, resume, progress, echo)
    finally:
        teardown_distributed(dist_info)


def _train(config: Config, device: torch.device, dist_info: DistInfo, resume: str | None,
           progress: bool, echo: Any) -> TrainResult:  # fmt: skip
    tc, main = config.train, dist_info.is_main
    out_dir = Path(tc.out_dir)
    if tc.batch_size % (dist_info.world_size * tc.grad_accum):
        raise TrainingError(
            f"train.batch_size = {tc.batch_size} must be a multiple of processes x grad_accum "
            f"= {dist_info.world_size} x {tc.grad_accum}"
        )
    data = config.data
    dataset = load_dataset(data.name, path=data.path, resolution=data.resolution, channels=data.channels,
                           seed=tc.seed, num_patches=data.num_patches, skip_bad_files=data.skip_bad_files)  # fmt: skip
    shape = (dataset.channels, data.resolution, data.resolution)
    process = build_process(config.process, shape)

    torch.manual_seed(tc.seed)
    net = build_net(config.model, dataset.channels, data.resolution).to(device)
    if tc.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net, tc.ema_decay, tc.ema_warmup)
    optimizer = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision is Precision.FP16)
    micro = tc.batch_size // (dist_info.world_size * tc.grad_accum)
    stream = BatchStream(dataset, micro, seed=tc.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                         num_workers=data.num_workers)  # fmt: skip
    generator = torch.Generator(device=device).manual_seed(tc.seed * 1000 + dist_info.rank)
    flip_generator = torch.Generator().manual_seed(tc.seed * 1000 + 500 + dist_info.rank)

    step = 0
    start = _resume_path(resume, out_dir)
    if start is not None:
        info = ckpt.read_checkpoint_info(start)
        ckpt.check_compatible(info.config, config, start)
        ckpt.load_state_dict_strict(net, start / "model.safetensors")
        ckpt.load_state_dict_strict(ema.model, start / "ema.safetensors")
        state = ckpt.load_training_state(start)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        stream.load_state(state["data"][dist_info.rank] if dist_info.enabled else state["data"][0])
        _set_rng_state(state["rng"][dist_info.rank] if dist_info.enabled else state["rng"][0], generator, device)
        flip_generator.set_state(state["flip_rng"][dist_info.rank if dist_info.enabled else 0])
        ema.num_updates, step = int(state["ema_updates"]), int(state["step"])
        if main:
            echo(f"resumed from {start} at step {step}")
    else:
        torch.manual_seed(tc.seed * 1000 + 7 + dist_info.rank)  # dropout stream, distinct per rank

    model: nn.Module = DistributedDataParallel(net) if dist_info.enabled else net
    forward = torch.compile(model) if tc.compile else model
    log = MetricsLog(out_dir / "metrics.jsonl", resume_step=step if start is not None else None) if main else None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(dumps(config))
        skipped = list(getattr(dataset, "skipped", []))
        if skipped:
            echo(f"skipped {len(skipped)} undecodable image(s), e.g. {skipped[0]}")
            log.write({"step": step, "skipped_files": len(skipped), "skipped": skipped[:100]})  # type: ignore[union-attr]
    last_ckpt: Path | None = start
    losses: list[float] = []
    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and main), desc="train", dynamic_ncols=True)
    batches = iter(stream)
    t_last, step_last = time.perf_counter(), step

    def save(step_now: int) -> Path:
        gathered = _gather_states(stream, generator, flip_generator, device, dist_info)
        state = {"step": step_now, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "ema_updates": ema.num_updates, **gathered}  # fmt: skip
        if not main:
            return Path()
        return ckpt.save_checkpoint(out_dir, step=step_now, config=config, data_shape=shape, model=net,
                                    ema=ema.model, state=state, keep_last=tc.keep_last)  # fmt: skip

    while step < tc.steps:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        optimizer.zero_grad(set_to_none=True)
        step_loss, parts = 0.0, {}
        for m in range(tc.grad_accum):
            x0 = next(batches).to(device, non_blocking=True)  # (b, C, H, W)
            if data.hflip:
                flip = torch.rand(x0.shape[0], generator=flip_generator) < 0.5
                x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
            t = process.sample_training_t(x0.shape[0], generator=generator, device=device)  # (b,)
            noise = process.noise_like(x0, t, generator=generator)  # shape of x_t
            x_t = process.forward_sample(x0, t, noise)  # (b, C', H', W')
            target = process.training_target(x0, noise, t, config.process.parameterization)
            kind = config.process.parameterization
            weight = loss_weight(process.log_snr(t), tc.loss_weighting, kind, tc.min_snr_gamma)  # (b,)
            sync = m == tc.grad_accum - 1 or not dist_info.enabled
            with (contextlib.nullcontext() if sync else model.no_sync()), _autocast(tc.precision, device):
                x_in = x_t.contiguous(memory_format=torch.channels_last) if tc.channels_last else x_t
                pred = forward(x_in, t.float())  # (b, C', H', W')
                loss, parts = diffusion_loss(pred, target, weight, x0=x0, complexity_lambda=tc.complexity_lambda)
            scaler.scale(loss / tc.grad_accum).backward()
            step_loss += loss.item() / tc.grad_accum
        if reduce_flag(not math.isfinite(step_loss), dist_info, device):
            where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            raise TrainingError(f"loss is {step_loss} (not finite) at step {step + 1}; training stopped, {where}")
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        ema.update(net)
        step += 1
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        if log is not None and (step % tc.log_every == 0 or step == tc.steps):
            now = time.perf_counter()
            rate = (step - step_last) / max(now - t_last, 1e-9)
            t_last, step_last = now, step
            log.write({"step": step, "loss": step_loss, **parts, "grad_norm": float(grad_norm),
                       "lr": optimizer.param_groups[0]["lr"], "steps_per_s": rate})  # fmt: skip
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            last_ckpt = save(step)
        if main and tc.sample_every and step % tc.sample_every == 0 and step != tc.steps:
            _sample_grid(config, ema.model, process, device, out_dir / "samples" / f"step_{step:08d}.png")
    bar.close()

    checksums = all_equal_checksums(net, dist_info, device)
    grid = loss_plot = None
    if main:
        if dist_info.enabled:
            log.write({"step": step, "rank_checksums": checksums})  # type: ignore[union-attr]
            if len(set(checksums)) != 1:
                raise TrainingError(f"ranks hold different weights after training: {checksums}")
        grid = _sample_grid(config, ema.model, process, device, out_dir / "samples" / f"step_{step:08d}.png")
        loss_plot = plot_loss_curve(out_dir / "metrics.jsonl", out_dir / "loss.png") if losses else None
    return TrainResult(out_dir, last_ckpt, step, losses, grid, loss_plot)


def _gather_states(stream: BatchStream, generator: torch.Generator, flip_generator: torch.Generator,
                   device: torch.device, dist_info: DistInfo) -> dict[str, list]:  # fmt: skip
    """Every rank's data position and RNG states (rank order), for the checkpoint."""
    own = {"data": stream.state(), "rng": _rng_state(generator, device), "flip_rng": flip_generator.get_state()}
    if not dist_info.enabled:
        return {key: [value] for key, value in own.items()}
    import torch.distributed as dist

    everyone: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(everyone, own)
    return {key: [o[key] for o in everyone] for key in own}


@torch.no_grad()
def _sample_grid(config: Config, net: nn.Module, process: Any, device: torch.device, path: Path) -> Path:
    denoiser = build_denoiser(config, net, process)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    images = run_sampler(config.sample, denoiser, process, config.train.sample_n, generator=generator, device=device)
    return save_grid(path, images)
