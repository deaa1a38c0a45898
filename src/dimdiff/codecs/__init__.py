"""Codecs: the map between images and the space a diffusion process runs on (`base.Codec`).

A codec joins dimdiff by adding its module, an enum member and one row to `CODECS`: the row maps
the kind to its options class (`base.CodecOptions`, the kind's own keys of ``[codec]``), which builds
the codec. The trainer, samplers, evaluation and benchmarks only ever call the `Codec` protocol.
"""

from __future__ import annotations

import enum
from typing import Any

from dimdiff.codecs.base import Codec, CodecOptions
from dimdiff.codecs.pixel import PixelCodec, PixelOptions
from dimdiff.codecs.quantized import OPQOptions, PQOptions, QuantizedCodec, RQOptions, VQOptions
from dimdiff.errors import find_kind

__all__ = ["CODECS", "Codec", "CodecKind", "CodecOptions", "OPQOptions", "PQOptions", "PixelCodec", "PixelOptions",
           "QuantizedCodec", "RQOptions", "VQOptions", "codec_kind"]  # fmt: skip


class CodecKind(str, enum.Enum):
    PIXEL = "pixel"  # identity: the process runs on the images
    VQ = "vq"  # one k-means codebook per patch
    PQ = "pq"  # product quantization: a codebook per part of the patch vector
    OPQ = "opq"  # PQ after a learned rotation
    RQ = "rq"  # residual quantization: stages that quantize what the previous ones left


CODECS: dict[Any, type] = {
    CodecKind.PIXEL: PixelOptions,
    CodecKind.VQ: VQOptions,
    CodecKind.PQ: PQOptions,
    CodecKind.OPQ: OPQOptions,
    CodecKind.RQ: RQOptions,
}


def codec_kind(value: Any) -> enum.Enum:
    """The registered codec kind named ``value`` (its enum member or its value)."""
    return find_kind(CODECS, value, "codec.kind")
