"""Checkpoints: safetensors weights, a JSON config, and a weights-only-loadable training state.

A checkpoint is a folder ``<out_dir>/checkpoints/step_00001000/`` holding
    model.safetensors   network weights (the config JSON is also in the file's metadata)
    ema.safetensors     EMA weights
    codec.safetensors   what the codec learned from the training data (only for codecs that learn)
    config.json         {"format", "step", "data_shape", "num_parameters", "config": {...}}
    state.pt            optimizer, step, RNG states, data position: plain tensors and numbers,
                        so ``torch.load(weights_only=True)`` accepts it
It is written into a temporary folder and renamed into place, so a folder named ``step_*`` is
always complete; an interrupted write leaves only a ``.tmp-*`` folder that is ignored.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dimdiff.config import Config, config_from_dict, config_to_dict

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "CheckpointInfo", "find_checkpoint", "list_checkpoints",
    "load_state_dict_strict", "read_checkpoint_info", "save_checkpoint", "check_compatible", "load_codec_state",
]  # fmt: skip

CHECKPOINT_FORMAT = "dimdiff-checkpoint/1"
_PREFIX = "step_"
CODEC_FILE = "codec.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not fit the model asked for."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    data_shape: tuple[int, int, int]
    num_parameters: int
    config: Config


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "config.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a run folder."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raise CheckpointError(
        f"{path} is neither a checkpoint folder (with config.json and model.safetensors) "
        f"nor a run folder with checkpoints/{_PREFIX}*"
    )


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    path = find_checkpoint(path)
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path / 'config.json'}: expected format {CHECKPOINT_FORMAT!r}, got {meta.get('format')!r}"
        )
    return CheckpointInfo(
        path=path,
        step=int(meta["step"]),
        data_shape=tuple(meta["data_shape"]),  # type: ignore[arg-type]
        num_parameters=int(meta["num_parameters"]),
        config=config_from_dict(_with_pre_pixel_units_default(meta["config"])),
    )


def _with_pre_pixel_units_default(raw: dict[str, Any]) -> dict[str, Any]:
    """A config saved before `model.pixel_units` existed: its nets ran in orthonormal coordinates,
    so it reads as pixel_units = false (the new default would silently rescale its nets)."""
    model = raw.get("model", {})
    if "pixel_units" in model:
        return raw
    return {**raw, "model": {**model, "pixel_units": False}}


def save_checkpoint(
    out_dir: str | Path,
    *,
    step: int,
    config: Config,
    data_shape: tuple[int, int, int],
    model: nn.Module,
    ema: nn.Module,
    state: dict[str, Any],
    keep_last: int,
    codec_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically and delete all but the newest ``keep_last``."""
    folder = Path(out_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "data_shape": list(data_shape),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "config": config_to_dict(config),
    }
    metadata = {"format": CHECKPOINT_FORMAT, "dimdiff_config": json.dumps(meta)}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        save_file(_cpu_state(model), str(tmp / "model.safetensors"), metadata=metadata)
        save_file(_cpu_state(ema), str(tmp / "ema.safetensors"), metadata=metadata)
        if codec_state:
            codec = {k: v.detach().to("cpu").contiguous() for k, v in codec_state.items()}
            save_file(codec, str(tmp / CODEC_FILE), metadata=metadata)
        torch.save(state, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        final = folder / checkpoint_name(step)
        old = None
        if final.exists():  # replace without a moment where no complete step folder exists
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=folder))
            final.rename(old / final.name)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old)
    return final


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def load_state_dict_strict(model: nn.Module, file: str | Path) -> None:
    """Load safetensors weights, refusing anything but an exact fit with a message that
    says which keys are missing, unexpected or of another shape. Keys saved under an older
    layout are renamed first by every submodule that defines ``remap_legacy_keys(state, prefix)``."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"weights file {file} does not exist")
    state = load_file(str(file))
    remap_legacy_keys(model, state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        lines = [f"{file} does not fit this model (another architecture?)"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:5]) + (" ..." if len(items) > 5 else ""))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state)


def remap_legacy_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Rename, in place, the keys of ``state`` (for ``model``) that its submodules saved under an older layout."""
    for name, module in model.named_modules():
        remap = getattr(module, "remap_legacy_keys", None)
        if callable(remap):
            remap(state, f"{name}." if name else "")


def load_codec_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The codec state saved in a checkpoint folder (empty for a codec that learns nothing)."""
    file = Path(path) / CODEC_FILE
    return load_file(str(file)) if file.is_file() else {}


def load_training_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)


def check_compatible(saved: Config, asked: Config, path: Path) -> None:
    """Refuse to resume a run whose model, process or data differ from the configuration."""
    saved_d, asked_d = config_to_dict(saved), config_to_dict(asked)
    unset = "(none)"  # a key of one kind's options that the other kind has not
    diffs = [
        f"{section}.{key}: checkpoint {saved_d[section].get(key, unset)!r}, config {asked_d[section].get(key, unset)!r}"
        for section in ("model", "process", "codec", "data")
        for key in {**saved_d[section], **asked_d[section]}
        if saved_d[section].get(key, unset) != asked_d[section].get(key, unset)
        and key not in ("num_workers", "path", "skip_bad_files")
    ]
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: it was made with another setup:\n  " + "\n  ".join(diffs))
