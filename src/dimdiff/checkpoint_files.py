"""The files of one checkpoint folder: written durably, listed in a manifest, read back only if intact.

``manifest.json`` is written last into a checkpoint's temporary folder:
    {"format": "dimdiff-manifest/1", "step": ..., "config": {...},
     "files": {"model.safetensors": {"size": ..., "sha256": "..."}, ...}}
Every reader here checks a file against it: the size always, the sha256 unless verification is
``Verify.SIZES`` (the ``verify`` argument, else the environment variable ``DIMDIFF_VERIFY``: ``full``,
the default, or ``sizes``). A file is parsed before its hash is checked, so a damaged file is named
with the most specific reason (truncated, bad header, code in a pickle) and a changed one by its hash.
A folder without a manifest (written before dimdiff kept one) is read without these checks.
Every failure is a `CheckpointError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

__all__ = [
    "CODEC_FILE", "CONFIG_FILE", "CheckpointError", "MANIFEST", "VERIFY_ENV", "Verify", "WEIGHT_FILES",
    "check_agreement", "check_entry", "describe", "file_entry", "load_safetensors",
    "load_torch_state", "parse_json", "read_json", "read_manifest", "read_verified", "safetensors_metadata",
    "verify_level", "write_durably", "write_manifest",
]  # fmt: skip

MANIFEST = "manifest.json"
CONFIG_FILE = "config.json"
CODEC_FILE = "codec.safetensors"
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", CODEC_FILE)  # each holds the config in its metadata
MANIFEST_FORMAT = "dimdiff-manifest/1"
VERIFY_ENV = "DIMDIFF_VERIFY"
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, incomplete or does not fit the model asked for."""


class Verify(enum.Enum):
    """How much of each file is checked against the manifest when it is read."""

    FULL = "full"  # size and sha256 (the bytes are read to be loaded anyway; hashing adds ~0.2 s per 140 MB)
    SIZES = "sizes"  # size only: for huge files whose hashing is not worth it; a same-size change goes unnoticed


def verify_level(verify: Verify | None = None) -> Verify:
    """``verify``, or the one ``DIMDIFF_VERIFY`` names (default: full)."""
    if verify is not None:
        return verify
    raw = os.environ.get(VERIFY_ENV, Verify.FULL.value).strip().lower()
    for level in Verify:
        if level.value == raw:
            return level
    raise CheckpointError(f"{VERIFY_ENV}: expected one of {', '.join(v.value for v in Verify)}, got {raw!r}")


def file_entry(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_durably(file: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` to ``file`` and flush it to the disk; its manifest entry."""
    with open(file, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return file_entry(data)


def write_manifest(folder: Path, step: int, config: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    manifest = {"format": MANIFEST_FORMAT, "step": step, "config": config, "files": files}
    # compact: every byte means something, so no change to the manifest goes unnoticed (json.tool shows it)
    write_durably(folder / MANIFEST, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())


def describe(value: Any) -> str:
    """A JSON value as an error message shows it: its kind and (the start of) its text."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    if value is None:
        return "null"
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float)) else repr(value)
    return f"{kinds.get(type(value), type(value).__name__)} {text[:80]}{' ...' if len(text) > 80 else ''}"


def read_json(file: Path) -> Any:
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        return parse_json(file, file.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None


def parse_json(file: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: expected JSON, found a damaged or truncated file ({exc})") from None


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The checked manifest of a checkpoint folder; None for a folder written before manifests."""
    file = folder / MANIFEST
    if not file.exists():
        if _promises_manifest(folder):
            raise CheckpointError(f"{file} is missing ({CONFIG_FILE} says the checkpoint was written with one)")
        return None
    manifest = read_json(file)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = describe(manifest.get("format")) if isinstance(manifest, dict) else describe(manifest)
        raise CheckpointError(f"{file}: expected an object with format {MANIFEST_FORMAT!r}, found {found}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(_is_entry(e) for e in files.values()):
        raise CheckpointError(f"{file}: expected 'files' to map names to {{size, sha256}}, found {describe(files)}")
    if not isinstance(manifest.get("step"), int) or not isinstance(manifest.get("config"), dict):
        raise CheckpointError(f"{file}: expected 'step' (an integer) and 'config' (an object), found "
                              f"{describe(manifest.get('step'))} and {describe(manifest.get('config'))}")  # fmt: skip
    return manifest


def _promises_manifest(folder: Path) -> bool:
    """Whether the folder's config.json says a manifest was written (checkpoints since manifests exist)."""
    try:
        meta = json.loads((folder / CONFIG_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("manifest") == MANIFEST


def _is_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("size"), int) and not isinstance(entry["size"], bool)
            and isinstance(entry.get("sha256"), str) and _HEX64.fullmatch(entry["sha256"]) is not None)  # fmt: skip


def _manifest_entry(file: Path) -> dict[str, Any] | None:
    """The manifest's entry for ``file`` (None: the folder has no manifest); missing files are errors."""
    manifest = read_manifest(file.parent)
    if manifest is None:
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        return None
    entry = manifest["files"].get(file.name)
    if entry is None:
        raise CheckpointError(f"{file}: not listed in {MANIFEST} (listed: {', '.join(sorted(manifest['files']))})")
    if not file.is_file():
        raise CheckpointError(f"{file} is missing ({MANIFEST} lists it with {entry['size']} bytes)")
    return entry


def read_verified(file: Path) -> tuple[bytes, dict[str, Any] | None]:
    """The bytes of a checkpoint file and its manifest entry (None without a manifest): check them with `check_entry`
    after parsing, so that a damaged file is named by the most specific reason."""
    entry = _manifest_entry(file)
    try:
        return file.read_bytes(), entry
    except OSError as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None


def check_entry(file: Path, data: bytes, entry: dict[str, Any] | None, verify: Verify) -> None:
    """Refuse ``data`` (read from ``file``) unless it has the size, and for Verify.FULL the sha256, of its entry."""
    if entry is None:
        return
    if len(data) != entry["size"]:
        how = "truncated" if len(data) < entry["size"] else "grown"
        raise CheckpointError(f"{file}: expected {entry['size']} bytes ({MANIFEST}), found {len(data)} ({how})")
    digest = hashlib.sha256(data).hexdigest() if verify is Verify.FULL else entry["sha256"]
    if digest != entry["sha256"]:
        raise CheckpointError(f"{file}: expected sha256 {entry['sha256'][:16]}... ({MANIFEST}), found "
                              f"{digest[:16]}... (changed or damaged since it was written)")  # fmt: skip


def load_safetensors(file: Path, verify: Verify) -> dict[str, torch.Tensor]:
    data, entry = read_verified(file)
    try:
        tensors = load_safetensors_bytes(data)
    except SafetensorError as exc:
        raise CheckpointError(f"{file}: expected a safetensors file, found {len(data)} bytes it cannot read "
                              f"({_header_problem(data) or exc})") from None  # fmt: skip
    check_entry(file, data, entry, verify)
    return tensors


def safetensors_metadata(file: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header alone."""
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = f.read(size) if 0 <= size <= _MAX_HEADER else b""
    except OSError as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    problem = _header_problem(head + header, whole_file=False)
    if problem:
        raise CheckpointError(f"{file}: expected a safetensors header, found {problem}")
    meta = json.loads(header).get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def _header_problem(data: bytes, *, whole_file: bool = True) -> str | None:
    """What is wrong with the header at the start of ``data`` (None: nothing found)."""
    if len(data) < 8:
        return f"{len(data)} bytes, fewer than the 8 of a header length"
    size = int.from_bytes(data[:8], "little")
    if size > _MAX_HEADER:
        return f"a header length of {size} bytes, more than the {_MAX_HEADER} safetensors allows"
    if 8 + size > len(data):
        return f"a header length of {size} bytes, beyond the {len(data) - 8} bytes that follow"
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"a header that is not JSON ({exc})"
    if not isinstance(header, dict):
        return f"a header that is {describe(header)}, not an object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]  # fmt: skip
    if whole_file and ends and all(isinstance(e, int) for e in ends) and 8 + size + max(ends) != len(data):
        return f"tensor data of {len(data) - 8 - size} bytes where the header describes {max(ends)}"
    return None


def load_torch_state(file: Path, verify: Verify) -> Any:
    """A ``torch.save`` file, loaded with torch's weights-only loader (plain tensors, numbers, containers)."""
    data, entry = read_verified(file)
    if not (data.startswith(b"PK\x03\x04") or data.startswith(b"\x80")):  # a zip archive, or a bare pickle
        raise CheckpointError(f"{file}: expected a file written by torch.save (a zip archive), found {len(data)} "
                              f"bytes starting {data[:8]!r}")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL (\S+)", str(exc))
        raise CheckpointError(f"{file} is not a dimdiff training state; it would need to execute code to load"
                              f"{f' ({named.group(1)})' if named else ''}, which dimdiff never does") from None
    except Exception:  # torch reports a damaged archive as RuntimeError, EOFError, ValueError, ...
        raise CheckpointError(f"{file}: expected a file written by torch.save, found {len(data)} bytes of a "
                              f"truncated or damaged archive") from None  # fmt: skip
    check_entry(file, data, entry, verify)
    return state


def check_agreement(folder: Path, meta: dict[str, Any], manifest: dict[str, Any] | None) -> None:
    """Refuse a config.json that differs from the copies saved with the checkpoint, key by key."""
    copies: dict[str, dict[str, Any]] = {}
    if manifest is not None:
        copies[MANIFEST] = {"step": manifest["step"], "config": manifest["config"]}
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            saved = safetensors_metadata(folder / name).get("dimdiff_config")
            if saved is not None:
                copies[name] = _metadata_config(folder / name, saved)
    diffs = [line for name, copy in copies.items() for line in _differences(meta, copy, name)]
    if diffs:
        shown = diffs[:12] + ([f"... ({len(diffs) - 12} more)"] if len(diffs) > 12 else [])
        raise CheckpointError(f"{folder / CONFIG_FILE} does not agree with the config saved in the checkpoint's "
                              f"other files (edited after it was written?):\n  " + "\n  ".join(shown))  # fmt: skip


def _metadata_config(file: Path, saved: str) -> dict[str, Any]:
    try:
        copy = json.loads(saved)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: expected the config as JSON in its metadata, found damaged text "
                              f"({exc})") from None  # fmt: skip
    if not isinstance(copy, dict):
        raise CheckpointError(f"{file}: expected the config as a JSON object in its metadata, found {describe(copy)}")
    return copy


def _differences(meta: dict[str, Any], copy: dict[str, Any], name: str) -> list[str]:
    return [f"{key}: {CONFIG_FILE} {ours!r}, {name} {theirs!r}"
            for key, ours, theirs in key_differences({k: meta.get(k) for k in copy}, copy)]  # fmt: skip


UNSET = "(none)"  # the value shown for a key that one side does not have


def key_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, our value, their value) for every key of either nested dict whose values differ, sorted."""
    a, b = _flat(ours), _flat(theirs)
    return [(key, a.get(key, UNSET), b.get(key, UNSET)) for key in sorted({*a, *b})
            if a.get(key, UNSET) != b.get(key, UNSET)]  # fmt: skip


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
