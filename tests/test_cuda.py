"""The CUDA path: autocast precisions and sampling on a GPU (skipped without CUDA)."""

import pytest
import torch

from dimdiff.config import config_from_dict
from dimdiff.generate import generate, load_model
from dimdiff.train.loop import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_and_sampling_on_cuda(tmp_path, precision):
    config = config_from_dict({
        "model": {"base_channels": 16, "channel_mult": [1, 2], "attention_resolutions": [8]},
        "data": {"name": "digits", "resolution": 16},
        "train": {"steps": 20, "batch_size": 32, "device": "cuda", "precision": precision,
                  "out_dir": str(tmp_path / "run"), "sample_n": 4},
        "sample": {"steps": 5},
    })  # fmt: skip
    result = train(config, progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    images = generate(load_model(result.checkpoint, device="cuda"), 4, seed=0)
    assert images.shape == (4, 1, 16, 16) and images.device.type == "cpu"
