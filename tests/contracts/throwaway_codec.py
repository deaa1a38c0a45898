"""A throwaway learning codec that exists only in the tests: per-channel standardisation with latents at
1/factor resolution, registered as ``codec.kind = "standardise"`` (with an option of its own, ``factor``)
by a row in `codecs.CODECS`. It stands in for a learned codec (as a quantised patch codec will) in the
codec seam test (train -> checkpoint -> sample -> resume) and in the codec contract suite."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dimdiff.errors import check_option


@dataclass(frozen=True)
class Standardise:
    """z = (x - mean_c) / std_c per channel, mean and std learned by ``fit``; latents at 1/factor resolution
    (average pooling) so that the process really runs on another shape than the images."""

    factor: int = 2
    mean: Tensor | None = None
    std: Tensor | None = None
    fits: list = field(default_factory=list)  # the images each fit saw (for the test)

    @property
    def needs_fit(self) -> bool:
        return self.mean is None

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = image_shape
        return (c, h // self.factor, w // self.factor)

    def encode(self, x: Tensor) -> Tensor:
        assert self.mean is not None, "encode before fit"
        z = torch.nn.functional.avg_pool2d(x, self.factor)
        return (z - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)

    def decode(self, z: Tensor) -> Tensor:
        x = z * self.std.reshape(1, -1, 1, 1) + self.mean.reshape(1, -1, 1, 1)
        return torch.nn.functional.interpolate(x, scale_factor=float(self.factor), mode="nearest").clamp(-1, 1)

    def fit(self, images: Sequence[Tensor] | Tensor, progress: Callable[[str], None] | None = None) -> Standardise:
        x = torch.stack(list(images)) if not isinstance(images, Tensor) else images
        self.fits.append(len(x))
        return Standardise(self.factor, x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)), self.fits)

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, Tensor]) -> Standardise:
        if set(state) != {"mean", "std"}:
            raise ValueError(f"expected codec state with mean and std, got {sorted(state)}")
        return Standardise(self.factor, state["mean"], state["std"], self.fits)


class SeamCodecKind(str, enum.Enum):
    STANDARDISE = "standardise"


FITS: list = []  # the images each fit saw, over a test


@dataclass(frozen=True)
class StandardiseOptions:
    factor: int = 2  # codec.factor: latents at 1/factor of the image resolution

    def __post_init__(self) -> None:
        check_option(self.factor in (1, 2, 4), "codec.factor", "1, 2 or 4", self.factor)

    def build(self) -> Standardise:
        return Standardise(self.factor, fits=FITS)
