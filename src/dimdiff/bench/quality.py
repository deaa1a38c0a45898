"""Quality at equal training budget: train every method the same way, sample, score.

Each method's config is trained with the same steps and batch on each dataset (methods that
differ only in the sampler share one trained model), then sampled with every step count N in
``sample_steps``. Batches are generated interleaved over (method, N), so machine-load drifts hit
all alike, and batch i is seeded with seed + i as in `dimdiff sample`. Scores come from
`dimdiff.evaluate.score_images`; time per image is the median over batches.

The trainer is handed in (``trainer=dimdiff.train.loop.train``, as `dimdiff bench quality` does):
the training loop sits above the benchmarks, which never import it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from dimdiff.bench.environment import environment_record
from dimdiff.bench.registry import BenchMethod, data_channels, training_groups
from dimdiff.build import sample_images
from dimdiff.config import Config, config_to_dict
from dimdiff.data import DatasetName, Split
from dimdiff.evaluate import METRIC_SCORES, Metric, load_reference, score_images
from dimdiff.generate import LoadedModel, load_model
from dimdiff.images import save_grid

__all__ = ["QualityOptions", "QualityRow", "TrainingRecord", "TrainedRun", "Trainer", "quality_bench",
           "default_metrics", "headline_metric"]  # fmt: skip


@dataclass(frozen=True)
class QualityOptions:
    datasets: tuple[DatasetName, ...] = (DatasetName.DIGITS,)  # `digits` and/or `patches`
    sample_steps: tuple[int, ...] = (10, 20, 50)  # step counts N sampled for every method
    samples: int = 500  # images scored per (method, N)
    sample_batch: int = 100  # images per sampling batch
    metrics: tuple[Metric, ...] | None = None  # None: default_metrics(dataset)
    reference_split: Split = Split.TRAIN  # real images the samples are scored against
    seed: int = 0  # sampling seed (training uses train.seed)
    runs_dir: str = "runs/bench_quality"  # training runs and sample grids
    inception_weights: str | None = None  # FID weights file (for `fid` and Inception KID/PR)
    cache_dir: str | None = None  # reference feature cache (None: no cache)
    device: str = "cpu"
    progress: bool = False  # training progress bars


class TrainedRun(Protocol):
    """What the bench reads of a finished training run (`dimdiff.train.loop.TrainResult` has it)."""

    @property
    def losses(self) -> Sequence[float]: ...  # the loss of every step run

    @property
    def step(self) -> int: ...  # optimizer steps taken

    @property
    def checkpoint(self) -> Path | None: ...  # the final checkpoint's folder


class Trainer(Protocol):
    """Trains a config to the end (`dimdiff.train.loop.train`)."""

    def __call__(self, config: Config, *, progress: bool, echo: Callable[..., Any]) -> TrainedRun: ...


@dataclass(frozen=True)
class TrainingRecord:
    """How the model that ``methods`` share was trained on ``dataset``."""

    dataset: str
    methods: list[str]  # keys of the methods sampling this model
    steps: int  # optimizer steps taken
    batch_size: int
    seconds: float  # wall time of training
    examples_per_s: float
    final_loss: float | None  # mean of the last (up to) 50 losses
    checkpoint: str  # folder of the final checkpoint


@dataclass(frozen=True)
class QualityRow:
    """One method sampled with N steps on one dataset, and its scores."""

    dataset: str
    key: str
    name: str
    steps: int  # N
    samples: int  # images scored
    time_per_image_s: float  # median over sampling batches
    scores: dict[str, float]  # score key -> value (evaluate.score_images)
    headline: str  # the score key plots show
    grid: str  # PNG of the first 64 samples


def default_metrics(dataset: DatasetName, inception_weights: str | None = None) -> tuple[Metric, ...]:
    """digits: FD-digits, KID, precision/recall, SWD, confidence; others: SWD (+ FID/KID/PR with weights)."""
    if dataset is DatasetName.DIGITS:
        return (Metric.FD_DIGITS, Metric.KID, Metric.PR, Metric.SWD, Metric.CONFIDENCE)
    return (Metric.SWD, Metric.FID, Metric.KID, Metric.PR) if inception_weights else (Metric.SWD,)


def headline_metric(metrics: Sequence[Metric]) -> str:
    """The score key a plot shows for these metrics (the first one's main number)."""
    return METRIC_SCORES[metrics[0]][0].name


def _on_dataset(config: Config, dataset: DatasetName, out_dir: Path) -> Config:
    """``config`` trained on ``dataset`` (its own channels) into ``out_dir``, one checkpoint at the end."""
    data = dataclasses.replace(config.data, name=dataset, path=None, channels=None)
    train = dataclasses.replace(config.train, out_dir=str(out_dir), checkpoint_every=config.train.steps,
                                sample_n=min(config.train.sample_n, 16))  # fmt: skip
    return dataclasses.replace(config, data=data, train=train)


def _train(group: list[BenchMethod], out_dir: Path, options: QualityOptions,
           trainer: Trainer) -> tuple[TrainingRecord, LoadedModel]:  # fmt: skip
    """Train the model that ``group`` shares into ``out_dir``: its record and its EMA weights."""
    config = group[0].config
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=str(out_dir)))
    start = time.perf_counter()
    result = trainer(config, progress=options.progress, echo=lambda *_: None)
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"training {', '.join(m.key for m in group)} into {out_dir}: expected a final "
                           f"checkpoint, got none after {result.step} steps")  # fmt: skip
    tail = result.losses[-min(50, len(result.losses)) :]
    record = TrainingRecord(
        dataset=config.data.name.value, methods=[m.key for m in group], steps=result.step,
        batch_size=config.train.batch_size, seconds=seconds,
        examples_per_s=result.step * config.train.batch_size / seconds,
        final_loss=statistics.fmean(tail) if tail else None, checkpoint=str(result.checkpoint),
    )  # fmt: skip
    return record, load_model(result.checkpoint, device=options.device)


def _sample_interleaved(
    combos: list[tuple[BenchMethod, int]], models: dict[str, LoadedModel], options: QualityOptions
) -> tuple[list[torch.Tensor], list[list[float]]]:
    """Images and per-image seconds of every batch for each (method, N); batches run round-robin."""
    images: list[list[torch.Tensor]] = [[] for _ in combos]
    seconds: list[list[float]] = [[] for _ in combos]
    for i in range(math.ceil(options.samples / options.sample_batch)):
        count = min(options.sample_batch, options.samples - i * options.sample_batch)
        for j, (method, steps) in enumerate(combos):
            model = models[method.key]
            sample = dataclasses.replace(method.config.sample, steps=steps)
            generator = torch.Generator(device=model.device).manual_seed(options.seed + i)
            start = time.perf_counter()
            with torch.inference_mode():
                batch = sample_images(sample, model.denoiser, model.codec, count, generator=generator,
                                      device=model.device)  # fmt: skip
            seconds[j].append((time.perf_counter() - start) / count)
            images[j].append(batch.cpu())
    return [torch.cat(parts) for parts in images], seconds


def _dataset_rows(methods: Sequence[BenchMethod], dataset: DatasetName, run_dir: Path, options: QualityOptions,
                  trainer: Trainer) -> tuple[list[QualityRow], list[TrainingRecord]]:  # fmt: skip
    """Train, sample and score every method on one dataset: (score rows, training records)."""
    on_data = [dataclasses.replace(m, config=_on_dataset(m.config, dataset, run_dir / dataset.value))
               for m in methods]  # fmt: skip
    trained, models = [], {}
    for group in training_groups(on_data):
        record, model = _train(group, run_dir / dataset.value / group[0].key, options, trainer)
        trained.append(record)
        models.update({m.key: model for m in group})
    combos = [(m, n) for m in on_data for n in options.sample_steps]
    images, seconds = _sample_interleaved(combos, models, options)
    config = on_data[0].config
    metrics = options.metrics or default_metrics(dataset, options.inception_weights)
    reference = load_reference(dataset.value, resolution=config.data.resolution, channels=data_channels(config),
                               split=options.reference_split)  # fmt: skip
    rows = []
    for (method, steps), imgs, secs in zip(combos, images, seconds, strict=True):
        grid = save_grid(run_dir / dataset.value / f"{method.key}_N{steps}.png", imgs[:64])
        scores = score_images(imgs, reference, metrics, inception_weights=options.inception_weights,
                              seed=options.seed, cache_dir=options.cache_dir)  # fmt: skip
        rows.append(QualityRow(dataset=dataset.value, key=method.key, name=method.name, steps=steps,
                               samples=len(imgs), time_per_image_s=statistics.median(secs), scores=scores,
                               headline=headline_metric(metrics), grid=str(grid)))  # fmt: skip
    return rows, trained


def quality_bench(methods: Sequence[BenchMethod], options: QualityOptions = QualityOptions(), *,
                  trainer: Trainer) -> dict[str, Any]:  # fmt: skip
    """Train every method with ``trainer`` (`dimdiff.train.loop.train`), sample and score it on every
    dataset; a JSON-able result."""
    base = methods[0].config
    environment = environment_record(seeds={"train": base.train.seed, "sampling": options.seed})
    run_dir = Path(options.runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    rows: list[QualityRow] = []
    trained: list[TrainingRecord] = []
    for dataset in options.datasets:
        dataset_rows, records = _dataset_rows(methods, dataset, run_dir, options, trainer)
        rows += dataset_rows
        trained += records
    config = config_to_dict(base)
    settings = dataclasses.asdict(options) | {"run_dir": str(run_dir)}
    return {
        "benchmark": "quality",
        "settings": settings,
        "model": config["model"], "process": config["process"], "train": config["train"],
        "resolution": base.data.resolution,
        "training": [dataclasses.asdict(record) for record in trained],
        "rows": [dataclasses.asdict(row) for row in rows],
        "environment": environment,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
