"""Bit-for-bit regression against checkpoints and numbers made by an earlier dimdiff.

tests/fixtures/regression/<case>/ holds, for a tiny model of each process kind and net arrangement,
the step-10 checkpoint of a 20-step run and the numbers that run gave (scripts/make_regression_fixtures.py;
the commit that made each case is in its COMMIT file). Refactors must keep all three: the same losses from the
same config, the same samples from the old checkpoint, and the same losses when resuming from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dimdiff.config import SamplerKind, config_from_dict
from dimdiff.generate import generate, load_model, sample_config_with
from dimdiff.train.loop import train

FIXTURES = Path(__file__).parent / "fixtures" / "regression"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest)


def _config(case: str, out_dir: Path):
    raw = json.loads((FIXTURES / case / "case.json").read_text())
    raw["train"]["out_dir"] = str(out_dir)
    return config_from_dict(raw)


def _expected(case: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / case / "expected.safetensors"))


def test_the_fixtures_cover_every_process_kind():
    from dimdiff.config import ProcessKind

    raws = [json.loads((FIXTURES / c / "case.json").read_text()) for c in CASES]
    kinds = {raw.get("process", {}).get("kind", "gaussian") for raw in raws}
    assert kinds == {k.value for k in ProcessKind}


@pytest.mark.parametrize("case", CASES)
def test_training_reproduces_the_recorded_losses(case, tmp_path):
    result = train(_config(case, tmp_path / "run"), progress=False)
    assert result.losses == _expected(case)["losses"].tolist()


@pytest.mark.parametrize("case", CASES)
def test_an_old_checkpoint_samples_as_it_did(case):
    model = load_model(FIXTURES / case / "checkpoint")
    expected = _expected(case)
    for sampler in (SamplerKind.DDIM, SamplerKind.DDPM):
        sample = sample_config_with(model.info.config.sample, sampler=sampler, steps=3)
        images = generate(model, len(expected[sampler.value]), sample, seed=0, batch_size=len(expected[sampler.value]))
        assert torch.equal(images, expected[sampler.value]), sampler


@pytest.mark.parametrize("case", CASES)
def test_resuming_an_old_checkpoint_continues_its_losses(case, tmp_path):
    result = train(_config(case, tmp_path / "run"), resume=str(FIXTURES / case / "checkpoint"), progress=False)
    assert result.losses == _expected(case)["losses"].tolist()[10:]
