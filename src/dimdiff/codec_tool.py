"""``dimdiff codec``: fit a quantized patch codec on a dataset, score it, turn images into codes and back, and
show what it does. Importable: every subcommand is a function here.

    dimdiff codec fit --config configs/digits32_latent_pq.toml [section.key=value ...] --out codec.safetensors
    dimdiff codec eval --codec codec.safetensors --images digits [--split test] [--n 256] [--out eval.json]
    dimdiff codec encode --codec codec.safetensors --images FOLDER --out codes.npz
    dimdiff codec decode --codec codec.safetensors --codes codes.npz --out FOLDER
    dimdiff codec show --codec codec.safetensors --images digits --out show.png

A codec file is safetensors: the codec's state (codebooks, and OPQ's rotation) with its ``[codec]`` section
and the image shape in the metadata. ``--codec`` also takes a checkpoint or run folder of a latent model,
whose codec is then used. Images (``--images``) are "digits", "patches", an image folder, a .npz or CIFAR-10
batches, read at ``--resolution`` (default: the codec's training resolution) and ``--channels``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from dimdiff.checkpoint_files import CODEC_FILE, CheckpointError
from dimdiff.codecs import QuantizedCodec
from dimdiff.config import CodecConfig, Config, ConfigError, config_from_dict, config_to_dict, load_config
from dimdiff.data import DataError, Split

__all__ = ["CodecFile", "add_codec_parser", "codec_report", "fit_codec", "load_codec", "run_codec", "save_codec",
           "show_codec"]  # fmt: skip

FORMAT = "dimdiff-codec/1"


@dataclass(frozen=True)
class CodecFile:
    codec: QuantizedCodec  # fitted
    section: CodecConfig  # its [codec] section
    image_shape: tuple[int, int, int]  # (C, H, W) of the images it was fitted on


def fit_codec(config: Config, progress: Callable[[str], None] | None = print) -> CodecFile:
    """The configured ``[codec]`` fitted on the configured training data (``[data]``)."""
    from dimdiff.build import build_codec
    from dimdiff.data.configured import training_data

    codec = build_codec(config.codec)
    if not isinstance(codec, QuantizedCodec):
        raise ConfigError(f"codec.kind: expected a quantized codec (vq, pq, opq, rq) to fit, got "
                          f"{config.codec.kind.value}")  # fmt: skip
    dataset = training_data(config)
    first = dataset[0]
    return CodecFile(codec.fit(dataset, progress=progress), config.codec, tuple(first.shape))


def save_codec(path: str | Path, fitted: CodecFile) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"--out: expected a path ending in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "codec": json.dumps(_section_dict(fitted.section)),
                "image_shape": json.dumps(list(fitted.image_shape))}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    save_file(fitted.codec.state(), str(tmp), metadata=metadata)
    tmp.replace(path)  # never a half-written codec file
    return path


def load_codec(spec: str | Path) -> CodecFile:
    """A codec file written by `save_codec`, or the codec of a checkpoint (or run) folder."""
    from dimdiff.build import build_codec

    path = Path(spec)
    if path.is_dir():
        from dimdiff.checkpoint import load_codec_state, read_checkpoint_info

        info = read_checkpoint_info(path)
        codec = build_codec(info.config.codec, load_codec_state(info.path), str(info.path / CODEC_FILE))
        if not isinstance(codec, QuantizedCodec):
            raise CheckpointError(f"{info.path}: expected a model with a quantized codec, got codec.kind = "
                                  f"{info.config.codec.kind.value}")  # fmt: skip
        return CodecFile(codec, info.config.codec, info.data_shape)
    if not path.is_file():
        raise DataError(f"--codec {path}: expected a codec .safetensors file or a checkpoint folder; it does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: expected a dimdiff codec file (safetensors), cannot read it: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected a codec file of format {FORMAT}, got {meta.get('format')!r}")
    section = config_from_dict({"codec": json.loads(meta["codec"])}).codec
    codec = build_codec(section, state, str(path))
    return CodecFile(codec, section, tuple(json.loads(meta["image_shape"])))


def codec_report(fitted: CodecFile, images: Tensor, batch_size: int = 256) -> dict[str, Any]:
    """PSNR and SSIM (means over images), bits per pixel, compression ratio, and the MSE an index error of one
    causes with the codec's codebooks and with the same words in a random order (what sorting buys)."""
    from dimdiff.metrics import psnr, ssim

    codec = fitted.codec
    decoded = torch.cat([codec.decode(codec.encode(x)) for x in images.split(batch_size)])
    window = min(11, (min(images.shape[-2:]) - 1) // 2 * 2 + 1)  # SSIM's 11 taps, fewer on tiny images
    shuffled = shuffled_codec(codec)
    sample = images[:batch_size]
    unrefined = {}
    if codec.refiner is not None:
        raw = torch.cat([codec.images(codec.codes(x), refine=False) for x in images.split(batch_size)])
        unrefined = {"psnr_db_unrefined": float(psnr(raw, images).mean()),
                     "ssim_unrefined": float(ssim(raw, images, window=window).mean())}  # fmt: skip
    return {
        "codec": codec.options.kind_name, "patch_size": codec.options.patch_size,
        "num_codebooks": codec.options.num_codebooks, "codebook_size": codec.options.codebook_size,
        "images": len(images), "image_shape": list(images.shape[1:]),
        "psnr_db": float(psnr(decoded, images).mean()), "ssim": float(ssim(decoded, images, window=window).mean()),
        "bits_per_pixel": codec.bits_per_pixel, "compression_ratio": codec.compression_ratio(images.shape[1]),
        **unrefined, "index_error_mse": codec.index_error_mse(sample),
        "index_error_mse_unordered": shuffled.index_error_mse(sample),
    }  # fmt: skip


def shuffled_codec(codec: QuantizedCodec, seed: int = 0) -> QuantizedCodec:
    """The codec with every codebook's words in a seeded random order: the arbitrary order k-means leaves."""
    gen = torch.Generator().manual_seed(seed)
    q = codec.quantizer
    books = torch.stack([book[torch.randperm(len(book), generator=gen)] for book in q.codebooks])
    return dataclasses.replace(codec, quantizer=dataclasses.replace(q, codebooks=books))


def show_codec(fitted: CodecFile, images: Tensor, out: str | Path) -> Path:
    """A PNG of four rows: the images, their reconstructions, and the reconstructions with every code of the
    first codebook moved by one index, with the pseudo-ordinal codebooks and with the words in random order."""
    from dimdiff.images import save_grid

    codec = fitted.codec
    rows = [images, codec.decode(codec.encode(images))]
    for variant in (codec, shuffled_codec(codec)):
        y = variant.codes(images)
        y[:, 0] += torch.where(y[:, 0] < codec.options.codebook_size - 1, 1, -1)
        rows.append(variant.images(y))
    return save_grid(out, torch.cat(rows), ncols=len(images))


def encode_to_npz(fitted: CodecFile, images: Tensor, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out: expected a path ending in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    codes = fitted.codec.codes(images).numpy()
    dtype = np.uint8 if fitted.codec.options.codebook_size <= 256 else np.uint16
    np.savez_compressed(out, codes=codes.astype(dtype), codebook_size=fitted.codec.options.codebook_size)
    return out


def decode_npz(fitted: CodecFile, codes_file: str | Path) -> Tensor:
    path = Path(codes_file)
    try:
        with np.load(path) as f:
            codes, k = f["codes"], int(f["codebook_size"])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"--codes {path}: expected a .npz written by `dimdiff codec encode` (codes, codebook_size), "
                        f"cannot read it: {e}") from e  # fmt: skip
    if k != fitted.codec.options.codebook_size:
        raise DataError(f"--codes {path}: expected codes of a codec with {fitted.codec.options.codebook_size} words "
                        f"per codebook, got codes of one with {k}")  # fmt: skip
    try:
        return fitted.codec.images(torch.from_numpy(codes.astype(np.int64)))
    except ValueError as e:
        raise DataError(f"--codes {path}: {e}") from e


def _section_dict(section: CodecConfig) -> dict[str, Any]:
    return config_to_dict(Config(codec=section))["codec"]


def _images(args: argparse.Namespace, fitted: CodecFile) -> Tensor:
    from dimdiff.evaluate import load_reference

    c, h, _ = fitted.image_shape
    reference = load_reference(args.images, resolution=args.resolution or h, channels=args.channels or c,
                               split=Split(args.split), n=args.n)  # fmt: skip
    return reference.images


def add_codec_parser(sub: Any) -> None:
    p = sub.add_parser("codec", help="fit, score, encode, decode and show quantized patch codecs")
    codec_sub = p.add_subparsers(dest="codec_command", required=True)
    q = codec_sub.add_parser("fit", help="fit the config's [codec] on its [data]; write a codec file")
    q.add_argument("--config", required=True, help="TOML config with a [codec] section (kind vq, pq, opq or rq)")
    q.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. codec.num_codebooks=8")
    q.add_argument("--out", required=True, help="the codec file to write (.safetensors)")
    for name, text in (("eval", "PSNR, SSIM, bits per pixel, compression ratio, index-error MSE (table and JSON)"),
                       ("encode", "images -> codes (.npz)"), ("show", "a PNG: images, reconstructions, index errors"),
                       ("decode", "codes (.npz) -> PNG images")):  # fmt: skip
        q = codec_sub.add_parser(name, help=text)
        q.add_argument("--codec", required=True, help="codec file (.safetensors) or a latent model's checkpoint folder")
        if name == "decode":
            q.add_argument("--codes", required=True, help=".npz written by `dimdiff codec encode`")
        else:
            q.add_argument("--images", required=True, help="digits, patches, an image folder, a .npz or CIFAR-10")
            q.add_argument("--split", default="test", choices=[s.value for s in Split], help="split of digits/CIFAR")
            q.add_argument("--n", type=int, default=256 if name != "show" else 8, help="at most this many images")
            q.add_argument("--resolution", type=int, default=None, help="default: the codec's training resolution")
            q.add_argument("--channels", type=int, default=None, help="default: the codec's")
        q.add_argument("--out", required=name != "eval", help={"eval": "JSON result file (default: print only)",
                       "encode": "codes file (.npz)", "decode": "folder for grid.png and images/",
                       "show": "PNG file"}[name])  # fmt: skip


def run_codec(args: argparse.Namespace) -> int:
    if args.codec_command == "fit":
        fitted = fit_codec(load_config(args.config, args.overrides))
        path = save_codec(args.out, fitted)
        c, channels = fitted.codec, fitted.image_shape[0]
        print(f"codec: {path} ({c.bits_per_pixel:g} bits per pixel, compression 1:{c.compression_ratio(channels):g} "
              f"against {8 * channels}-bit pixels)")  # fmt: skip
        return 0
    fitted = load_codec(args.codec)
    if args.codec_command == "decode":
        from dimdiff.images import save_grid, save_images

        images = decode_npz(fitted, args.codes)
        save_images(Path(args.out) / "images", images)
        print(f"decoded {len(images)} images: {save_grid(Path(args.out) / 'grid.png', images[:64])}")
        return 0
    images = _images(args, fitted)
    if args.codec_command == "encode":
        print(f"codes of {len(images)} images: {encode_to_npz(fitted, images, args.out)}")
    elif args.codec_command == "show":
        path = show_codec(fitted, images, args.out)
        print(f"originals, reconstructions, index errors (sorted, random order): {path}")
    else:
        report = codec_report(fitted, images)
        for key, value in report.items():
            print(f"{key:<26} {value:.6g}" if isinstance(value, float) else f"{key:<26} {value}")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
            print(f"results: {args.out}")
    return 0
