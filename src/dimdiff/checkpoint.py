"""Checkpoints: safetensors weights, a JSON config, a weights-only-loadable training state, and a manifest.

A checkpoint is a folder ``<out_dir>/checkpoints/step_00001000/`` holding
    model.safetensors   network weights (the config JSON is also in the file's metadata)
    ema.safetensors     EMA weights
    codec.safetensors   what the codec learned from the training data (only for codecs that learn)
    config.json         {"format", "step", "data_shape", "num_parameters", "config": {...}, "manifest"}
    state.pt            optimizer, step, RNG states, data position: plain tensors and numbers,
                        so ``torch.load(weights_only=True)`` accepts it
    manifest.json       the step, the config, and every other file's size and sha256 (written last)
The files are written (and flushed to disk) into a temporary folder ``.tmp-*``, which is renamed into
place, so a folder named ``step_*`` is complete when it appears. A checkpoint pruned by
``train.keep_last`` is first renamed out of the ``step_*`` names (``.trash-*``), then deleted. Leftover
``.tmp-*`` and ``.trash-*`` folders of a killed run are removed when the next training run starts
(`clean_leftovers`; one writer per run folder at a time).

Every reader checks what it reads (`dimdiff.checkpoint_files`): against the manifest (the size always,
the sha256 unless ``Verify.SIZES``/``DIMDIFF_VERIFY=sizes``), its structure (safetensors header,
torch archive, the keys and types of config.json), and the config copies (config.json, the manifest
and the safetensors metadata must agree, or the differences are shown key by key). Damage is a
`CheckpointError` naming the file; a state.pt that would run code is never loaded. Checkpoints
written before manifests existed (no manifest.json, no "manifest" key in config.json) load silently
with the structure checks only; `dimdiff info --verify` says which checkpoints have no manifest.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from dimdiff.checkpoint_files import (
    CODEC_FILE,
    CONFIG_FILE,
    MANIFEST,
    CheckpointError,
    Verify,
    check_agreement,
    check_entry,
    describe,
    key_differences,
    load_safetensors,
    load_torch_state,
    parse_json,
    read_manifest,
    read_verified,
    verify_level,
    write_durably,
    write_manifest,
)
from dimdiff.config import Config, ConfigError, config_from_dict, config_to_dict

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "CheckpointInfo", "Verify", "find_checkpoint", "list_checkpoints",
    "load_state_dict_strict", "read_checkpoint_info", "save_checkpoint", "check_compatible", "load_codec_state",
    "load_training_state", "clean_leftovers", "verify_checkpoint",
]  # fmt: skip

CHECKPOINT_FORMAT = "dimdiff-checkpoint/1"
_PREFIX = "step_"
_STEP_NAME = re.compile(r"step_(\d+)")
STATE_FILE = "state.pt"
TMP_PREFIX, TRASH_PREFIX = ".tmp-", ".trash-"
_LEFTOVERS = (TMP_PREFIX, TRASH_PREFIX, ".old-")  # .old-: a replaced checkpoint, as earlier versions named it
_STATE_KEYS = ("step", "optimizer", "scaler", "ema_updates", "data", "rng", "flip_rng")


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
    """The ``step_*`` folders under ``out_dir/checkpoints`` (intact or not), oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def _is_checkpoint_folder(path: Path) -> bool:
    if not path.is_dir() or (path / "checkpoints").is_dir():
        return False
    files = (MANIFEST, "model.safetensors", "ema.safetensors", STATE_FILE)
    return _STEP_NAME.fullmatch(path.name) is not None or any((path / name).is_file() for name in files)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a run folder."""
    path = Path(path)
    if _is_checkpoint_folder(path):
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


def read_checkpoint_info(path: str | Path, verify: Verify | None = None) -> CheckpointInfo:
    """Step, data shape and config of a checkpoint (or of a run folder's newest), once config.json is checked:
    its keys and types, its agreement with the manifest and the weights' metadata, its size and sha256."""
    folder = find_checkpoint(path)
    file = folder / CONFIG_FILE
    data, entry = read_verified(file)
    meta = _checked_meta(parse_json(file, data), file)
    check_agreement(folder, meta, read_manifest(folder))
    check_entry(file, data, entry, verify_level(verify))
    return CheckpointInfo(path=folder, step=meta["step"], data_shape=tuple(meta["data_shape"]),  # type: ignore[arg-type]
                          num_parameters=meta["num_parameters"], config=_config_of(meta["config"], file))  # fmt: skip


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "step": (_is_count, "an integer >= 0"),
    "data_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_count(d) and d > 0 for d in v),
                   "a list of 3 integers >= 1 (channels, height, width)"),
    "num_parameters": (_is_count, "an integer >= 0"),
    "config": (lambda v: isinstance(v, dict), "an object of config sections"),
}  # fmt: skip


def _checked_meta(meta: Any, file: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object, found {describe(meta)}")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: expected format {CHECKPOINT_FORMAT!r}, found {describe(meta.get('format'))}")
    for key, (ok, expected) in _META_KEYS.items():
        if key not in meta:
            raise CheckpointError(f"{file}: expected key {key!r} ({expected}), found none")
        if not ok(meta[key]):
            raise CheckpointError(f"{file}: expected {key!r} to be {expected}, found {describe(meta[key])}")
    return meta


def _config_of(raw: dict[str, Any], file: Path) -> Config:
    try:
        return config_from_dict(_with_pre_pixel_units_default(raw))
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{file}: expected a dimdiff config under 'config', found one it cannot use: "
                              f"{exc}") from None  # fmt: skip


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
    """Write a checkpoint atomically (its manifest last) and delete all but the newest ``keep_last``."""
    folder = Path(out_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": CHECKPOINT_FORMAT, "step": step, "data_shape": list(data_shape),
            "num_parameters": sum(p.numel() for p in model.parameters()), "config": config_to_dict(config),
            "manifest": MANIFEST}  # fmt: skip
    metadata = {"format": CHECKPOINT_FORMAT, "dimdiff_config": json.dumps(meta)}
    files: dict[str, Callable[[], bytes]] = {
        "model.safetensors": lambda: safetensors_bytes(_cpu_state(model.state_dict()), metadata=metadata),
        "ema.safetensors": lambda: safetensors_bytes(_cpu_state(ema.state_dict()), metadata=metadata),
        STATE_FILE: lambda: _torch_bytes(state),
        CONFIG_FILE: lambda: json.dumps(meta, indent=2).encode(),
    }
    if codec_state:
        files[CODEC_FILE] = lambda: safetensors_bytes(_cpu_state(codec_state), metadata=metadata)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=folder))
    try:
        entries = {name: write_durably(tmp / name, make()) for name, make in files.items()}  # one file in memory
        write_manifest(tmp, step, meta["config"], entries)
        _sync_folder(tmp)
        final = _move_into_place(tmp, folder / checkpoint_name(step))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(_to_trash(old))
    return final


def _cpu_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _torch_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to the disk where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, final: Path) -> Path:
    """Rename ``tmp`` to ``final``; an existing ``final`` is replaced without a moment where neither exists."""
    trash = _to_trash(final) if final.exists() else None
    tmp.rename(final)
    _sync_folder(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def _to_trash(path: Path) -> Path:
    """Rename a checkpoint folder out of the ``step_*`` names, into a new ``.trash-*`` folder, which is returned:
    a run killed while deleting it then leaves no half-deleted checkpoint, only trash for the next start."""
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=path.parent))
    path.rename(trash / path.name)
    return trash


def clean_leftovers(out_dir: str | Path) -> list[str]:
    """Delete the ``.tmp-*`` and ``.trash-*`` folders that killed writers left in ``out_dir/checkpoints``; their
    names. Only for the single writer of a run folder, when it starts."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(_LEFTOVERS))
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in found]


def load_state_dict_strict(model: nn.Module, file: str | Path, verify: Verify | None = None) -> None:
    """Load safetensors weights, refusing anything but an exact fit with a message that
    says which keys are missing, unexpected or of another shape. Keys saved under an older
    layout are renamed first by every submodule that defines ``remap_legacy_keys(state, prefix)``."""
    file = Path(file)
    state = load_safetensors(file, verify_level(verify))
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


def load_codec_state(path: str | Path, verify: Verify | None = None) -> dict[str, torch.Tensor]:
    """The codec state saved in a checkpoint folder (empty for a codec that learns nothing)."""
    file = Path(path) / CODEC_FILE
    if not file.exists():
        manifest = read_manifest(Path(path))
        if manifest is None or CODEC_FILE not in manifest["files"]:
            return {}
    return load_safetensors(file, verify_level(verify))


def load_training_state(path: Path, verify: Verify | None = None) -> dict[str, Any]:
    """The optimizer, step, RNG states and data position of a checkpoint folder (``state.pt``)."""
    file = path / STATE_FILE
    state = load_torch_state(file, verify_level(verify))
    missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else list(_STATE_KEYS)
    if missing:
        found = f"a dict without {', '.join(missing)}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{file}: expected a training state (a dict with {', '.join(_STATE_KEYS)}), "
                              f"found {found}")  # fmt: skip
    return state


def verify_checkpoint(path: str | Path, verify: Verify | None = None) -> list[str]:
    """What is wrong with a checkpoint folder, one line per damaged file (empty: intact). Every file is read as
    loading it would (the weights, the training state, the codec state, config.json)."""
    folder, level = Path(path), verify_level(verify)
    problems: list[str] = []
    checks: list[Callable[[], Any]] = [lambda: read_checkpoint_info(folder, level)]
    for name in _files_to_check(folder):
        file = folder / name
        if name == STATE_FILE:
            checks.append(lambda: load_training_state(folder, level))
        elif name.endswith(".safetensors"):
            checks.append(lambda file=file: load_safetensors(file, level))  # type: ignore[misc]
        else:
            checks.append(lambda file=file: check_entry(file, *read_verified(file), level))  # type: ignore[misc]
    for check in checks:
        try:
            check()
        except CheckpointError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    return problems


def _files_to_check(folder: Path) -> list[str]:
    names = {"model.safetensors", "ema.safetensors", STATE_FILE}
    if (folder / CODEC_FILE).exists():
        names.add(CODEC_FILE)
    try:
        manifest = read_manifest(folder)
    except CheckpointError:
        manifest = None  # reported by each file's check
    names |= set(manifest["files"]) if manifest else set()
    return sorted(names - {CONFIG_FILE})


def check_compatible(saved: Config, asked: Config, path: Path) -> None:
    """Refuse to resume a run whose model, process or data differ from the configuration."""
    sections = ("model", "process", "codec", "data")
    saved_d, asked_d = ({s: config_to_dict(c)[s] for s in sections} for c in (saved, asked))
    diffs = [f"{key}: checkpoint {ours!r}, config {theirs!r}" for key, ours, theirs in key_differences(saved_d, asked_d)
             if key.split(".", 1)[1] not in ("num_workers", "path", "skip_bad_files")]  # fmt: skip
    if diffs:
        raise CheckpointError(f"cannot resume from {path}: it was made with another setup:\n  " + "\n  ".join(diffs))
