"""The identity codec: the process runs on the images themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["PixelCodec", "PixelOptions"]


@dataclass(frozen=True)
class PixelCodec:
    @property
    def needs_fit(self) -> bool:
        return False

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return image_shape

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z

    def fit(self, images: Sequence[Tensor] | Tensor, progress: Callable[[str], None] | None = None) -> PixelCodec:
        return self

    def state(self) -> dict[str, Tensor]:
        return {}

    def load_state(self, state: dict[str, Tensor]) -> PixelCodec:
        if state:
            raise ValueError(f"expected no codec state for the pixel codec, got tensors {sorted(state)[:5]} "
                             f"(a checkpoint of a model with another codec?)")  # fmt: skip
        return self


@dataclass(frozen=True)
class PixelOptions:
    """``codec.kind = pixel`` has no options."""

    def build(self) -> PixelCodec:
        return PixelCodec()
