from pathlib import Path

import pytest

from dimdiff.config import (
    Config,
    ConfigError,
    Precision,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from dimdiff.data import DatasetName

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def test_defaults_and_round_trip():
    config = Config()
    assert config.data.name is DatasetName.DIGITS
    assert config_from_dict(config_to_dict(config)) == config


def test_overrides_parse_toml_values_and_bare_words(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nsteps = 5\n[model]\nchannel_mult = [1, 2]\n')
    config = load_config(path, ["train.steps=7", "train.precision=bf16", "model.channel_mult=[1,2,4]",
                                "train.lr=1e-3", "data.hflip=true", "data.path=some/folder"])  # fmt: skip
    assert config.train.steps == 7 and config.train.precision is Precision.BF16
    assert config.model.channel_mult == (1, 2, 4) and config.train.lr == 1e-3
    assert config.data.hflip is True and config.data.path == "some/folder"


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        ({"trian": {}}, [],
         "unknown config section 'trian'; valid sections: model, process, codec, data, train, sample"),
        ({"train": {"lrr": 1}}, [], "unknown key 'train.lrr'; valid keys in [train]: steps, batch_size, lr"),
        ({}, ["train.precision=fp64"], "train.precision: expected one of fp32, bf16, fp16, got 'fp64'"),
        ({}, ["train.steps=many"], "train.steps: expected an integer, got 'many'"),
        ({}, ["train.steps=0"], "train.steps: expected an integer >= 1, got 0"),
        ({}, ["data.channels=2"], "data.channels: expected 1, 3 or unset, got 2"),
        ({}, ["data.name=mnist"], "data.name: expected one of digits, patches, folder, cifar10, npz, got 'mnist'"),
        ({}, ["steps=3"], "expected an override of the form section.key=value"),
        ({}, ["train.batch_size=30", "train.grad_accum=4"], "a multiple of train.grad_accum = 4"),
    ],
)
def test_bad_keys_and_values_are_named(raw, overrides, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(apply_overrides(raw, overrides))
    assert message in str(info.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 1")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_resolves_with_dry_run(path, capsys):
    from dimdiff.cli import main

    assert main(["train", "--config", str(path), "--dry-run"]) == 0
    assert "parameters" in capsys.readouterr().out


def test_bad_attention_resolution_is_named(capsys):
    from dimdiff.cli import main

    assert main(["train", "--config", str(CONFIGS[0]), "model.attention_resolutions=[5]", "--dry-run"]) == 2
    assert "model.attention_resolutions: expected sizes among" in capsys.readouterr().err


def test_ddpm_cifar10_config_builds_the_reference_model(capsys):
    from dimdiff.cli import main
    from dimdiff.nets.unet import UNET_PRESETS, UNet, num_parameters

    assert main(["train", "--config", "configs/ddpm_cifar10.toml", "--dry-run"]) == 0
    assert "UNet with 35,746,307 parameters at 3x32x32" in capsys.readouterr().out
    import torch

    with torch.device("meta"):
        assert num_parameters(UNet(**UNET_PRESETS["ddpm-cifar10"])) == 35_746_307


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.loss_weighting=min_snr", "train.min_snr_gamma=0"], "train.min_snr_gamma: expected a value > 0"),
        (["train.complexity_lambda=-0.1"], "train.complexity_lambda: expected a value >= 0"),
        (["process.num_steps=20", "sample.steps=50"], "sample.steps: expected at most process.num_steps = 20"),
        (["sample.min_step=0.1", "sample.max_step=0.05"], "sample.min_step: expected a value in (0, sample.max_step"),
        (["sample.eta=1.5"], "sample.eta: expected a value in [0, 1]"),
        (["model.stage_embedding=true"], "model.stage_embedding: expected false for this process (process.kind = "
                                         "gaussian: its state keeps one resolution)"),
        (["model.per_stage_nets=true"], "model.per_stage_nets: expected false for this process"),
        (["sample.corrector_steps=2"], "sample.corrector_steps: expected 0 for this process (process.kind = gaussian"),
        (["process.kind=dvdp", "model.per_stage_nets=true"], "expected false for this process (process.kind = dvdp"),
        (["process.kind=dvdp", "process.turning_points=[0.5]", "process.window_widths=[0.2]",
          "model.stage_embedding=true", "model.per_stage_nets=true"], "model.stage_embedding: expected false with"),
        (["process.kind=dvdp", "process.turning_points=[0.5]", "process.window=none"],
         "process.window: expected an attenuation window (linear, cosine, snr); without attenuation use"),
        (["process.kind=subspace", "process.turning_points=[0.5]", "process.window=cosine"],
         "unknown key 'process.window' for process.kind = subspace; valid keys in [process]: kind, schedule, "
         "num_steps, parameterization, turning_points, complement_std"),
        (["process.kind=subspace", "process.turning_points=[0.5]", "process.window=none",
          "process.window_widths=[0.2]"], "unknown key 'process.window_widths' for process.kind = subspace"),
        (["process.turning_points=[0.5]"], "unknown key 'process.turning_points' for process.kind = gaussian"),
        (["process.kind=sde"], "process.kind: expected one of gaussian, dvdp, subspace, ssd, got 'sde'"),
        (["process.kind=ssd"], "process.parameterization: expected x0 for process.kind = ssd, got 'eps'"),
        (["codec.kind=wavelet"], "codec.kind: expected one of pixel, vq, pq, opq, rq, got 'wavelet'"),
        (["codec.kind=pq", "codec.codebook_size=100"],
         "codec.codebook_size: expected a power of two in [2, 65536], got 100"),
        (["process.kind=subspace", "process.window=none"],
         "process.turning_points: expected at least one switch time for subspace"),
        (["process.kind=subspace", "process.window=none", "process.turning_points=[0.3, 0.6]",
          "process.complement_std=[0.1]"],
         "process.complement_std: expected 2 values >= 0"),
        (["process.kind=dvdp", "process.turning_points=[0.5]", "process.window_widths=[0.2]",
          "process.complement_std=[0.1]"], "unknown key 'process.complement_std' for process.kind = dvdp"),
        (["sample.corrector_snr=0"], "sample.corrector_snr: expected a value > 0"),
    ],
)
def test_settings_that_would_fail_late_are_refused_up_front(overrides, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(apply_overrides({}, overrides))
    assert message in str(info.value)


def test_a_section_replaced_from_python_is_coerced_and_checked_like_a_config_file():
    from dimdiff.config import SampleConfig, SamplerKind, replace_section
    from dimdiff.generate import sample_config_with

    sample = sample_config_with(SampleConfig(), sampler="ddpm", steps=7, eta=None)
    assert sample.sampler is SamplerKind.DDPM and sample.steps == 7 and sample.eta == SampleConfig().eta
    with pytest.raises(ConfigError, match="sample.sampler: expected one of ddpm, ddim, adaptive, got 'dpm'"):
        replace_section(SampleConfig(), sampler="dpm")
    with pytest.raises(ConfigError, match="unknown key 'sample.stepz'"):
        replace_section(SampleConfig(), stepz=3)
