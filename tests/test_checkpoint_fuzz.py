"""Fuzzing the files of a checkpoint (fixed seeds): truncations at many offsets, bytes flipped in safetensors headers
and tensor data, in state.pt, config.json and the manifest, wrong JSON types in config.json and the manifest,
deleted files. Each must be a `CheckpointError` that names the damaged file and says what was expected, through
every loader and `dimdiff info --verify` (exit status 1), and for one case of each kind `dimdiff sample` (exit
status 2, one ``error:`` line, no traceback),
and must leave every file of the run folder as it was."""

from __future__ import annotations

import copy
import json
import random
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from dimdiff import checkpoint as ckpt
from dimdiff.build import build_head, build_net, build_process
from dimdiff.cli import main
from dimdiff.config import config_from_dict
from dimdiff.train.loop import train

TINY = {
    "model": {"base_channels": 4, "channel_mult": [1], "num_res_blocks": 1, "attention_resolutions": []},
    "data": {"name": "digits", "resolution": 8},
    "train": {"batch_size": 4, "steps": 2, "checkpoint_every": 2, "sample_n": 2, "log_every": 1},
    "sample": {"steps": 1},
}  # fmt: skip
STEP = "step_00000002"
SAFETENSORS = ("model.safetensors", "ema.safetensors")
CLEAR = re.compile(r"expected|is missing|does not agree|not listed|would need to execute code")
SAMPLE_READS = {"ema.safetensors", "config.json", "manifest.json"}  # what `dimdiff sample` reads


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Any]:
    """A trained run folder, and a net of its architecture to load weights into."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw = copy.deepcopy(TINY)
    raw["train"]["out_dir"] = str(tmp_path_factory.mktemp("fuzz") / "run")
    result = train(config_from_dict(raw), progress=False)
    info = ckpt.read_checkpoint_info(result.checkpoint)
    net = build_net(info.config.model, build_process(info.config.process, info.data_shape), build_head(info.config))
    yield {"run": result.out_dir, "net": net}
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------- corruptions
def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def _offsets(name: str, data: bytes) -> list[int]:
    """Where to cut a file: inside and at the edges of its parts."""
    size = len(data)
    if name in SAFETENSORS:
        end = _header_end(data)
        return [0, 1, 7, 8, 9, (8 + end) // 2, end - 1, end, end + 1, size // 2, size - 1]
    return [0, 1, 2, size // 4, size // 2, size - 2, size - 1]


def truncate(file: Path, index: int) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: _offsets(file.name, data)[index]])


def flip(file: Path, region: str, count: int, seed: int) -> None:
    """XOR ``count`` random bytes of ``region`` (header, data or all) with random non-zero values."""
    rng, data = random.Random(seed), bytearray(file.read_bytes())
    start, stop = 0, len(data)
    if region != "all":
        start, stop = (8, _header_end(data)) if region == "header" else (_header_end(data), len(data))
    for position in rng.sample(range(start, stop), count):
        data[position] ^= rng.randrange(1, 256)
    file.write_bytes(bytes(data))


def edit_json(file: Path, path: tuple[Any, ...], value: Any) -> None:
    """Set (or with value ``...``, delete) ``path`` in a JSON file; an empty path replaces the whole document."""
    if not path:
        file.write_text(json.dumps(value))
        return
    doc = json.loads(file.read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    file.write_text(json.dumps(doc))


CONFIG_EDITS = [
    (("step",), "2"), (("step",), 2.5), (("step",), None), (("step",), True), (("step",), -1), (("step",), 3),
    (("step",), ...), (("data_shape",), None), (("data_shape",), [1, 8]), (("data_shape",), "1x8x8"),
    (("data_shape",), [1, 8, 0]), (("data_shape",), ...), (("num_parameters",), "many"), (("format",), None),
    (("config",), []), (("config",), None), (("config",), ...), (("config", "model"), 3),
    (("config", "model", "num_heads"), "four"), (("config", "model", "num_heads"), 2),
    (("config", "process", "kind"), "nope"), (("config", "model", "channel_mult"), {}), (("config", "train"), None),
    (("config", "unknown"), {}), ((), []), ((), "config"), ((), 3), ((), None),
]  # fmt: skip
MANIFEST_EDITS = [
    (("files",), []), (("files", "model.safetensors", "size"), "1"), (("files", "model.safetensors", "size"), 1),
    (("files", "state.pt", "sha256"), "0" * 64), (("files", "state.pt", "sha256"), "xyz"),
    (("files", "config.json"), None), (("files", "ema.safetensors"), ...), (("step",), "2"), (("step",), 3),
    (("config",), None), (("config", "model", "num_heads"), 2), (("format",), "dimdiff-manifest/0"), ((), []),
]  # fmt: skip


def _cases() -> list[tuple[str, str, Callable[[Path], None]]]:
    """(file, case id, corruption) for every case; seeds are fixed, so the set is the same on every run."""
    seeds = random.Random(0)
    cases: list[tuple[str, str, Callable[[Path], None]]] = []
    for name in (*SAFETENSORS, "state.pt", "config.json", "manifest.json"):
        for i in range(11 if name in SAFETENSORS else 7):
            cases.append((name, f"truncate-{i}", partial(truncate, index=i)))
        cases.append((name, "delete", lambda f: f.unlink()))
        cases.append((name, "append", lambda f: f.write_bytes(f.read_bytes() + b"\0")))
        for region in ("header", "data") if name in SAFETENSORS else ("all",):
            for count, seed in ((c, seeds.randrange(2**32)) for c in (1, 1, 8, 64)):
                damage = partial(flip, region=region, count=count, seed=seed)
                cases.append((name, f"flip-{region}-{count}-{seed}", damage))
    for name, edits in (("config.json", CONFIG_EDITS), ("manifest.json", MANIFEST_EDITS)):
        for path, value in edits:
            shown = "whole" if not path else ".".join(path)
            cases.append((name, f"set-{shown}={value!r}", partial(edit_json, path=path, value=value)))
    return cases


CASES = _cases()
SAMPLED = {next((n, c) for n, c, _ in CASES if (n, c.split("-")[0]) == kind)
           for kind in {(n, c.split("-")[0]) for n, c, _ in CASES if n in SAMPLE_READS}}  # one case per file and kind


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load_everything(folder: Path, net: torch.nn.Module) -> None:
    """Every reader of a checkpoint, as sampling and resuming use them."""
    ckpt.read_checkpoint_info(folder)
    ckpt.load_state_dict_strict(net, folder / "model.safetensors")
    ckpt.load_state_dict_strict(net, folder / "ema.safetensors")
    ckpt.load_training_state(folder)
    ckpt.load_codec_state(folder)


def test_the_fuzz_cases_cover_every_file_and_kind_of_damage():
    assert len({(name, case_id) for name, case_id, _ in CASES}) == len(CASES) >= 120
    kinds = {(name, case_id.split("-")[0]) for name, case_id, _ in CASES}
    assert {(name, kind) for name, _ in kinds for kind in ("truncate", "delete", "append", "flip")} <= kinds


@pytest.mark.parametrize("name, case_id, corrupt", CASES, ids=[f"{n}:{c}" for n, c, _ in CASES])
def test_a_corrupted_file_is_a_clear_checkpoint_error_and_changes_nothing(pristine, tmp_path, capsys, name, case_id,
                                                                           corrupt):  # fmt: skip
    run = Path(shutil.copytree(pristine["run"], tmp_path / "run"))
    folder = run / "checkpoints" / STEP
    corrupt(folder / name)
    before = snapshot(run)
    with pytest.raises(ckpt.CheckpointError) as info:
        load_everything(folder, pristine["net"])
    message = str(info.value)
    assert name in message and CLEAR.search(message), message
    assert main(["info", "--verify", str(run)]) == 1  # `ckpt.verify_checkpoint`, printed
    out = capsys.readouterr().out
    assert f"{STEP}: DAMAGED\n" in out and name in out and out.endswith("0 intact, 1 damaged\n"), out
    if (name, case_id) in SAMPLED:
        args = ["sample", "--checkpoint", str(run), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s")]
        assert main([*args, "--no-images"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and name in err and "Traceback" not in err
    assert snapshot(run) == before
