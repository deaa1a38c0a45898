"""Train the digits classifier behind FD-digits and write its weights as package data.

    python scripts/train_digits_classifier.py            # seed 0, writes the committed file

Deterministic: one CPU thread, seeded generators, deterministic algorithms, so the same
command gives the same file on the same torch build. It trains on the fixed train split
(1,497 images, 16 px) with light augmentation so that features are robust to generated
samples: sub-pixel shifts up to 2 px, small rotations and scales, blur or a round trip through
8 px, contrast/offset jitter and Gaussian noise. It reports held-out accuracy on the 300-image
test split (at 16 px, and at 8 and 32 px through the classifier's own resize) and stores it in
the safetensors metadata with the seed and the command. Takes well under a minute.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from dimdiff.data import DatasetName, Split, load_dataset
from dimdiff.metrics.digits_classifier import (
    DIGITS_CLASSIFIER_FORMAT,
    DIGITS_CLASSIFIER_WEIGHTS,
    DigitsClassifier,
    DigitsClassifierConfig,
    accuracy,
    config_metadata,
    predict_logits,
)

MIN_TEST_ACCURACY = 0.97


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and augmentation")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, default=DIGITS_CLASSIFIER_WEIGHTS, help="safetensors file to write")
    return parser.parse_args(argv)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image (N, 1, H, W) with its own Gaussian of std `sigma` (N,) pixels (3x3 taps)."""
    offsets = torch.tensor([-1.0, 0.0, 1.0])
    taps = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))  # (N, 3)
    taps = taps / taps.sum(dim=1, keepdim=True)
    kernel = (taps[:, :, None] * taps[:, None, :]).unsqueeze(1)                            # (N, 1, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate").transpose(0, 1)                     # (1, N, H+2, W+2)
    return F.conv2d(padded, kernel, groups=x.shape[0]).transpose(0, 1)                    # (N, 1, H, W)


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random affine jitter, blur or 8 px round trip, contrast/offset and noise on (N, 1, 16, 16)."""
    n, size = x.shape[0], x.shape[-1]

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle, scale = uniform(-0.2, 0.2), uniform(0.9, 1.1)                # radians, zoom
    shift = uniform(-2.0, 2.0), uniform(-2.0, 2.0)                      # pixels
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([
        torch.stack([cos, -sin, shift[0] * 2 / size], dim=1),
        torch.stack([sin, cos, shift[1] * 2 / size], dim=1),
    ], dim=1)                                                                                  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1  # -1 outside
    kind = torch.rand(n, generator=generator)
    blurred = gaussian_blur(x, uniform(0.3, 0.9))
    coarse = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True), size=(size, size),
                           mode="bilinear", align_corners=False)
    x = torch.where((kind < 0.25).view(n, 1, 1, 1), blurred, x)
    x = torch.where(((kind >= 0.25) & (kind < 0.45)).view(n, 1, 1, 1), coarse, x)
    contrast, offset = uniform(0.8, 1.1).view(n, 1, 1, 1), uniform(-0.1, 0.1).view(n, 1, 1, 1)
    noise_std = uniform(0.0, 0.15).view(n, 1, 1, 1)
    x = (x + 1) * contrast - 1 + offset + noise_std * torch.randn(x.shape, generator=generator)
    return x.clamp(-1.0, 1.0)


def train(args: argparse.Namespace) -> tuple[DigitsClassifier, dict[str, float]]:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_set = load_dataset(DatasetName.DIGITS, resolution=16, split=Split.TRAIN)
    images, labels = train_set.tensor, train_set.labels                   # (1497, 1, 16, 16), (1497,)
    model = DigitsClassifier(DigitsClassifierConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(images.shape[0] / args.batch_size)
    total_steps = args.epochs * steps_per_epoch

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * step / total_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(images.shape[0], generator=generator)
        total = 0.0
        for batch in order.split(args.batch_size):
            logits = model(augment(images[batch], generator))
            loss = F.cross_entropy(logits, labels[batch], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * batch.numel()
        if (epoch + 1) % 10 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / images.shape[0]:.4f}", flush=True)
    model.eval()
    return model, evaluate(model)


def evaluate(model: DigitsClassifier) -> dict[str, float]:
    """Held-out accuracy on the test split at 16 px (the reported number) and at 8 / 32 px."""
    result = {}
    for resolution in (16, 8, 32):
        test_set = load_dataset(DatasetName.DIGITS, resolution=resolution, split=Split.TEST)
        result[f"test_accuracy_{resolution}px"] = accuracy(predict_logits(model, test_set.tensor), test_set.labels)
    return result


def save(model: DigitsClassifier, scores: dict[str, float], args: argparse.Namespace, argv: list[str]) -> None:
    """Write the weights atomically (temporary file in the same folder, then rename)."""
    metadata = {
        "format": DIGITS_CLASSIFIER_FORMAT,
        "config": config_metadata(model.config),
        "test_accuracy": f"{scores['test_accuracy_16px']:.4f}",
        **{key: f"{value:.4f}" for key, value in scores.items()},
        "seed": str(args.seed),
        "epochs": str(args.epochs),
        "num_parameters": str(sum(p.numel() for p in model.parameters())),
        "command": shlex.join(["python", "scripts/train_digits_classifier.py", *argv]),
        "torch_version": torch.__version__,
    }
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; package data must be world-readable
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    model, scores = train(args)
    seconds = time.perf_counter() - start
    print("  ".join(f"{key} {value:.4f}" for key, value in scores.items()))
    if scores["test_accuracy_16px"] < MIN_TEST_ACCURACY:
        print(f"test accuracy {scores['test_accuracy_16px']:.4f} is below the required {MIN_TEST_ACCURACY}; "
              f"nothing written", file=sys.stderr)
        return 1
    save(model, scores, args, sys.argv[1:] if argv is None else argv)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
