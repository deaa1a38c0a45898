"""Checkpoint integrity: a manifest in every checkpoint, damage named file by file, pruning and leftovers that
survive a kill, config copies that must agree, `--resume auto` past damaged checkpoints, `dimdiff info --verify`."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from dimdiff import checkpoint as ckpt
from dimdiff.cli import main
from dimdiff.config import config_from_dict
from dimdiff.generate import load_model
from dimdiff.train.loop import train

TINY = {
    "model": {"base_channels": 4, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4]},
    "data": {"name": "digits", "resolution": 8},
    "train": {"batch_size": 4, "steps": 4, "checkpoint_every": 2, "sample_n": 2, "log_every": 1},
    "sample": {"steps": 2},
}  # fmt: skip
LEGACY = Path(__file__).parent / "fixtures" / "regression" / "gaussian" / "checkpoint"  # written before manifests


def tiny(out_dir: Path, **train_keys):
    raw = copy.deepcopy(TINY)
    raw["train"].update(out_dir=str(out_dir), **train_keys)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder with step_00000002 and step_00000004 (made once; tests work on copies)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("integrity") / "run"
    train(tiny(out), progress=False)
    yield out
    torch.set_num_threads(threads)


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def newest(run: Path) -> Path:
    return run / "checkpoints" / "step_00000004"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip(file: Path, start: int, count: int) -> None:
    data = bytearray(file.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0xA5
    file.write_bytes(bytes(data))


def truncate(file: Path, fraction: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * fraction)])


def test_the_manifest_lists_every_file_with_its_size_and_sha256(trained):
    folder = newest(trained)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "dimdiff-manifest/1" and manifest["step"] == 4
    assert manifest["config"] == json.loads((folder / "config.json").read_text())["config"]
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "ema.safetensors", "state.pt"}
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert ckpt.verify_checkpoint(folder) == []


def test_a_kill_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # deletes one file, then the process dies
        victim = next(Path(path).rglob("model.safetensors"), None)
        if victim is not None:
            victim.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "run", keep_last=1), progress=False)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    steps = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert [p.name for p in steps] == ["step_00000004"] and ckpt.verify_checkpoint(steps[0]) == []
    train(tiny(tmp_path / "run", keep_last=1), resume="auto", progress=False)  # the next start empties the trash
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000004"]


def test_unfinished_writes_of_a_killed_run_are_removed_when_the_next_run_starts(run):
    folder = run / "checkpoints"
    for name in (".tmp-killed", ".trash-killed/step_00000002", ".old-killed"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.safetensors").write_bytes(b"partial")
    said: list[str] = []
    train(tiny(run), resume="auto", progress=False, echo=said.append)
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002", "step_00000004"]
    assert any("removed 3 unfinished checkpoint write(s)" in line for line in said)


def test_flipped_bytes_in_the_ema_weights_are_refused(run):
    ema = newest(run) / "ema.safetensors"
    flip(ema, ema.stat().st_size - 300, 64)  # tensor data: the file still parses
    with pytest.raises(ckpt.CheckpointError, match=r"ema\.safetensors: expected sha256 .*changed or damaged"):
        load_model(run)
    load_model(run, use_ema=False)  # the raw weights are intact and still load


def test_hashing_can_be_skipped_but_never_the_size_check(run, monkeypatch):
    ema = newest(run) / "ema.safetensors"
    flip(ema, ema.stat().st_size - 300, 64)
    assert ckpt.verify_checkpoint(newest(run), ckpt.Verify.SIZES) == []  # a same-size change goes unnoticed
    monkeypatch.setenv("DIMDIFF_VERIFY", "sizes")
    load_model(run)
    ema.write_bytes(ema.read_bytes() + b"\0")
    with pytest.raises(ckpt.CheckpointError, match=r"ema\.safetensors: expected .*safetensors"):
        load_model(run)
    monkeypatch.setenv("DIMDIFF_VERIFY", "quick")
    with pytest.raises(ckpt.CheckpointError, match="DIMDIFF_VERIFY: expected one of full, sizes, got 'quick'"):
        load_model(run)


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("model.safetensors", lambda f: truncate(f), r"model\.safetensors: expected a safetensors file, found"),
        ("ema.safetensors", lambda f: f.write_bytes(b"\xff" * 8 + f.read_bytes()[8:]),
         r"ema\.safetensors: expected a safetensors header, found a header length of \d+ bytes, more than the "
         r"100000000 safetensors allows"),
        ("ema.safetensors", lambda f: flip(f, 9, 4), r"ema\.safetensors: expected a safetensors header, found a header "
                                                     r"that is not JSON"),
        ("state.pt", lambda f: truncate(f), r"state\.pt: expected a file written by torch\.save, found \d+ bytes of "
                                            r"a truncated or damaged archive"),
        ("state.pt", lambda f: f.write_bytes(b"garbage" * 10),
         r"state\.pt: expected a file written by torch\.save \(a zip archive\), found 70 bytes starting b'garbageg'"),
        ("manifest.json", lambda f: f.unlink(), r"manifest\.json is missing \(config\.json says"),
        ("model.safetensors", lambda f: f.unlink(), r"model\.safetensors is missing \(manifest\.json lists it"),
    ],
    ids=["truncated-weights", "bad-header-length", "garbled-header", "truncated-state", "garbage-state",
         "no-manifest", "no-weights"],
)  # fmt: skip
def test_a_damaged_file_is_a_checkpoint_error_naming_it(run, name, damage, expected):
    damage(newest(run) / name)
    with pytest.raises(ckpt.CheckpointError, match=expected):
        if name == "state.pt":
            ckpt.load_training_state(newest(run))
        else:
            load_model(run, use_ema=name != "model.safetensors")
    assert any(name in problem for problem in ckpt.verify_checkpoint(newest(run)))


def test_resume_auto_continues_from_the_newest_intact_checkpoint(run, tmp_path):
    truncate(newest(run) / "model.safetensors")
    damaged = snapshot(newest(run))
    said: list[str] = []
    resumed = train(tiny(run, steps=6), resume="auto", progress=False, echo=said.append)
    whole = train(tiny(tmp_path / "whole", steps=6), progress=False)
    assert resumed.losses == whole.losses[2:]  # resumed from step 2, exactly
    warning = next(line for line in said if line.startswith("warning:"))
    assert "step_00000004 is damaged, set aside as damaged-step_00000004; resuming from step_00000002" in warning
    assert "model.safetensors: expected a safetensors file" in warning
    assert snapshot(run / "checkpoints" / "damaged-step_00000004") == damaged  # kept as it was, never overwritten
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000002", "step_00000004", "step_00000006"]
    assert all(ckpt.verify_checkpoint(p) == [] for p in ckpt.list_checkpoints(run))


def test_resume_auto_without_any_intact_checkpoint_is_an_error_that_moves_nothing(run):
    (newest(run) / "state.pt").unlink()
    truncate(run / "checkpoints" / "step_00000002" / "ema.safetensors")
    before = snapshot(run / "checkpoints")
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint in .* is intact:\n  step_00000004: .*state\.pt "
                                                    r"is missing.*\n  step_00000002: .*ema\.safetensors"):  # fmt: skip
        train(tiny(run, steps=6), resume="auto", progress=False)
    assert snapshot(run / "checkpoints") == before


def test_resuming_a_named_damaged_checkpoint_is_an_error_not_a_fallback(run):
    (newest(run) / "state.pt").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"cannot resume from .*step_00000004: it is damaged:\n .*state\.pt"):
        train(tiny(run, steps=6), resume=str(newest(run)), progress=False)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000002", "step_00000004"]


def _edit_config(folder: Path, edit) -> None:
    file = folder / "config.json"
    meta = json.loads(file.read_text())
    edit(meta)
    file.write_text(json.dumps(meta, indent=2))


def _heads_and_parameterization(meta: dict) -> None:
    meta["config"]["model"]["num_heads"] = 2  # the weights still fit
    meta["config"]["process"]["parameterization"] = "v"


@pytest.mark.parametrize("verify", ["full", "sizes"])
def test_an_edited_config_json_is_refused_with_its_differences(run, verify):
    _edit_config(newest(run), _heads_and_parameterization)
    with pytest.raises(ckpt.CheckpointError, match="does not agree with the config saved") as info:
        ckpt.read_checkpoint_info(run, ckpt.Verify(verify))
    for line in ("config.model.num_heads: config.json 2, manifest.json 4",
                 "config.model.num_heads: config.json 2, model.safetensors 4",
                 "config.process.parameterization: config.json 'v', ema.safetensors 'eps'"):  # fmt: skip
        assert line in str(info.value)


def test_an_edited_config_json_of_a_checkpoint_without_manifest_is_refused_too(tmp_path):
    folder = Path(shutil.copytree(LEGACY, tmp_path / "checkpoint"))
    assert ckpt.verify_checkpoint(folder) == [] and not (folder / "manifest.json").exists()
    load_model(folder)  # an old checkpoint loads (without the manifest's checks)
    _edit_config(folder, _heads_and_parameterization)
    with pytest.raises(ckpt.CheckpointError, match="config.model.num_heads: config.json 2, model.safetensors 4"):
        load_model(folder)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda m: m.pop("step"), r"expected key 'step' \(an integer >= 0\), found none"),
        (lambda m: m.update(step="4"), r"expected 'step' to be an integer >= 0, found a string \"4\""),
        (lambda m: m.update(data_shape=None), r"expected 'data_shape' to be a list of 3 integers >= 1 .*found null"),
        (lambda m: m.update(num_parameters=-1), r"expected 'num_parameters' to be an integer >= 0, found a number -1"),
        (lambda m: m.update(config=[]), r"expected 'config' to be an object of config sections, found a list \[\]"),
        (lambda m: m.update(format=2), r"expected format 'dimdiff-checkpoint/1', found a number 2"),
    ],
    ids=["no-step", "step-string", "data-shape-null", "negative-parameters", "config-list", "format-number"],
)  # fmt: skip
def test_a_malformed_config_json_is_a_checkpoint_error_naming_it(run, edit, expected):
    _edit_config(newest(run), edit)
    with pytest.raises(ckpt.CheckpointError, match=r"config\.json: " + expected):
        load_model(run)


@pytest.mark.parametrize("text, expected", [("[1, 2]", "expected a JSON object, found a list [1, 2]"),
                                            ('{"format": ', "expected JSON, found a damaged or truncated file")])
def test_a_config_json_that_is_not_an_object_is_a_checkpoint_error(run, text, expected):
    (newest(run) / "config.json").write_text(text)
    with pytest.raises(ckpt.CheckpointError, match=r"config\.json: " + re.escape(expected)):
        ckpt.read_checkpoint_info(run)


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo this should never run",)


def test_a_state_pt_that_would_run_code_is_refused_in_dimdiff_words(run):
    torch.save({"step": 4, "optimizer": _RunsCode()}, newest(run) / "state.pt")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_training_state(newest(run))
    message = str(info.value)
    assert "state.pt is not a dimdiff training state; it would need to execute code to load" in message
    assert message.endswith("which dimdiff never does") and "weights_only" not in message


def test_a_learned_codec_state_is_in_the_manifest_and_checked(tmp_path):
    net = nn.Linear(2, 2)
    folder = ckpt.save_checkpoint(tmp_path / "run", step=1, config=tiny(tmp_path), data_shape=(1, 8, 8), model=net,
                                  ema=net, state={}, keep_last=1, codec_state={"mean": torch.ones(3)})  # fmt: skip
    assert "codec.safetensors" in json.loads((folder / "manifest.json").read_text())["files"]
    assert torch.equal(ckpt.load_codec_state(folder)["mean"], torch.ones(3))
    flip(folder / "codec.safetensors", (folder / "codec.safetensors").stat().st_size - 4, 4)
    with pytest.raises(ckpt.CheckpointError, match=r"codec\.safetensors: expected sha256"):
        ckpt.load_codec_state(folder)
    (folder / "codec.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"codec\.safetensors is missing \(manifest\.json lists it"):
        ckpt.load_codec_state(folder)


def test_info_verify_reports_each_checkpoint_and_exits_1_if_any_is_damaged(run, capsys):
    assert main(["info", "--verify", str(run)]) == 0
    assert capsys.readouterr().out.count("intact (sizes and sha256 checked)") == 2
    flip(newest(run) / "ema.safetensors", (newest(run) / "ema.safetensors").stat().st_size - 300, 64)
    (run / "checkpoints" / ".tmp-killed").mkdir()
    assert main(["info", "--verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "step_00000002: intact" in out and "step_00000004: DAMAGED\n  ema.safetensors: expected sha256" in out
    assert ".tmp-killed: not a checkpoint: an unfinished write" in out and out.endswith("1 intact, 1 damaged\n")
    assert main(["info", "--verify", "--sizes-only", str(newest(run))]) == 0  # the flip keeps the size
    assert main(["info", "--verify", str(LEGACY)]) == 0
    assert "no manifest (written before dimdiff kept one)" in capsys.readouterr().out


def test_info_of_a_damaged_checkpoint_is_an_error_line_not_a_traceback(run, capsys):
    _edit_config(newest(run), lambda m: m.update(data_shape=None))
    assert main(["info", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json: expected 'data_shape'" in err and "Traceback" not in err
