"""Scoring samples against reference data: the one path behind `dimdiff eval` and the quality
benchmark, so every method is measured the same way.

Samples are quantised to 8 bits first (as if written to and read from PNG), so scores of
in-memory samples and of saved ones agree. Features of the reference set are cached as `.npz`
keyed by dataset, split, resolution, channels, sample count and feature network.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from dimdiff.config import ConfigError, SampleConfig
from dimdiff.data import DataError, DatasetName, Split, load_dataset
from dimdiff.data.npz import read_npz_array, to_nchw
from dimdiff.images import quantise_8bit
from dimdiff.metrics import (
    SWD_MEAN_KEY,
    SWD_SCALE_PREFIX,
    classifier_confidence,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    load_digits_classifier,
    load_fid_inception,
    precision_recall,
    sliced_wasserstein_distance,
)

__all__ = [
    "Metric", "Direction", "ScoreKey", "METRIC_SCORES", "FeatureNet", "Reference", "EvalReport", "load_reference",
    "load_samples", "score_images", "score_direction", "lower_is_better", "evaluate_checkpoint", "parse_metrics",
    "default_cache_dir",
]  # fmt: skip

CACHE_ENV = "DIMDIFF_CACHE"


class Metric(str, enum.Enum):
    FD_DIGITS = "fd-digits"  # Frechet distance on the digits classifier's features
    FID = "fid"  # Frechet distance on Inception-v3 pool3 features (needs the weights file)
    KID = "kid"  # kernel inception distance (on the feature network below)
    PR = "pr"  # precision and recall (k-NN manifolds, on the feature network below)
    SWD = "swd"  # multi-scale sliced Wasserstein distance on pixels, one value per scale
    CONFIDENCE = "confidence"  # the digits classifier's mean max-probability on the samples


class Direction(str, enum.Enum):
    """Which way a score improves."""

    LOWER = "lower"  # lower is better: a distance to the data
    HIGHER = "higher"  # higher is better
    NEITHER = "neither"  # not a measure of quality (the spread of an estimate)


@dataclass(frozen=True)
class ScoreKey:
    """A key of ``score_images``' result and its direction; ``per_scale``: a family of keys, ``name``
    followed by a resolution in pixels (one per pyramid level: swd_32, swd_16, ...)."""

    name: str
    direction: Direction
    per_scale: bool = False

    def matches(self, key: str) -> bool:
        if not self.per_scale:
            return key == self.name
        return key.startswith(self.name) and key[len(self.name) :].isdigit()


# Every key each metric produces, its main number first (what a plot shows): the one place that
# says which way a score improves.
METRIC_SCORES: dict[Metric, tuple[ScoreKey, ...]] = {
    Metric.FD_DIGITS: (ScoreKey("fd-digits", Direction.LOWER),),
    Metric.FID: (ScoreKey("fid", Direction.LOWER),),
    Metric.KID: (ScoreKey("kid", Direction.LOWER), ScoreKey("kid_std", Direction.NEITHER)),
    Metric.PR: (ScoreKey("precision", Direction.HIGHER), ScoreKey("recall", Direction.HIGHER)),
    Metric.SWD: (ScoreKey(SWD_MEAN_KEY, Direction.LOWER), ScoreKey(SWD_SCALE_PREFIX, Direction.LOWER, per_scale=True)),
    Metric.CONFIDENCE: (ScoreKey("confidence", Direction.HIGHER),),
}


def score_direction(key: str) -> Direction:
    """Which way the score ``key`` (of ``score_images``' result) improves."""
    for score in (s for scores in METRIC_SCORES.values() for s in scores):
        if score.matches(key):
            return score.direction
    known = [s.name + ("<resolution>" if s.per_scale else "") for scores in METRIC_SCORES.values() for s in scores]
    raise ValueError(f"expected a score key among {', '.join(known)}, got {key!r}")


def lower_is_better(key: str) -> bool:
    """Whether a lower value of the score ``key`` is better (distances)."""
    return score_direction(key) is Direction.LOWER


def _named(metric: Metric, *values: float) -> dict[str, float]:
    """``metric``'s values under its keys in METRIC_SCORES, in order."""
    return dict(zip((s.name for s in METRIC_SCORES[metric]), values, strict=True))


class FeatureNet(str, enum.Enum):
    DIGITS = "digits-classifier"
    INCEPTION = "inception-v3-fid"


@dataclass(frozen=True)
class Reference:
    images: Tensor  # (N, C, H, W) in [-1, 1]
    key: str  # names the set for caching: dataset-split-resolution-channels-count


@dataclass
class EvalReport:
    metrics: dict[str, float]
    n: int
    reference: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "n": self.n, "reference": self.reference, **self.extra}


def parse_metrics(text: str) -> list[Metric]:
    """'fd-digits,kid,swd' -> [Metric.FD_DIGITS, ...] (unknown names are an error listing the valid ones)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    valid = [m.value for m in Metric]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ConfigError(f"--metrics: expected a comma-separated list from {', '.join(valid)}, got {text!r}")
    return [Metric(n) for n in names]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dimdiff")


# ------------------------------------------------------------------------- inputs
def _path_tag(path: str | Path) -> str:
    resolved = str(Path(path).resolve())
    return f"{Path(path).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def load_reference(spec: str, *, resolution: int, channels: int, split: Split = Split.TRAIN,
                   n: int | None = None) -> Reference:  # fmt: skip
    """``spec``: "digits", "patches", an image folder, a .npz file, or CIFAR-10 python batches.
    Reference images are rounded to 8 bits like the samples they are compared with."""
    if spec in (DatasetName.DIGITS.value, DatasetName.PATCHES.value):
        dataset = load_dataset(DatasetName(spec), resolution=resolution, channels=channels, split=split)
        name = f"{spec}-{Split(split).value}"
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"reference {spec!r}: expected 'digits', 'patches', an image folder, a .npz file or "
                            f"CIFAR-10 python batches; {path} does not exist")  # fmt: skip
        kind = _reference_kind(path)
        dataset = load_dataset(kind, path=path, resolution=resolution, channels=channels,
                               split=split if kind is DatasetName.CIFAR10 else Split.ALL)  # fmt: skip
        name = f"{_path_tag(path)}-{Split(split).value}" if kind is DatasetName.CIFAR10 else _path_tag(path)
    images = getattr(dataset, "tensor", None)
    images = quantise_8bit(dataset.to_tensor() if images is None else images)
    if n is not None:
        images = images[:n]
    content = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:10]  # a changed folder is a new key
    return Reference(images, f"{name}-{resolution}px-{channels}ch-n{len(images)}-{content}")


def _reference_kind(path: Path) -> DatasetName:
    """npz file, CIFAR-10 python batches (the tar.gz or its folder), or an image folder."""
    if path.suffix == ".npz":
        return DatasetName.NPZ
    if path.name.endswith(".tar.gz") or (path / "data_batch_1").is_file() or (path / "cifar-10-batches-py").is_dir():
        return DatasetName.CIFAR10
    return DatasetName.FOLDER


def load_samples(path: str | Path, *, channels: int | None = None) -> Tensor:
    """Saved samples: a .npz (uint8 NHWC under 'images', or any layout the npz dataset reads)
    or a folder of images; their own resolution is kept."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"samples {path} do not exist")
    if path.suffix == ".npz":
        resolution = min(to_nchw(read_npz_array(path)).shape[-2:])  # (N, C, H, W): a layout the npz dataset reads
        dataset = load_dataset(DatasetName.NPZ, path=path, resolution=int(resolution), channels=channels)
        return dataset.tensor  # type: ignore[attr-defined]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    if not files:
        raise DataError(f"samples folder {path} holds no images (.png, .jpg, .jpeg, .webp, .bmp)")
    from PIL import Image

    with Image.open(files[0]) as first:
        resolution = min(first.size)
        channels = channels or (1 if first.mode in ("1", "L", "LA", "I", "I;16") else 3)  # grey files stay grey
    return load_dataset(DatasetName.FOLDER, path=path, resolution=resolution, channels=channels).to_tensor()


# ------------------------------------------------------------------------- features
@torch.no_grad()
def _extract(fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 250) -> np.ndarray:
    """Features of all images, in batches (with a progress bar when it takes many)."""
    starts = range(0, len(images), batch_size)
    bar = tqdm(starts, desc="features", disable=len(starts) < 8, leave=False)
    return torch.cat([fn(images[i : i + batch_size]).double() for i in bar]).numpy()


@functools.lru_cache(maxsize=1)
def _digits_classifier() -> torch.nn.Module:
    """The committed classifier, loaded once per process (eval mode, no gradients)."""
    return load_digits_classifier()


def _feature_fn(net: FeatureNet, inception_weights: str | None) -> Callable[[Tensor], Tensor]:
    if net is FeatureNet.DIGITS:
        return _digits_classifier().features
    return load_fid_inception(inception_weights)


def _reference_features(reference: Reference, net: FeatureNet, fn: Callable[[Tensor], Tensor],
                        cache_dir: Path | None) -> np.ndarray:  # fmt: skip
    if cache_dir is None:
        return _extract(fn, reference.images)
    file = cache_dir / f"{reference.key}-{net.value}.npz"
    if file.is_file():
        with np.load(file) as data:
            return data["features"]
    features = _extract(fn, reference.images)
    mu, sigma = feature_statistics(features)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, features=features, mu=mu, sigma=sigma, key=reference.key, network=net.value)
    tmp.replace(file)
    return features


def score_images(
    samples: Tensor,
    reference: Reference,
    metrics: Sequence[Metric],
    *,
    features: FeatureNet | None = None,
    inception_weights: str | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict[str, float]:
    """Scores of samples (N, C, H, W) in [-1, 1] against a reference set. KID and precision/
    recall use ``features`` (default: Inception when FID is asked for, else the digits classifier)."""
    if samples.shape[1:] != reference.images.shape[1:]:
        raise DataError(f"expected samples of shape {tuple(reference.images.shape[1:])} like the reference "
                        f"{reference.key}, got {tuple(samples.shape[1:])}")  # fmt: skip
    samples = quantise_8bit(samples.cpu())
    cache = Path(cache_dir) if cache_dir is not None else None
    feature_net = features or (FeatureNet.INCEPTION if Metric.FID in metrics else FeatureNet.DIGITS)
    wanted = {FeatureNet.DIGITS} if Metric.FD_DIGITS in metrics else set()
    wanted |= {FeatureNet.INCEPTION} if Metric.FID in metrics else set()
    wanted |= {feature_net} if {Metric.KID, Metric.PR} & set(metrics) else set()
    feats: dict[FeatureNet, tuple[np.ndarray, np.ndarray]] = {}
    for net in sorted(wanted, key=lambda n: n.value):
        fn = _feature_fn(net, inception_weights)
        feats[net] = (_extract(fn, samples), _reference_features(reference, net, fn, cache))
    out: dict[str, float] = {}
    for metric in metrics:
        out.update(_score_one(metric, samples, reference, feats, feature_net, seed))
    return out


def _fd(pair: tuple[np.ndarray, np.ndarray]) -> float:
    return frechet_distance(*feature_statistics(pair[0]), *feature_statistics(pair[1]))


def _score_one(metric: Metric, samples: Tensor, reference: Reference, feats: dict, net: FeatureNet,
               seed: int) -> dict[str, float]:  # fmt: skip
    if metric is Metric.FD_DIGITS:
        return _named(metric, _fd(feats[FeatureNet.DIGITS]))
    if metric is Metric.FID:
        return _named(metric, _fd(feats[FeatureNet.INCEPTION]))
    if metric is Metric.KID:
        fake, real = feats[net]
        return _named(metric, *kernel_inception_distance(real, fake, seed=seed))  # mean, std
    if metric is Metric.PR:
        fake, real = feats[net]
        return _named(metric, *precision_recall(real, fake))  # precision, recall
    if metric is Metric.SWD:
        return sliced_wasserstein_distance(samples, reference.images, seed=seed)
    if metric is Metric.CONFIDENCE:
        if samples.shape[1] != 1:
            raise DataError(f"confidence uses the digits classifier: expected 1-channel samples, "
                            f"got {samples.shape[1]}")  # fmt: skip
        with torch.no_grad():
            logits = torch.cat([_digits_classifier()(samples[i : i + 500]) for i in range(0, len(samples), 500)])
        return _named(metric, classifier_confidence(logits))
    raise ValueError(f"expected a metric in {[m.value for m in Metric]}, got {metric!r}")  # pragma: no cover


# ------------------------------------------------------------------------- checkpoints
def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    n: int,
    metrics: Sequence[Metric],
    sample: SampleConfig | None = None,
    seed: int = 0,
    batch_size: int = 64,
    reference: str | None = None,
    split: Split = Split.TRAIN,
    inception_weights: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[EvalReport, Tensor]:
    """Sample n images from a checkpoint and score them; the reference defaults to the
    checkpoint's own training data at its resolution."""
    from dimdiff.generate import generate, load_model

    model = load_model(checkpoint, device=device)
    config = model.info.config
    sample = sample or config.sample
    channels, resolution = model.info.data_shape[0], model.info.data_shape[1]
    if reference is None:
        if config.data.name not in (DatasetName.DIGITS, DatasetName.PATCHES) and config.data.path is None:
            raise ConfigError("the checkpoint's data has no path: pass --reference")
        reference = config.data.name.value if config.data.path is None else config.data.path
    ref = load_reference(reference, resolution=resolution, channels=channels, split=split)
    start = time.perf_counter()
    images = generate(model, n, sample, seed=seed, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    scores = score_images(images, ref, metrics, inception_weights=inception_weights, seed=seed, cache_dir=cache_dir)
    extra = {"checkpoint": str(model.info.path), "step": model.info.step, "seed": seed,
             "sample": json.loads(json.dumps(sample.__dict__, default=lambda v: getattr(v, "value", str(v)))),
             "time_per_image_s": seconds / n}  # fmt: skip
    return EvalReport(scores, n, ref.key, extra), images
