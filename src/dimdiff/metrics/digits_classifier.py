"""A small CNN classifier for the `digits` dataset; its penultimate layer gives "FD-digits" features.

Trained by `scripts/train_digits_classifier.py` on the fixed train split (1,497 images) with
light augmentation (shifts, small rotations and scales, blur, resolution round trips, noise,
contrast), so that its features stay meaningful on generated samples. The weights ship as
package data: `dimdiff/metrics/weights/digits_classifier.safetensors`, with the training
command, seed and held-out accuracy in the file's metadata.

Inputs: (N, 1 or 3, R, R) floats in [-1, 1] at any resolution R (8, 16, 32, ...). RGB is
turned into grey with the same luma weights the datasets use, and every image is resized to
the working resolution of 16 px with the datasets' own resize (antialiased bilinear when
shrinking, bilinear when enlarging), so a 16 px digits image is seen exactly as stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from dimdiff.data.transforms import resize_square, rgb_to_grey

from .inception import FeatureNetworkError

__all__ = [
    "DIGITS_CLASSIFIER_FORMAT", "DIGITS_CLASSIFIER_WEIGHTS", "DigitsClassifier", "DigitsClassifierConfig",
    "accuracy", "classifier_confidence", "load_digits_classifier", "predict_logits", "predicted_label_histogram",
    "read_metadata",
]  # fmt: skip

DIGITS_CLASSIFIER_FORMAT = "dimdiff-digits-classifier/1"
DIGITS_CLASSIFIER_WEIGHTS = Path(__file__).resolve().parent / "weights" / "digits_classifier.safetensors"
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitsClassifierConfig:
    resolution: int = 16   # working resolution: every input is resized to it
    width: int = 32        # channels of the first stage; the second has 2 * width
    feature_dim: int = 64  # width of the penultimate layer (the FD-digits features), <= 2 * width
    dropout: float = 0.2   # dropout on the features while training


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsClassifier(nn.Module):
    """Two conv stages (16 -> 8 -> 4 px), global average pool, a hidden layer, 10 logits."""

    def __init__(self, config: DigitsClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DigitsClassifierConfig()
        w = config.width
        self.stage1 = nn.Sequential(conv_bn_relu(1, w), conv_bn_relu(w, w))
        self.stage2 = nn.Sequential(conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 2 * w))
        self.hidden = nn.Linear(2 * w, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def prepare(self, x: Tensor) -> Tensor:
        """Check (N, 1 or 3, R, R) floats; grey, resized to the working resolution."""
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
            raise FeatureNetworkError(f"expected square images (N, 1 or 3, R, R), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise FeatureNetworkError(f"expected float images in [-1, 1], got dtype {x.dtype}")
        x = rgb_to_grey(x) if x.shape[1] == 3 else x                                # (N, 1, R, R)
        return resize_square(x, self.config.resolution)                            # (N, 1, 16, 16)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (N, feature_dim), the input of FD-digits.

        They are the hidden layer's pre-activations, an affine map of the 2 * width pooled conv
        features: before the ReLU no unit is constantly zero, so with feature_dim <= 2 * width
        the covariance that FD fits has full rank, and the features are closer to Gaussian.
        """
        x = self.prepare(x)                                                         # (N, 1, 16, 16)
        x = F.max_pool2d(self.stage1(x), 2)                                         # (N, w, 8, 8)
        x = F.max_pool2d(self.stage2(x), 2)                                         # (N, 2w, 4, 4)
        return self.hidden(x.mean(dim=(2, 3)))                                      # (N, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(F.relu(self.features(x))))                    # (N, 10) logits


def load_digits_classifier(path: str | os.PathLike[str] | None = None) -> DigitsClassifier:
    """The committed classifier (or the one at `path`), in eval mode and without gradients."""
    path = Path(path) if path is not None else DIGITS_CLASSIFIER_WEIGHTS
    if not path.is_file():
        raise FeatureNetworkError(
            f"digits classifier weights {path} do not exist; the package ships them as "
            f"dimdiff/metrics/weights/{DIGITS_CLASSIFIER_WEIGHTS.name}, or rebuild them with "
            f"`python scripts/train_digits_classifier.py`"
        )
    metadata = read_metadata(path)
    if metadata.get("format") != DIGITS_CLASSIFIER_FORMAT:
        raise FeatureNetworkError(
            f"expected format {DIGITS_CLASSIFIER_FORMAT!r} in {path}, got {metadata.get('format')!r}"
        )
    config = DigitsClassifierConfig(**json.loads(metadata["config"]))
    model = DigitsClassifier(config)
    try:
        model.load_state_dict(load_file(path), strict=True)
    except RuntimeError as error:
        raise FeatureNetworkError(f"digits classifier weights {path} do not fit: {error}") from error
    return model.eval().requires_grad_(False)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of a weights file (format, config, accuracy, seed, command)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def config_metadata(config: DigitsClassifierConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


@torch.no_grad()
def predict_logits(model: DigitsClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Logits (N, 10) of a batch of images, evaluated in chunks without gradients."""
    return torch.cat([model(chunk) for chunk in images.split(batch_size)])


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected one label per row, got {labels.shape[0]} labels for {logits.shape[0]} rows")
    return (logits.argmax(dim=1) == labels).double().mean().item()


def classifier_confidence(logits: Tensor) -> float:
    """Mean max-softmax probability: near 1 when samples look like clear digits."""
    return logits.double().softmax(dim=1).amax(dim=1).mean().item()


def predicted_label_histogram(logits: Tensor) -> Tensor:
    """Fraction of samples predicted as each class, (num_classes,) float64 summing to 1.

    Far from uniform (0.1 each on `digits`) means the samples miss or over-produce classes.
    """
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
    return counts.double() / max(logits.shape[0], 1)
