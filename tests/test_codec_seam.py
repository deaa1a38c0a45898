"""The codec seam end to end: a codec that learns from the data is fitted before training, encodes every
batch, is saved with each checkpoint and restored for sampling, which decodes. The identity pixel codec
is the default; here a throwaway standardising codec stands in for a learned one (as a quantised
patch codec will), registered as a new codec kind with an option of its own through the `CODECS` table
only: the config file names it, the checkpoint's config.json round-trips it."""

from __future__ import annotations

import pytest
import torch
from contracts.throwaway_codec import FITS, SeamCodecKind, StandardiseOptions

from dimdiff import checkpoint as ckpt
from dimdiff.codecs import CODECS, PixelCodec
from dimdiff.config import ConfigError, config_from_dict


@pytest.fixture
def standardising_codec(monkeypatch):
    FITS.clear()
    monkeypatch.setitem(CODECS, SeamCodecKind.STANDARDISE, StandardiseOptions)
    return FITS


def _config(tmp_path, codec=None, **process):
    return config_from_dict({
        "model": {"base_channels": 4, "channel_mult": [1, 2], "attention_resolutions": []},
        "process": process,
        "codec": codec or {"kind": "standardise", "factor": 2},
        "data": {"name": "digits", "resolution": 16},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "out_dir": str(tmp_path / "run"), "sample_n": 2},
        "sample": {"steps": 3},
    })  # fmt: skip


@pytest.mark.parametrize("process", [{}, {"kind": "subspace", "turning_points": [0.5], "window": "none"}],
                         ids=["gaussian", "subspace"])  # fmt: skip
def test_a_learning_codec_is_fitted_saved_restored_and_decoded(tmp_path, standardising_codec, process):
    from dimdiff.generate import generate, load_model
    from dimdiff.train.loop import train

    result = train(_config(tmp_path, **process), progress=False)
    assert standardising_codec == [1497]  # fitted once, on every training image, before training
    saved = ckpt.load_codec_state(result.checkpoint)
    assert set(saved) == {"mean", "std"} and saved["std"].min() > 0
    model = load_model(result.checkpoint)
    assert torch.equal(model.codec.mean, saved["mean"]) and model.process.data_shape == (1, 8, 8)  # latents
    assert model.info.config.codec.options == StandardiseOptions(2)  # config.json names the kind and its option
    if process:  # subspace's s_perp is estimated on the latents the process runs on
        assert len(model.info.config.process.options.complement_std) == 1
    images = generate(model, 3, seed=0)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1.0  # decoded to image size
    resumed = train(_config(tmp_path, **{**process}), resume="auto", progress=False)
    assert resumed.step == 4 and standardising_codec == [1497]  # resume restores the codec, never refits


def test_the_pixel_codec_is_the_identity_and_refuses_a_foreign_state():
    codec, x = PixelCodec(), torch.randn(2, 3, 8, 8)
    assert codec.encode(x) is x and codec.decode(x) is x and codec.latent_shape((3, 8, 8)) == (3, 8, 8)
    assert not codec.needs_fit and codec.state() == {} and codec.fit(x) is codec
    with pytest.raises(ValueError, match="expected no codec state for the pixel codec, got tensors"):
        codec.load_state({"mean": torch.zeros(1)})


def test_a_registered_codec_kind_is_named_in_errors_and_checks_its_own_options(standardising_codec):
    with pytest.raises(ConfigError, match="codec.factor: expected 1, 2 or 4, got 3"):
        config_from_dict({"codec": {"kind": "standardise", "factor": 3}})
    with pytest.raises(ConfigError, match="unknown key 'codec.factor' for codec.kind = pixel; valid keys in "
                                          r"\[codec\]: kind$"):  # fmt: skip
        config_from_dict({"codec": {"kind": "pixel", "factor": 2}})
    with pytest.raises(ConfigError, match="codec.kind: expected one of pixel, vq, pq, opq, rq, standardise, got 'wav"):
        config_from_dict({"codec": {"kind": "wavelet"}})


def test_a_checkpoint_without_codec_state_loads_for_the_pixel_codec_and_none_is_written(tmp_path):
    from dimdiff.generate import load_model
    from dimdiff.train.loop import train

    result = train(_config(tmp_path, codec={"kind": "pixel"}), progress=False)
    assert not (result.checkpoint / ckpt.CODEC_FILE).exists() and ckpt.load_codec_state(result.checkpoint) == {}
    assert isinstance(load_model(result.checkpoint).codec, PixelCodec)
