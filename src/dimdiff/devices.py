"""Devices a user names (``--device``, ``train.device``), checked against this torch before anything runs."""

from __future__ import annotations

import re

import torch

from dimdiff.errors import ConfigError

__all__ = ["parse_device"]

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def parse_device(spec: str | torch.device, key: str = "device") -> torch.device:
    """``spec`` (cpu, cuda or cuda:N) as a torch device that exists here, else a ConfigError naming ``key``."""
    text = str(spec).strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None or (match[1] == "cpu" and match[2] is not None):
        raise ConfigError(f"{key}: expected cpu, cuda or cuda:N, got {str(spec)!r}")
    if match[1] == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("has none (torch {} built without CUDA)" if torch.version.cuda is None else
               "sees none (torch {} built with CUDA " + str(torch.version.cuda) + " finds no GPU)")
        raise ConfigError(f"{key}: expected a CUDA device, but this torch {why.format(torch.__version__)}; use cpu")
    if match[2] is not None and int(match[2]) >= torch.cuda.device_count():
        raise ConfigError(f"{key}: expected a CUDA device index below {torch.cuda.device_count()} (the GPUs this "
                          f"torch sees), got {text}")  # fmt: skip
    return torch.device(text)
