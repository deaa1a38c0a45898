import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dimdiff.cli import main
from dimdiff.data import DataError, Split
from dimdiff.evaluate import Metric, load_reference, load_samples, parse_metrics, score_images
from dimdiff.images import save_images, save_npz


@pytest.fixture(scope="module")
def digits_test():
    return load_reference("digits", resolution=16, channels=1, split=Split.TEST)


@pytest.fixture(scope="module")
def digits_train():
    return load_reference("digits", resolution=16, channels=1, split=Split.TRAIN)


def _blur(x, sigma=1.5):
    k = torch.exp(-0.5 * (torch.arange(-3, 4) / sigma) ** 2)
    k = (k[:, None] * k[None, :] / k.sum() ** 2)[None, None]
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k)


def test_fd_digits_separates_real_from_noise_and_blur(digits_test, digits_train):
    def fd(samples):
        return score_images(samples, digits_test, [Metric.FD_DIGITS])["fd-digits"]

    real = fd(digits_train.images)
    noise = fd(torch.rand(300, 1, 16, 16) * 2 - 1)
    blurred = fd(_blur(digits_train.images))
    assert real < 0.1 * blurred and blurred < noise


def test_all_metrics_on_real_data_are_good(digits_test, digits_train, tmp_path):
    metrics = [Metric.FD_DIGITS, Metric.KID, Metric.PR, Metric.SWD, Metric.CONFIDENCE]
    scores = score_images(digits_train.images[:600], digits_test, metrics, cache_dir=tmp_path)
    assert abs(scores["kid"]) < 3 * scores["kid_std"] + 1e-3
    assert scores["precision"] > 0.8 and scores["recall"] > 0.7 and scores["confidence"] > 0.95
    assert {"swd_16", "swd_8", "swd_mean"} <= set(scores)
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1 and cached[0].name.startswith("digits-test-16px-1ch-n300-")
    assert cached[0].name.endswith("-digits-classifier.npz")
    again = score_images(digits_train.images[:600], digits_test, [Metric.FD_DIGITS], cache_dir=tmp_path)
    assert again["fd-digits"] == pytest.approx(scores["fd-digits"], rel=1e-12)


def test_errors_are_clear(digits_test):
    with pytest.raises(DataError, match=r"expected samples of shape \(1, 16, 16\)"):
        score_images(torch.zeros(4, 1, 32, 32), digits_test, [Metric.SWD])
    from dimdiff.config import ConfigError

    with pytest.raises(ConfigError, match="expected a comma-separated list from fd-digits, fid"):
        parse_metrics("fd-digits,fdi")


def test_saved_samples_load_as_written(tmp_path, digits_test):
    images = digits_test.images[:10]
    save_npz(tmp_path / "s.npz", images)
    save_images(tmp_path / "pngs", images)
    from_npz, from_png = load_samples(tmp_path / "s.npz"), load_samples(tmp_path / "pngs")
    assert from_npz.shape == (10, 1, 16, 16)
    torch.testing.assert_close(from_npz, from_png)
    assert (from_npz - images).abs().max() <= 1 / 127.5


def test_eval_cli_on_saved_samples_and_checkpoint(tmp_path, capsys, digits_train):
    save_npz(tmp_path / "s.npz", digits_train.images[:64])
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--reference", "digits", "--metrics",
                 "fd-digits,swd,confidence", *cache]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fd-digits" in out and "swd_mean" in out
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["n"] == 64 and "environment" in record and record["metrics"]["confidence"] > 0.9

    run = tmp_path / "run"
    assert main(["train", "--config", "configs/digits16_tiny.toml", "--no-progress", f"train.out_dir={run}",
                 "train.steps=3", "train.batch_size=8", "train.sample_n=2", "sample.steps=2",
                 "model.base_channels=8"]) == 0  # fmt: skip
    assert main(["eval", "--checkpoint", str(run), "--n", "24", "--steps", "2", "--batch-size", "12",
                 "--metrics", "fd-digits,kid,pr,swd", "--save-samples", str(tmp_path / "gen.npz"),
                 *cache]) == 0  # fmt: skip
    record = json.loads((run / "eval" / "eval_step_00000003.json").read_text())
    assert record["step"] == 3 and record["time_per_image_s"] > 0 and "precision" in record["metrics"]
    assert np.load(tmp_path / "gen.npz")["images"].shape == (24, 16, 16, 1)


def test_fid_without_weights_says_which_file(tmp_path, capsys, monkeypatch, digits_train):
    monkeypatch.delenv("DIMDIFF_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("DIMDIFF_CACHE", str(tmp_path / "cache"))  # the default cache location
    save_npz(tmp_path / "s.npz", digits_train.images[:8])
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--reference", "digits", "--metrics", "fid"]) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().err


def test_cifar10_batches_are_a_reference(tmp_path):
    from test_data import write_cifar

    archive = write_cifar(tmp_path, archive=True)
    ref = load_reference(str(archive), resolution=32, channels=3, split=Split.TEST)
    assert ref.images.shape[1:] == (3, 32, 32) and "-test-32px-3ch-" in ref.key
