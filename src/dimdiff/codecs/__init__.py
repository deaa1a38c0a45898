"""Codecs: the map between images and the space a diffusion process runs on (`base.Codec`).

A codec joins dimdiff by adding its module and one row to `CODECS` (keyed by `CodecKind`); the
trainer, samplers, evaluation and benchmarks only ever call the `Codec` protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from dimdiff.codecs.base import Codec
from dimdiff.codecs.pixel import PixelCodec

__all__ = ["CODECS", "Codec", "CodecKind", "PixelCodec"]


class CodecKind(str, enum.Enum):
    PIXEL = "pixel"  # identity: the process runs on the images


CODECS: dict[CodecKind, Callable[[], Codec]] = {
    CodecKind.PIXEL: PixelCodec,
}
