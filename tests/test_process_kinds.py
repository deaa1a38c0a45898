"""The process table: every kind is a row of `process.kinds.PROCESSES` whose options dataclass holds the
kind's own keys of [process] (flat in the file, checked in the kind's own module) and builds the process.
A kind registered in the table alone (the throwaway sigmoid kind, contracts/throwaway_kind.py) trains,
checkpoints, resumes and samples from the command line with no change to shared code; checkpoints
whose config.json predates per-kind options (every kind wrote every key) still load."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from contracts.throwaway_kind import SigmoidOptions, SigmoidSchedule, ThrowawayKind, registered

from dimdiff.config import ConfigError, ProcessKind, config_from_dict, config_to_dict, replace_section
from dimdiff.process.dvdp_options import DVDPOptions, SubspaceOptions
from dimdiff.process.gaussian import GaussianOptions
from dimdiff.process.kinds import PROCESSES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def sigmoid_kind():
    with registered():
        yield


def _tiny(tmp_path, process):
    return {
        "model": {"base_channels": 4, "channel_mult": [1, 2], "attention_resolutions": []},
        "process": process,
        "data": {"name": "digits", "resolution": 8},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "out_dir": str(tmp_path / "run"), "sample_n": 2},
        "sample": {"steps": 3},
    }  # fmt: skip


def test_a_kind_registered_in_the_table_trains_resumes_and_samples_from_the_command_line(tmp_path, sigmoid_kind):
    from dimdiff.cli import main
    from dimdiff.generate import load_model
    from dimdiff.train.loop import train

    raw = _tiny(tmp_path, {"kind": "sigmoid-gaussian", "slope": 10.0, "parameterization": "v"})
    result = train(config_from_dict(raw), progress=False)
    saved = json.loads((result.checkpoint / "config.json").read_text())["config"]["process"]
    assert saved == {"kind": "sigmoid-gaussian", "schedule": "linear", "num_steps": 1000, "parameterization": "v",
                     "slope": 10.0}  # fmt: skip
    model = load_model(result.checkpoint)
    assert model.process.schedule == SigmoidSchedule(10.0) and model.info.config.process.kind is ThrowawayKind.SIGMOID
    half = train(config_from_dict({**raw, "train": {**raw["train"], "steps": 2, "out_dir": str(tmp_path / "b")}}),
                 progress=False)  # fmt: skip
    assert half.step == 2
    resumed = train(config_from_dict({**raw, "train": {**raw["train"], "out_dir": str(tmp_path / "b")}}),
                    resume="auto", progress=False)  # fmt: skip
    assert resumed.losses == result.losses[2:]  # exact resume, as for every built-in kind
    assert main(["sample", "--checkpoint", str(result.checkpoint), "--n", "2", "--steps", "3",
                 "--out", str(tmp_path / "samples")]) == 0  # fmt: skip
    assert (tmp_path / "samples" / "grid.png").is_file()


def test_the_kinds_in_errors_come_from_the_table(sigmoid_kind):
    with pytest.raises(ConfigError, match="process.kind: expected one of gaussian, dvdp, subspace, ssd, "
                                          "sigmoid-gaussian, got 'sde'"):  # fmt: skip
        config_from_dict({"process": {"kind": "sde"}})
    with pytest.raises(ConfigError, match="process.slope: expected a value > 6"):
        config_from_dict({"process": {"kind": "sigmoid-gaussian", "slope": 2.0}})
    with pytest.raises(ConfigError, match="unknown key 'process.window' for process.kind = sigmoid-gaussian; valid "
                                          r"keys in \[process\]: kind, schedule, num_steps, parameterization, slope$"):
        config_from_dict({"process": {"kind": "sigmoid-gaussian", "window": "cosine"}})


def test_every_kind_has_options_that_build_and_round_trip_through_a_config_file():
    examples = {
        ProcessKind.GAUSSIAN: {},
        ProcessKind.DVDP: {"turning_points": [0.5], "window_widths": [0.2], "window": "snr"},
        ProcessKind.SUBSPACE: {"turning_points": [0.3, 0.6], "complement_std": [0.2, 0.1]},
        ProcessKind.SSD: {"levels": 2, "resolution_schedule": "equal", "gamma": 0.5, "degradation": "bilinear"},
    }
    common = {ProcessKind.SSD: {"parameterization": "x0"}}
    assert set(examples) == set(PROCESSES), "add an example for the new kind"
    for kind, options in examples.items():
        config = config_from_dict({"process": {"kind": kind.value, **common.get(kind, {}), **options}})
        assert isinstance(config.process.options, PROCESSES[kind])
        assert config_from_dict(config_to_dict(config)) == config
        parameterization = common.get(kind, {}).get("parameterization", "eps")
        assert config_to_dict(config)["process"] == {"kind": kind.value, "schedule": "linear", "num_steps": 1000,
                                                     "parameterization": parameterization, **options}  # fmt: skip


def test_options_of_another_kind_are_refused_and_a_change_of_kind_starts_from_its_defaults():
    dvdp = config_from_dict({"process": {"kind": "dvdp", "turning_points": [0.5], "window_widths": [0.2]}}).process
    with pytest.raises(ConfigError, match="process.options: expected GaussianOptions for process.kind = gaussian, "
                                          "got DVDPOptions"):  # fmt: skip
        dataclasses.replace(dvdp, kind=ProcessKind.GAUSSIAN)  # keeps dvdp's options
    assert replace_section(dvdp, kind="gaussian").options == GaussianOptions()
    sub = replace_section(dvdp, kind="subspace", turning_points=[0.5])
    assert sub.options == SubspaceOptions(turning_points=(0.5,)) and sub.options.needs_fit


@pytest.mark.parametrize(("kind", "expected"), [
    ("gaussian", GaussianOptions()),
    ("dvdp", DVDPOptions((0.3, 0.6), (0.2, 0.2))),
    ("subspace", SubspaceOptions((0.3, 0.6), (0.2, 0.1))),
])  # fmt: skip
def test_a_config_json_from_before_per_kind_options_still_loads(kind, expected):
    """Before, every kind wrote every key (turning_points, window_widths, window, complement_std), the ones
    it did not use at their neutral values; those are dropped, the kind's own are kept."""
    old = {
        "gaussian": {"turning_points": [], "window_widths": [], "window": "cosine", "complement_std": []},
        "dvdp": {"turning_points": [0.3, 0.6], "window_widths": [0.2, 0.2], "window": "cosine", "complement_std": []},
        "subspace": {"turning_points": [0.3, 0.6], "window_widths": [], "window": "none", "complement_std": [0.2, 0.1]},
    }[kind]  # fmt: skip
    process = config_from_dict({"process": {"kind": kind, "schedule": "linear", "num_steps": 1000,
                                            "parameterization": "eps", **old}}).process  # fmt: skip
    assert process.options == expected


def test_a_subspace_config_file_may_still_say_window_none_but_no_attenuating_window():
    ok = config_from_dict({"process": {"kind": "subspace", "turning_points": [0.5], "window": "none"}})
    assert ok.process.options == SubspaceOptions((0.5,))
    with pytest.raises(ConfigError, match="unknown key 'process.window' for process.kind = subspace"):
        config_from_dict({"process": {"kind": "subspace", "turning_points": [0.5], "window": "cosine"}})


def test_subspace_options_fit_complement_std_to_latents_and_gaussian_ones_fit_nothing():
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    fitted = SubspaceOptions((0.5,)).fit(x)
    assert not fitted.needs_fit and fitted.complement_std[0] == pytest.approx(0.5, rel=0.1)  # white data: its std
    assert GaussianOptions().fit(x) == GaussianOptions() and not GaussianOptions().needs_fit
    assert isinstance(SigmoidOptions().build((1, 4, 4), SigmoidSchedule(), 10).schedule, SigmoidSchedule)
