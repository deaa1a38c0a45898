"""What a training run checks before it reads any data or writes anything to its run folder.

`dimdiff train --dry-run` and `train.loop.train` both call `preflight` first, so a configuration that
cannot train fails there with a ConfigError, never after config.json and metrics.jsonl were written:
the device exists and suits train.precision, train.out_dir can be a folder, and the process and the
network build (on the meta device: no memory, no weights) for data of the configured shape, with the
U-Net's levels dividing every state the process shows it (`build.check_net_shapes`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dimdiff.build import build_codec, build_head, build_net, build_process, data_channels, data_shape
from dimdiff.config import Config, Device, Precision, TrainConfig
from dimdiff.devices import parse_device
from dimdiff.errors import ConfigError, check_option
from dimdiff.process.base import DiffusionProcess

__all__ = ["check_train_device", "preflight"]


def preflight(config: Config) -> tuple[DiffusionProcess, nn.Module]:
    """The configured process and network (on the meta device), built as training will build them before
    it has data (an unfitted codec, process options still to estimate); a ConfigError for what cannot work."""
    check_train_device(config.train)
    out = Path(config.train.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.out_dir: expected a folder (new or existing), got the file {out}")
    shape = data_shape(config, data_channels(config))
    process = build_process(config.process, build_codec(config.codec).latent_shape(shape))
    with torch.device("meta"):
        net = build_net(config.model, process, build_head(config))
    return process, net


def check_train_device(config: TrainConfig) -> None:
    """train.device = cuda needs a CUDA device here; train.precision = fp16 needs the run to get one."""
    if config.device is Device.CUDA:
        parse_device("cuda", "train.device")
    cuda = config.device is Device.CUDA or (config.device is Device.AUTO and torch.cuda.is_available())
    check_option(cuda or config.precision is not Precision.FP16, "train.precision",
                 "fp32 or bf16 on a run without a CUDA device (fp16 needs a CUDA device)",
                 config.precision.value)  # fmt: skip
