"""The contract of a codec: the map between images and the state space a diffusion process runs on.

    z0 = encode(x0)    images (B, C, H, W) in [-1, 1]  ->  latents (B, *latent_shape((C, H, W)))
    x0 = decode(z0)    latents -> images in [-1, 1]

The trainer encodes each batch after augmentation; every sampler works on latents and the images
come from ``decode`` (sample grids, ``dimdiff sample``, evaluation). A codec with learned parts
is fitted once on the training images (``fit``) before training starts; what it learned is
``state()``, a flat dict of tensors saved with every checkpoint (``codec.safetensors``) and given
back by ``load_state``. The identity pixel codec (`pixel.PixelCodec`) is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from torch import Tensor

__all__ = ["Codec", "CodecOptions"]


class Codec(Protocol):
    @property
    def needs_fit(self) -> bool:
        """Whether ``fit`` must run on training data before the codec can encode."""
        ...

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (C', H', W') of the latent of one image of shape (C, H, W)."""
        ...

    def encode(self, x: Tensor) -> Tensor:
        """Latents (B, C', H', W') of images x (B, C, H, W) in [-1, 1]."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] of latents z (B, C', H', W')."""
        ...

    def fit(self, images: Sequence[Tensor] | Tensor, progress: Callable[[str], None] | None = None) -> Codec:
        """A codec fitted to training images ((N, C, H, W) or a sequence of (C, H, W)); ``progress`` is told
        what the fit is doing, in lines for a person (the codec itself prints nothing)."""
        ...

    def state(self) -> dict[str, Tensor]:
        """What ``fit`` learned, as named tensors (empty when there is nothing)."""
        ...

    def load_state(self, state: dict[str, Tensor]) -> Codec:
        """A codec with a saved ``state()`` restored; refuses a state of another codec."""
        ...


class CodecOptions(Protocol):
    """The options of one codec kind: a frozen dataclass whose fields are the kind's own keys of the
    ``[codec]`` section (checked in its ``__post_init__``, ConfigErrors naming ``codec.<key>``)."""

    def build(self) -> Codec:
        """A codec with these options (not yet fitted where it learns)."""
        ...
