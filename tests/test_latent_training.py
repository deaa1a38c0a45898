"""Diffusion on quantized codes end to end: every process trains on the (M_q, H / s_q, W / s_q) code grid of a
PQ codec, checkpoints the codec with the weights, resumes bit for bit, and samples images at full size
(decoded); a checkpoint whose codec state does not fit its config is a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dimdiff import checkpoint as ckpt
from dimdiff.checkpoint_files import file_entry
from dimdiff.codecs import QuantizedCodec
from dimdiff.config import config_from_dict

pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_thread")

CODEC = {"kind": "pq", "patch_size": 4, "num_codebooks": 4, "codebook_size": 16, "iterations": 5, "fit_images": 256}
PROCESSES = {
    "gaussian": {},
    "dvdp": {"kind": "dvdp", "turning_points": [0.3, 0.6], "window_widths": [0.2, 0.2]},
    "subspace": {"kind": "subspace", "turning_points": [0.5], "window": "none"},
    "ssd": {"kind": "ssd", "levels": 2, "parameterization": "x0"},
}


def latent_config(tmp_path, steps=4, process=None, codec=None):
    return config_from_dict({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "attention_resolutions": []},
        "process": process or {},
        "codec": codec or CODEC,
        "data": {"name": "digits", "resolution": 32},
        "train": {"steps": steps, "batch_size": 4, "checkpoint_every": 2, "out_dir": str(tmp_path / "run"),
                  "sample_n": 2},
        "sample": {"steps": 4},
    })  # fmt: skip


@pytest.mark.parametrize("process", list(PROCESSES), ids=list(PROCESSES))
def test_every_process_trains_on_codes_and_samples_decoded_images(tmp_path, process):
    from dimdiff.generate import generate, load_model
    from dimdiff.train.loop import train

    lines: list[str] = []
    result = train(latent_config(tmp_path, process=PROCESSES[process]), progress=False, echo=lines.append)
    assert any(line.startswith("fitting the pq codec") for line in lines)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    model = load_model(result.checkpoint)
    assert isinstance(model.codec, QuantizedCodec) and model.process.data_shape == (4, 8, 8)  # the code grid
    images = generate(model, 2, seed=0)
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1.0


def test_latent_training_resumes_exactly_and_never_refits_the_codec(tmp_path):
    from dimdiff.train.loop import train

    whole = train(latent_config(tmp_path / "a", steps=4), progress=False)
    train(latent_config(tmp_path / "b", steps=2), progress=False)
    lines: list[str] = []
    resumed = train(latent_config(tmp_path / "b", steps=4), resume="auto", progress=False, echo=lines.append)
    assert not any("fitting" in line for line in lines)
    assert resumed.losses == whole.losses[2:]  # bit for bit
    a, b = load_file(str(whole.checkpoint / "ema.safetensors")), load_file(str(resumed.checkpoint / "ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(ckpt.load_codec_state(whole.checkpoint)["codebooks"],
                       ckpt.load_codec_state(resumed.checkpoint)["codebooks"])  # fmt: skip


def test_a_codec_state_that_does_not_fit_the_config_is_a_clear_error(tmp_path):
    from dimdiff.generate import load_model
    from dimdiff.train.loop import train

    result = train(latent_config(tmp_path, steps=2), progress=False)
    file = result.checkpoint / ckpt.CODEC_FILE
    state = load_file(str(file))
    save_file({**state, "codebooks": state["codebooks"][:, :8].contiguous()}, str(file))
    manifest_file = result.checkpoint / "manifest.json"  # a consistent folder whose codec is not the config's
    manifest = json.loads(manifest_file.read_text())
    manifest["files"][ckpt.CODEC_FILE] = file_entry(file.read_bytes())
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ckpt.CheckpointError, match=r"codec.safetensors: expected finite pq codebooks of shape "
                                                   r"\(4, 16, 4\).*got \(4, 8, 4\)"):  # fmt: skip
        load_model(result.checkpoint)
