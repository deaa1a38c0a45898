"""Sampling from a checkpoint: the model and process come from the checkpoint's own config,
so training and sampling can never drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dimdiff.build import build_codec, build_denoiser, build_head, build_net, build_process, sample_images
from dimdiff.checkpoint import CheckpointInfo, load_codec_state, load_state_dict_strict, read_checkpoint_info
from dimdiff.checkpoint_files import CODEC_FILE
from dimdiff.codecs import Codec
from dimdiff.config import SampleConfig, replace_section
from dimdiff.devices import parse_device
from dimdiff.errors import check_option
from dimdiff.images import save_grid, save_images, save_npz
from dimdiff.nets.denoiser import Denoiser
from dimdiff.process.base import DiffusionProcess

__all__ = ["LoadedModel", "batch_seed", "load_model", "generate", "write_samples"]


@dataclass
class LoadedModel:
    info: CheckpointInfo
    denoiser: Denoiser
    codec: Codec  # images <-> the latents the denoiser works on
    device: torch.device

    @property
    def process(self) -> DiffusionProcess:
        return self.denoiser.process


def load_model(
    checkpoint: str | Path, *, use_ema: bool | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """The denoiser of a checkpoint folder (or of a run folder's newest checkpoint) on ``device`` (cpu, cuda or
    cuda:N; a ConfigError where this torch has no such device); EMA weights unless ``use_ema`` is False (None:
    the checkpoint config's ``sample.use_ema``)."""
    device = parse_device(device)
    info = read_checkpoint_info(checkpoint)
    if use_ema is None:
        use_ema = info.config.sample.use_ema
    codec = build_codec(info.config.codec, load_codec_state(info.path), str(info.path / CODEC_FILE))
    process = build_process(info.config.process, codec.latent_shape(info.data_shape))
    net = build_net(info.config.model, process, build_head(info.config, codec))
    load_state_dict_strict(net, info.path / ("ema.safetensors" if use_ema else "model.safetensors"))
    net = net.to(device).eval()
    return LoadedModel(info, build_denoiser(info.config, net, process, codec=codec), codec, device)


@torch.no_grad()
def generate(model: LoadedModel, n: int, sample: SampleConfig | None = None, *, seed: int = 0,
             batch_size: int = 64, progress: bool = False) -> torch.Tensor:  # fmt: skip
    """n images in [-1, 1], (n, C, H, W). Batch i draws from its own stream, derived from
    (seed, i) by numpy's SeedSequence, so the images do not depend on how many are asked for in
    total (only on the batch size) and runs with different seeds share no stream."""
    check_option(n >= 1, "n", "an integer >= 1 (images to draw)", n)
    check_option(batch_size >= 1, "batch_size", "an integer >= 1", batch_size)
    sample = sample or model.info.config.sample
    out = []
    for i, start in enumerate(tqdm(range(0, n, batch_size), disable=not progress, desc="sample")):
        g = torch.Generator(device=model.device).manual_seed(batch_seed(seed, i))
        count = min(batch_size, n - start)
        out.append(sample_images(sample, model.denoiser, model.codec, count, generator=g, device=model.device).cpu())
    return torch.cat(out)


def batch_seed(seed: int, index: int) -> int:
    """A 63-bit seed for batch ``index`` of a run seeded ``seed`` (distinct streams for distinct pairs)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_config_with(base: SampleConfig, **changes: Any) -> SampleConfig:
    """``base`` with the non-None ``changes`` applied, coerced and validated as config values."""
    return replace_section(base, **{k: v for k, v in changes.items() if v is not None})


def write_samples(
    images: torch.Tensor, out_dir: str | Path, *, npz: bool = False, individual: bool = True
) -> dict[str, Path]:
    """grid.png, images/000000.png ... and optionally samples.npz in ``out_dir``."""
    out_dir = Path(out_dir)
    written = {"grid": save_grid(out_dir / "grid.png", images[:256])}
    if individual:
        save_images(out_dir / "images", images)
        written["images"] = out_dir / "images"
    if npz:
        written["npz"] = save_npz(out_dir / "samples.npz", images)
    return written
