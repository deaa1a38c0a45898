"""The training loop: one function that reads top to bottom.

    batch x0 -> flips -> z0 = codec.encode(x0) -> t ~ process, noise -> loss = denoiser.loss(z0, t, noise)
    -> AdamW step -> EMA update

The denoiser owns the loss (`nets.denoiser`: x_t = forward_sample(x0, t, noise), the network, the
head's loss); the loop owns optimisation, precision, data, checkpoints and logs. Everything random
(data order, flips, t, noise, dropout) is seeded and saved in checkpoints, so a resumed run
reproduces the losses of an uninterrupted one exactly. The seeding happens inside a fork of torch's
global RNG: a caller's own random state is the same after ``train`` as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dimdiff import checkpoint as ckpt
from dimdiff.build import (
    build_codec,
    build_denoiser,
    build_head,
    build_net,
    build_process,
    data_shape,
    fit_to_data,
    sample_images,
)  # fmt: skip
from dimdiff.codecs import Codec
from dimdiff.config import Config, Device, Precision, dumps
from dimdiff.data.configured import training_data
from dimdiff.images import plot_loss_curve, save_grid
from dimdiff.nets.denoiser import Denoiser
from dimdiff.preflight import preflight
from dimdiff.process.base import DiffusionProcess
from dimdiff.train.batches import BatchStream
from dimdiff.train.distributed import (
    DistInfo,
    all_equal_checksums,
    reduce_flag,
    setup_distributed,
    teardown_distributed,
)
from dimdiff.train.divergence import DivergenceGuard
from dimdiff.train.ema import EMA
from dimdiff.train.errors import RunFolderBusy, TrainingError
from dimdiff.train.logging import MetricsLog, read_metrics
from dimdiff.train.run_folder import resume_path, run_lock

__all__ = ["TrainingError", "TrainResult", "train", "resolve_device"]


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


def _autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The dtype the network runs in under autocast (None: plain float32)."""
    if precision is Precision.FP32:
        return None
    if precision is Precision.FP16 and device.type != "cuda":
        raise TrainingError("train.precision = fp16 needs a CUDA device; use fp32 (or bf16) on cpu")
    return torch.bfloat16 if precision is Precision.BF16 else torch.float16


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


def train(config: Config, *, resume: str | None = None, progress: bool = True, echo: Any = print) -> TrainResult:
    """Train the configured model; ``resume`` is None, "auto" or a checkpoint/run folder. torch's thread
    count is the caller's (``dimdiff train`` applies train.threads); torch's global RNG is left as it was."""
    preflight(config)  # a config that cannot train fails here, before any data is read or anything written
    device = resolve_device(config.train.device)
    dist_info = setup_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        lock = _folder_lock(Path(config.train.out_dir), dist_info, device)
        with lock, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _train(config, device, dist_info, resume, progress, echo)
    finally:
        teardown_distributed(dist_info)


@contextlib.contextmanager
def _folder_lock(out_dir: Path, dist_info: DistInfo, device: torch.device) -> Iterator[None]:
    """The run folder's lock, taken by the writing rank; every rank stops if it cannot be had."""
    with contextlib.ExitStack() as stack:
        error = None
        if dist_info.is_main:
            try:
                stack.enter_context(run_lock(out_dir))
            except RunFolderBusy as exc:
                error = exc
        if reduce_flag(error is not None, dist_info, device):
            raise error or RunFolderBusy(f"{out_dir} is in use by another training run (rank 0 says by whom)")
        yield


@dataclass
class _Run:
    """Everything one training run builds and mutates (saved in and restored from checkpoints)."""

    config: Config
    device: torch.device
    dist: DistInfo
    codec: Codec  # images -> the latents the process runs on (fitted before training starts)
    process: DiffusionProcess
    shape: tuple[int, int, int]  # (C, H, W) of the images
    net: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stream: BatchStream
    generator: torch.Generator  # t and noise
    flip_generator: torch.Generator  # horizontal flips
    step: int = 0


def _fit_to_data(config: Config, dataset: Any, start: Path | None, echo: Any) -> tuple[Config, Codec]:
    """What the codec and the process options learn from the training data (a codec's state; subspace's
    process.complement_std, estimated on the codec's latents): from the checkpoint being resumed,
    else from the training images."""
    if start is not None:
        saved = ckpt.read_checkpoint_info(start).config
        if config.process.options.needs_fit and saved.process.kind == config.process.kind:
            config = dataclasses.replace(config, process=dataclasses.replace(config.process,
                                                                             options=saved.process.options))
        ckpt.check_compatible(saved, config, start)  # another kind of run: say so before building anything
        return config, build_codec(config.codec, ckpt.load_codec_state(start), str(start / ckpt.CODEC_FILE))
    return fit_to_data(config, dataset, progress=echo)


def _report_fit(before: Any, after: Any, echo: Any) -> None:
    """Say which process options were estimated from the training data."""
    for f in dataclasses.fields(after):
        value = getattr(after, f.name)
        if value != getattr(before, f.name):
            shown = [round(v, 5) for v in value] if isinstance(value, tuple) else value
            echo(f"process.{f.name} estimated from the data: {shown}")


def _build(config: Config, device: torch.device, dist_info: DistInfo, start: Path | None,
           echo: Any) -> tuple[_Run, Any]:  # fmt: skip
    tc, data = config.train, config.data
    if tc.batch_size % (dist_info.world_size * tc.grad_accum):
        raise TrainingError(f"train.batch_size = {tc.batch_size} must be a multiple of processes x grad_accum "
                            f"= {dist_info.world_size} x {tc.grad_accum}")  # fmt: skip
    dataset = training_data(config)
    shape = data_shape(config, dataset.channels)
    config, codec = _fit_to_data(config, dataset, start, echo)
    process = build_process(config.process, codec.latent_shape(shape))
    torch.manual_seed(tc.seed)  # initial weights
    net = build_net(config.model, process, build_head(config, codec)).to(device)
    if tc.channels_last:
        net = net.to(memory_format=torch.channels_last)
    micro = tc.batch_size // (dist_info.world_size * tc.grad_accum)
    run = _Run(
        config=config, device=device, dist=dist_info, codec=codec, process=process, shape=shape,
        net=net, ema=EMA(net, tc.ema_decay, tc.ema_warmup),
        optimizer=torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay),
        scaler=torch.amp.GradScaler(device.type, enabled=tc.precision is Precision.FP16),
        stream=BatchStream(dataset, micro, seed=tc.seed, rank=dist_info.rank, world_size=dist_info.world_size,
                           num_workers=data.num_workers),
        generator=torch.Generator(device=device).manual_seed(tc.seed * 1000 + dist_info.rank),
        flip_generator=torch.Generator().manual_seed(tc.seed * 1000 + 500 + dist_info.rank),
    )  # fmt: skip
    torch.manual_seed(tc.seed * 1000 + 7 + dist_info.rank)  # dropout stream, distinct per rank
    return run, dataset


def _restore(run: _Run, start: Path) -> None:
    """Load weights, optimizer, data position and RNG states of a checkpoint into ``run``."""
    info = ckpt.read_checkpoint_info(start)
    ckpt.check_compatible(info.config, run.config, start)
    ckpt.load_state_dict_strict(run.net, start / "model.safetensors")
    ckpt.load_state_dict_strict(run.ema.model, start / "ema.safetensors")
    state = ckpt.load_training_state(start)
    if len(state["data"]) != run.dist.world_size:
        raise ckpt.CheckpointError(f"cannot resume from {start}: it was made by {len(state['data'])} process(es), "
                                   f"this run has {run.dist.world_size}")  # fmt: skip
    layout = _batch_layout(run)
    saved = {key: state.get("layout", {}).get(key, value) for key, value in layout.items()}
    if saved != layout:
        diffs = ", ".join(f"{k}: checkpoint {saved[k]}, config {layout[k]}" for k in layout if saved[k] != layout[k])
        raise ckpt.CheckpointError(f"cannot resume from {start} exactly: the data order was made with {diffs}")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.stream.load_state(state["data"][run.dist.rank])
    _set_rng_state(state["rng"][run.dist.rank], run.generator, run.device)
    run.flip_generator.set_state(state["flip_rng"][run.dist.rank])
    run.ema.num_updates, run.step = int(state["ema_updates"]), int(state["step"])


def _save(run: _Run, out_dir: Path) -> Path | None:
    """Checkpoint the run (every rank contributes its data position and RNG states; rank 0 writes)."""
    gathered = _gather_states(run.stream, run.generator, run.flip_generator, run.device, run.dist)
    state = {"step": run.step, "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
             "ema_updates": run.ema.num_updates, "layout": _batch_layout(run), **gathered}  # fmt: skip
    if not run.dist.is_main:
        return None
    return ckpt.save_checkpoint(out_dir, step=run.step, config=run.config, data_shape=run.shape, model=run.net,
                                ema=run.ema.model, state=state, keep_last=run.config.train.keep_last,
                                codec_state=run.codec.state())  # fmt: skip


def _batch_layout(run: _Run) -> dict[str, int]:
    """What the saved data position means: it counts micro-batches of this size and seed."""
    return {"micro_batch": run.stream.batch_size, "seed": run.config.train.seed}


def _train_step(run: _Run, model: nn.Module, denoiser: Denoiser, batches: Any) -> tuple[float, dict[str, float], float]:
    """One optimizer step over grad_accum micro-batches: (loss, loss parts, gradient norm)."""
    tc, process = run.config.train, run.process
    for group in run.optimizer.param_groups:
        group["lr"] = _learning_rate(run.config, run.step)
    run.optimizer.zero_grad(set_to_none=True)
    step_loss, parts = 0.0, {}
    for m in range(tc.grad_accum):
        x0 = next(batches).to(run.device, non_blocking=True)  # (b, C, H, W)
        if run.config.data.hflip:
            flip = torch.rand(x0.shape[0], generator=run.flip_generator) < 0.5  # (b,)
            x0 = torch.where(flip.to(run.device)[:, None, None, None], x0.flip(-1), x0)
        z0 = run.codec.encode(x0)  # (b, C', H', W'): the latents the process runs on
        t = process.sample_training_t(z0.shape[0], generator=run.generator, device=run.device)  # (b,)
        noise = process.noise_like(z0, t, generator=run.generator)  # shape of z_t
        sync = m == tc.grad_accum - 1 or not run.dist.enabled
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, parts = denoiser.loss(z0, t, noise)
        run.scaler.scale(loss / tc.grad_accum).backward()
        step_loss += loss.item() / tc.grad_accum
    if reduce_flag(not math.isfinite(step_loss), run.dist, run.device):
        return step_loss, parts, math.nan
    run.scaler.unscale_(run.optimizer)
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.net.parameters(), max_norm))
    if not math.isfinite(grad_norm) and not run.scaler.is_enabled():
        return step_loss, parts, grad_norm
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else 1.0
    run.scaler.step(run.optimizer)  # with fp16 scaling, an overflowing step is skipped here
    run.scaler.update()
    if not run.scaler.is_enabled() or run.scaler.get_scale() >= scale:
        run.ema.update(run.net)
    run.step += 1
    return step_loss, parts, grad_norm


def _train(config: Config, device: torch.device, dist_info: DistInfo, resume: str | None,
           progress: bool, echo: Any) -> TrainResult:  # fmt: skip
    tc, main, out_dir = config.train, dist_info.is_main, Path(config.train.out_dir)
    start = resume_path(resume, out_dir, main=main, echo=echo)
    run, dataset = _build(config, device, dist_info, start, echo if main else None)
    if main and start is None:
        _report_fit(config.process.options, run.config.process.options, echo)
    config = run.config  # with what was estimated from the data
    if start is not None:
        _restore(run, start)
        if main:
            echo(f"resumed from {start} at step {run.step}")
    # a net whose batches run only part of it (one net per level, say) leaves the rest without gradient
    ddp = {"find_unused_parameters": getattr(run.net, "skips_parameters", False)}
    model: nn.Module = DistributedDataParallel(run.net, **ddp) if dist_info.enabled else run.net
    denoiser = build_denoiser(config, torch.compile(model) if tc.compile else model, run.process, codec=run.codec,
                              autocast=_autocast_dtype(tc.precision, device))  # fmt: skip
    log = MetricsLog(out_dir / "metrics.jsonl", run.step if start is not None else None, echo) if main else None
    if main:
        (out_dir / "config.json").write_text(dumps(config))
        skipped = list(getattr(dataset, "skipped", []))
        if skipped:
            echo(f"skipped {len(skipped)} undecodable image(s), e.g. {skipped[0]}")
            log.write({"step": run.step, "skipped_files": len(skipped), "skipped": skipped[:100]})  # type: ignore[union-attr]

    last_ckpt, losses, batches = start, [], iter(run.stream)
    guard = DivergenceGuard(tc.divergence_factor, tc.divergence_patience)
    bar = tqdm(total=tc.steps, initial=run.step, disable=not (progress and main), desc="train", dynamic_ncols=True)
    t_last, step_last = time.perf_counter(), run.step
    while run.step < tc.steps:
        step_before = run.step
        loss, parts, grad_norm = _train_step(run, model, denoiser, batches)
        if run.step == step_before:  # a non-finite loss, or gradients without fp16 scaling
            good = guard.last_good(guard.began or step_before + 1, start)
            where = f"the last good checkpoint is {good}" if good else "no checkpoint predates it"
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm} (loss {loss})"
            raise TrainingError(f"{what}, not finite, at step {step_before + 1}; training stopped, {where}")
        if guard.factor > 0 and reduce_flag(guard.update(run.step, loss), run.dist, run.device):
            raise TrainingError(guard.message(guard.last_good(guard.began, start)))
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        step = run.step
        if log is not None and (step % tc.log_every == 0 or step == tc.steps):
            now = time.perf_counter()
            rate, t_last, step_last = (step - step_last) / max(now - t_last, 1e-9), now, step
            log.write({"step": step, "loss": loss, **parts, "grad_norm": grad_norm,
                       "lr": run.optimizer.param_groups[0]["lr"], "steps_per_s": rate})  # fmt: skip
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            saved = _save(run, out_dir)
            if saved is not None:
                last_ckpt = saved
                guard.saved(step, saved)
        if main and tc.sample_every and step % tc.sample_every == 0 and step != tc.steps:
            _sample_grid(run, run.ema.model, out_dir / "samples" / f"step_{step:08d}.png")
    bar.close()
    return _finish(run, out_dir, log, losses, last_ckpt)


def _finish(run: _Run, out_dir: Path, log: MetricsLog | None, losses: list[float],
            last_ckpt: Path | None) -> TrainResult:  # fmt: skip
    """Check the ranks agree, draw the final grid and the loss curve."""
    checksums = all_equal_checksums(run.net, run.dist, run.device)
    grid = loss_plot = None
    if log is not None:
        if run.dist.enabled:
            log.write({"step": run.step, "rank_checksums": checksums})
            if len(set(checksums)) != 1:
                raise TrainingError(f"ranks hold different weights after training: {checksums}")
        path = out_dir / "samples" / f"step_{run.step:08d}.png"
        grid = _sample_grid(run, run.ema.model, path)
        loss_plot = plot_loss_curve(read_metrics(log.path), out_dir / "loss.png") if losses else None
    return TrainResult(out_dir, last_ckpt, run.step, losses, grid, loss_plot)


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
def _sample_grid(run: _Run, net: nn.Module, path: Path) -> Path:
    """A grid of train.sample_n images decoded from samples of ``net`` (the EMA weights), seeded by train.seed."""
    config = run.config
    denoiser = build_denoiser(config, net, run.process, codec=run.codec)
    generator = torch.Generator(device=run.device).manual_seed(config.train.seed)
    images = sample_images(config.sample, denoiser, run.codec, config.train.sample_n, generator=generator,
                           device=run.device)  # fmt: skip
    return save_grid(path, images)
