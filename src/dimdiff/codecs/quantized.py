"""Patch codecs built from classic quantization (``codec.kind = vq | pq | opq | rq``): images cut into s_q x s_q
patches, each patch vector (length D = C s_q^2) quantized to M_q codes in [0, K_q) (`quantizer.Quantizer`),
the codes laid out as a grid (M_q, H / s_q, W / s_q).

    codes(x)       images (B, C, H, W) in [-1, 1]  ->  y (B, M_q, H / s_q, W / s_q), int64 in [0, K_q)
    images(y)      y  ->  the decoded patches folded back, clamped to [-1, 1]
    encode(x)      z = 2 y / (K_q - 1) - 1: the codes as a continuous latent in [-1, 1], what a process runs on
    decode(z)      y = clamp(round((z + 1)(K_q - 1) / 2), 0, K_q - 1), then images(y)

The codebooks are fitted with faiss (`fit_faiss`) on patches of the training images, then sorted to be
pseudo-ordinal (``codec.sort``, default on) so that the integer codes, read as numbers, vary smoothly.
Bits per pixel M_q b_q / s_q^2 with b_q = log2 K_q; compression against 8-bit pixels 8 C s_q^2 / (M_q b_q).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dimdiff.codecs import fit_faiss
from dimdiff.codecs.quantizer import Quantizer, Structure
from dimdiff.codecs.refiner import Refiner, fit_refiner
from dimdiff.errors import check_option

__all__ = ["QuantizedCodec", "VQOptions", "PQOptions", "OPQOptions", "RQOptions", "codes_to_unit", "unit_to_codes",
           "to_patches", "from_patches"]  # fmt: skip

Progress = Callable[[str], None]
STATE_KEYS = {"codebooks", "channels"}  # and "rotation" for OPQ


def to_patches(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, H / s_q, W / s_q, C s_q^2): each patch as a vector (channel, row, column order)."""
    b, c, h, w = x.shape
    s = patch_size
    return x.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5).reshape(b, h // s, w // s, c * s * s)


def from_patches(v: Tensor, channels: int, patch_size: int) -> Tensor:
    """The inverse of `to_patches`: (B, H / s_q, W / s_q, C s_q^2) -> (B, C, H, W)."""
    b, gh, gw, _ = v.shape
    s = patch_size
    return v.reshape(b, gh, gw, channels, s, s).permute(0, 3, 1, 4, 2, 5).reshape(b, channels, gh * s, gw * s)


def codes_to_unit(codes: Tensor, codebook_size: int) -> Tensor:
    """z = 2 y / (K_q - 1) - 1 in [-1, 1] (float32)."""
    return codes.float() * (2.0 / (codebook_size - 1)) - 1.0


def unit_to_codes(z: Tensor, codebook_size: int) -> Tensor:
    """y = clamp(round((z + 1)(K_q - 1) / 2), 0, K_q - 1) (int64); the exact inverse of `codes_to_unit`."""
    if not torch.isfinite(z).all():
        raise ValueError(f"expected finite latents to decode, got {int((~torch.isfinite(z)).sum())} NaN or inf "
                         f"values of {z.numel()}")  # fmt: skip
    return torch.round((z.float() + 1.0) * ((codebook_size - 1) / 2.0)).clamp(0, codebook_size - 1).long()


@dataclass(frozen=True)
class QuantizedCodec:
    options: _QuantizedOptions  # the kind and its s_q, M_q, K_q, ...
    quantizer: Quantizer | None = None  # None until fitted
    channels: int | None = None  # C of the images it was fitted on
    refiner: Refiner | None = None  # applied after decoding where options.refiner_steps > 0 (fitted with the codebooks)

    @property
    def needs_fit(self) -> bool:
        return self.quantizer is None

    @property
    def bits_per_pixel(self) -> float:
        """M_q b_q / s_q^2: code bits per image pixel (all channels together)."""
        o = self.options
        return o.num_codebooks * math.log2(o.codebook_size) / o.patch_size**2

    def compression_ratio(self, channels: int, bits_per_value: int = 8) -> float:
        """Raw image bits over code bits: bits_per_value C s_q^2 / (M_q b_q) (24-bit RGB: channels 3, 8 bits)."""
        return bits_per_value * channels / self.bits_per_pixel

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = image_shape
        s = self.options.patch_size
        if h % s or w % s:
            raise ValueError(f"expected image height and width divisible by codec.patch_size = {s}, got {h} x {w}")
        return (self.options.num_codebooks, h // s, w // s)

    def codes(self, x: Tensor) -> Tensor:
        """y (B, M_q, H / s_q, W / s_q), int64 in [0, K_q), of images x (B, C, H, W)."""
        quantizer = self._fitted()
        self._check_images(x)
        v = to_patches(x, self.options.patch_size)  # (B, gh, gw, D)
        y = quantizer.encode(v.reshape(-1, v.shape[-1]))  # (B gh gw, M_q)
        return y.reshape(*v.shape[:3], -1).permute(0, 3, 1, 2).contiguous()

    def images(self, codes: Tensor, refine: bool = True) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] of codes y (B, M_q, H / s_q, W / s_q); through the refiner if the codec
        has one and ``refine``."""
        quantizer = self._fitted()
        m, k = self.options.num_codebooks, self.options.codebook_size
        if codes.ndim != 4 or codes.shape[1] != m:
            raise ValueError(f"expected codes of shape (B, {m}, H', W'), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.numel() and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(f"expected integer codes in [0, {k}), got {codes.dtype} in "
                             f"[{codes.min().item()}, {codes.max().item()}]")  # fmt: skip
        b, _, gh, gw = codes.shape
        v = quantizer.decode(codes.long().permute(0, 2, 3, 1).reshape(-1, m))  # (B gh gw, D)
        x_hat = from_patches(v.reshape(b, gh, gw, -1), self.channels, self.options.patch_size)  # (B, C, H, W)
        if refine and self.refiner is not None:
            with torch.no_grad():
                x_hat = self.refiner.to(x_hat.device)(x_hat.clamp(-1.0, 1.0))
        return x_hat.clamp(-1.0, 1.0)

    def images_from_weights(self, weights: Tensor) -> Tensor:
        """Images (B, C, H, W) whose patches mix the codebooks' words with ``weights`` (B, M_q, K_q, H / s_q,
        W / s_q) (one-hot: `images` of the codes; soft: differentiable, e.g. a Gumbel-softmax); unclamped."""
        quantizer = self._fitted()
        b, m, k, gh, gw = weights.shape
        v = quantizer.decode_weights(weights.permute(0, 3, 4, 1, 2).reshape(-1, m, k))  # (B gh gw, D)
        return from_patches(v.reshape(b, gh, gw, -1), self.channels, self.options.patch_size)

    def index_error_mse(self, x: Tensor) -> float:
        """Mean squared image error caused by an index error of one: every code of one codebook moved to its
        neighbour (y + 1, or y - 1 at K_q - 1), averaged over the M_q codebooks. Sorting should shrink it."""
        y = self.codes(x)
        reference = self.images(y, refine=False)
        errors = []
        for m in range(y.shape[1]):
            moved = y.clone()
            moved[:, m] += torch.where(y[:, m] < self.options.codebook_size - 1, 1, -1)
            errors.append((self.images(moved, refine=False) - reference).double().pow(2).mean())
        return float(torch.stack(errors).mean())

    def encode(self, x: Tensor) -> Tensor:
        return codes_to_unit(self.codes(x), self.options.codebook_size)

    def decode(self, z: Tensor) -> Tensor:
        return self.images(unit_to_codes(z, self.options.codebook_size))

    def fit(self, images: Sequence[Tensor] | Tensor, progress: Progress | None = None) -> QuantizedCodec:
        """The codec with codebooks fitted by k-means (faiss) on the patches of at most ``options.fit_images``
        of ``images`` (drawn with ``options.seed``), sorted when ``options.sort``."""
        o, say = self.options, progress or (lambda _: None)
        n = len(images)
        if n == 0:
            raise ValueError("expected training images to fit the codec on, got none")
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(o.seed))[: o.fit_images].sort().values
        x = torch.stack([images[int(i)] for i in pick]).float()
        self.latent_shape(tuple(x.shape[1:]))  # divisible by s_q
        v = to_patches(x, o.patch_size).reshape(-1, x.shape[1] * o.patch_size**2).contiguous()
        if v.shape[1] % o.num_codebooks and o.structure is Structure.PRODUCT:
            raise ValueError(f"expected the patch length C s_q^2 = {v.shape[1]} divisible by codec.num_codebooks "
                             f"= {o.num_codebooks} (each codebook quantizes an equal part)")  # fmt: skip
        say(f"fitting the {o.kind_name} codec (s_q = {o.patch_size}, M_q = {o.num_codebooks}, K_q = "
            f"{o.codebook_size}) on {len(v)} patches of {len(x)} images")  # fmt: skip
        start = time.perf_counter()
        quantizer = o.fit_function(v.numpy(), o.num_codebooks, o.codebook_size, o.seed, o.iterations,
                                   o.beam_size, say)  # fmt: skip
        if o.sort:
            quantizer, _ = quantizer.sorted()
        say(f"fitted the {o.kind_name} codec in {time.perf_counter() - start:.1f} s")
        codec = QuantizedCodec(o, quantizer, x.shape[1])
        if o.refiner_steps == 0:
            return codec
        say(f"fitting the refiner ({o.refiner_depth} convolutions of width {o.refiner_width}, {o.refiner_steps} "
            f"steps) on (decoded, clean) pairs of the same images")  # fmt: skip
        with torch.no_grad():
            decoded = codec.images(codec.codes(x))
        refiner = fit_refiner(decoded, x, width=o.refiner_width, depth=o.refiner_depth, steps=o.refiner_steps,
                              seed=o.seed, progress=say)  # fmt: skip
        return QuantizedCodec(o, quantizer, x.shape[1], refiner)

    def state(self) -> dict[str, Tensor]:
        q = self._fitted()
        state = {"codebooks": q.codebooks.float().contiguous(), "channels": torch.tensor([self.channels])}
        if self.refiner is not None:
            state |= {f"refiner.{k}": v.detach().float().contiguous() for k, v in self.refiner.state_dict().items()}
        return state | ({"rotation": q.rotation.float().contiguous()} if q.rotation is not None else {})

    def load_state(self, state: dict[str, Tensor]) -> QuantizedCodec:
        o = self.options
        expected = STATE_KEYS | ({"rotation"} if o.rotated else set())
        refiner_state = {k.removeprefix("refiner."): v for k, v in state.items() if k.startswith("refiner.")}
        if bool(refiner_state) != (o.refiner_steps > 0):
            raise ValueError(f"expected {'a' if o.refiner_steps else 'no'} refiner in the {o.kind_name} codec state "
                             f"(codec.refiner_steps = {o.refiner_steps}), got {len(refiner_state)} refiner tensors")
        state = {k: v for k, v in state.items() if not k.startswith("refiner.")}
        if set(state) != expected:
            raise ValueError(f"expected {o.kind_name} codec state with tensors {sorted(expected)}, got {sorted(state)} "
                             f"(a checkpoint of a model with another codec?)")  # fmt: skip
        channels = int(state["channels"].reshape(-1)[0])
        d = channels * o.patch_size**2
        m, k = o.num_codebooks, o.codebook_size
        shape = (m, k, d // m) if o.structure is Structure.PRODUCT else (m, k, d)
        books = state["codebooks"]
        if tuple(books.shape) != shape or not torch.isfinite(books).all():
            raise ValueError(f"expected finite {o.kind_name} codebooks of shape {shape} (codec.num_codebooks = {m}, "
                             f"codec.codebook_size = {k}, patches of {channels} x {o.patch_size} x {o.patch_size}), "
                             f"got {tuple(books.shape)}")  # fmt: skip
        rotation = state.get("rotation")
        if rotation is not None and (tuple(rotation.shape) != (d, d) or not torch.allclose(
                rotation.double() @ rotation.double().T, torch.eye(d, dtype=torch.float64), atol=1e-4)):  # fmt: skip
            raise ValueError(f"expected an orthonormal {d} x {d} OPQ rotation, got a {tuple(rotation.shape)} tensor "
                             f"that is not")  # fmt: skip
        quantizer = Quantizer(o.structure, books.float(), rotation, o.beam_size)
        return QuantizedCodec(o, quantizer, channels, self._load_refiner(refiner_state, channels))

    def _load_refiner(self, state: dict[str, Tensor], channels: int) -> Refiner | None:
        if not state:
            return None
        o = self.options
        refiner = Refiner(channels, o.refiner_width, o.refiner_depth)
        try:
            refiner.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"expected refiner tensors for codec.refiner_width = {o.refiner_width}, "
                             f"codec.refiner_depth = {o.refiner_depth} and {channels} channels: {e}") from e
        return refiner.eval().requires_grad_(False)

    def _fitted(self) -> Quantizer:
        if self.quantizer is None:
            raise ValueError(f"expected a fitted {self.options.kind_name} codec, got one whose codebooks are not "
                             f"fitted yet (fit it on training images, or load a checkpoint's codec state)")  # fmt: skip
        return self.quantizer

    def _check_images(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W) for this codec, "
                             f"got {tuple(x.shape)}")  # fmt: skip
        self.latent_shape(tuple(x.shape[1:]))


@dataclass(frozen=True)
class _QuantizedOptions:
    """The keys of ``[codec]`` shared by the quantized kinds."""

    patch_size: int = 4  # s_q: side of the square patches
    num_codebooks: int = 4  # M_q: sub-quantizers (PQ, OPQ) or stages (RQ); VQ has 1
    codebook_size: int = 256  # K_q words per codebook, a power of two (b_q = log2 K_q bits per code)
    sort: bool = True  # pseudo-ordinal codebooks (sorted along their first principal direction)
    seed: int = 0  # which training images are used, and k-means' initialisation
    iterations: int = 25  # k-means iterations per codebook
    fit_images: int = 4096  # at most this many training images give the patches the codebooks are fitted on
    refiner_steps: int = 0  # > 0: fit a refiner (a small CNN against blocking artefacts) for this many steps
    refiner_width: int = 32  # channels of the refiner's convolutions
    refiner_depth: int = 4  # 3 x 3 convolutions in the refiner (>= 2)

    structure = Structure.PRODUCT
    rotated = False
    beam_size = 1
    kind_name = ""
    fit_function = staticmethod(fit_faiss.fit_pq)

    def __post_init__(self) -> None:
        check_option(self.patch_size >= 1, "codec.patch_size", "an integer >= 1", self.patch_size)
        check_option(self.num_codebooks >= 1, "codec.num_codebooks", "an integer >= 1", self.num_codebooks)
        k = self.codebook_size
        check_option(2 <= k <= 65536 and k & (k - 1) == 0, "codec.codebook_size", "a power of two in [2, 65536]", k)
        check_option(self.iterations >= 1, "codec.iterations", "an integer >= 1", self.iterations)
        check_option(self.fit_images >= 1, "codec.fit_images", "an integer >= 1", self.fit_images)
        check_option(self.refiner_steps >= 0, "codec.refiner_steps", "an integer >= 0 (0 = no refiner)",
                     self.refiner_steps)  # fmt: skip
        check_option(self.refiner_width >= 1, "codec.refiner_width", "an integer >= 1", self.refiner_width)
        check_option(self.refiner_depth >= 2, "codec.refiner_depth", "an integer >= 2", self.refiner_depth)

    def build(self) -> QuantizedCodec:
        return QuantizedCodec(self)


@dataclass(frozen=True)
class VQOptions(_QuantizedOptions):
    """``codec.kind = vq``: one k-means codebook over the whole patch vector."""

    num_codebooks: int = 1  # VQ has exactly one codebook
    kind_name = "vq"
    fit_function = staticmethod(fit_faiss.fit_vq)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_option(self.num_codebooks == 1, "codec.num_codebooks", "1 for vq (use pq or rq for several)",
                     self.num_codebooks)  # fmt: skip


@dataclass(frozen=True)
class PQOptions(_QuantizedOptions):
    """``codec.kind = pq``: M_q codebooks, one per equal part of the patch vector."""

    kind_name = "pq"
    fit_function = staticmethod(fit_faiss.fit_pq)


@dataclass(frozen=True)
class OPQOptions(_QuantizedOptions):
    """``codec.kind = opq``: a learned orthonormal rotation of the patch vector, then PQ."""

    kind_name = "opq"
    rotated = True
    fit_function = staticmethod(fit_faiss.fit_opq)


@dataclass(frozen=True)
class RQOptions(_QuantizedOptions):
    """``codec.kind = rq``: M_q stages, each quantizing the residual the stages before it left."""

    beam_size: int = 1  # partial code sequences kept per stage, in training and encoding (1 = greedy; faiss: 5)
    structure = Structure.RESIDUAL
    kind_name = "rq"
    fit_function = staticmethod(fit_faiss.fit_rq)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_option(self.beam_size >= 1, "codec.beam_size", "an integer >= 1", self.beam_size)
