"""The categorical head on a quantized codec's code grid: one-hot logits give back the codes under every choice,
draws are seeded and follow the smoothed distribution, the loss is the cross-entropy (plus the image-space term,
which vanishes for a confident correct prediction), the Gumbel-softmax decode approaches the hard decode as
tau_G -> 0, and a categorical model trains, resumes exactly and samples from the config and the CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dimdiff.codecs import PQOptions, RQOptions
from dimdiff.codecs.quantized import codes_to_unit
from dimdiff.config import ConfigError, config_from_dict
from dimdiff.heads import CategoricalHead, CodeChoice

pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_thread")
K, M = 16, 3


@pytest.fixture(scope="module")
def codec():
    gen = torch.Generator().manual_seed(0)
    images = F.avg_pool2d(torch.rand(32, 3, 8, 8, generator=gen) * 2 - 1, 3, 1, 1)
    return PQOptions(patch_size=2, num_codebooks=M, codebook_size=K, iterations=5).build().fit(images)


def one_hot_output(y: torch.Tensor, scale: float = 50.0) -> torch.Tensor:
    """Network output (B, M K, h, w) whose logits are scale at the codes y (B, M, h, w) and 0 elsewhere."""
    b, m, h, w = y.shape
    return (scale * F.one_hot(y, K).movedim(-1, 2).float()).reshape(b, m * K, h, w)


def codes(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, (2, M, 4, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("choice", list(CodeChoice))
def test_one_hot_logits_give_back_the_codes(codec, choice):
    y = codes()
    head = CategoricalHead(codec, choice=choice)
    assert head.output_shape((M, 4, 4)) == (M * K, 4, 4)
    z = head.x0_estimate(None, None, one_hot_output(y), torch.zeros(2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, codes_to_unit(y, K), atol=1e-6, rtol=0)


def test_draws_are_seeded_and_smoothing_reaches_every_word(codec):
    y = codes()
    head = CategoricalHead(codec, choice=CodeChoice.DRAW, smoothing=1.0)  # the uniform distribution
    draw = [head.x0_estimate(None, None, one_hot_output(y), torch.zeros(2), generator=torch.Generator().manual_seed(3))
            for _ in range(2)]  # fmt: skip
    assert torch.equal(draw[0], draw[1])
    many = CategoricalHead(codec, choice=CodeChoice.DRAW, smoothing=1.0).x0_estimate(
        None, None, one_hot_output(torch.zeros(64, M, 4, 4, dtype=torch.long)), torch.zeros(64),
        generator=torch.Generator().manual_seed(4))  # fmt: skip
    counts = torch.bincount(((many + 1) * (K - 1) / 2).round().long().flatten(), minlength=K).float()
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()  # 192 draws per word


def test_temperature_sharpens_and_the_mean_is_the_expected_latent(codec):
    gen = torch.Generator().manual_seed(5)
    perms = torch.stack([torch.randperm(K, generator=gen) * 0.5 for _ in range(M * 4)])  # (M 2 2, K): no ties
    logits = perms.reshape(M, 2, 2, K).permute(0, 3, 1, 2).reshape(1, M * K, 2, 2).float()
    mean = CategoricalHead(codec, choice=CodeChoice.MEAN).x0_estimate(None, None, logits, torch.zeros(1))
    p = torch.softmax(logits.reshape(1, M, K, 2, 2), dim=2)
    expected = (p * codes_to_unit(torch.arange(K), K).reshape(1, 1, K, 1, 1)).sum(2)
    torch.testing.assert_close(mean, expected)
    cold = CategoricalHead(codec, choice=CodeChoice.MEAN, temperature=1e-2).x0_estimate(None, None, logits,
                                                                                          torch.zeros(1))  # fmt: skip
    argmax = CategoricalHead(codec).x0_estimate(None, None, logits, torch.zeros(1))
    torch.testing.assert_close(cold, argmax, atol=1e-4, rtol=0)


def test_the_loss_is_the_cross_entropy_and_the_image_term_vanishes_when_confident_and_right(codec):
    y = codes()
    z0 = codes_to_unit(y, K)
    logits = torch.randn(2, M * K, 4, 4, generator=torch.Generator().manual_seed(6))
    loss, parts = CategoricalHead(codec, label_smoothing=0.1).loss(None, z0, None, None, None, logits)
    expected = F.cross_entropy(logits.reshape(2, M, K, 4, 4).permute(0, 2, 1, 3, 4), y, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected) and set(parts) == {"ce"}
    torch.manual_seed(0)
    right, parts = CategoricalHead(codec, image_loss_weight=1.0).loss(None, z0, None, None, None, one_hot_output(y))
    assert parts["image_mse"] < 1e-8 and parts["ce"] < 1e-6
    wrong, parts = CategoricalHead(codec, image_loss_weight=1.0).loss(None, z0, None, None, None,
                                                                      one_hot_output((y + 1) % K))  # fmt: skip
    assert parts["image_mse"] > 1e-4 and wrong > right


@pytest.mark.parametrize("options", [PQOptions(patch_size=2, num_codebooks=M, codebook_size=K, iterations=5),
                                     RQOptions(patch_size=2, num_codebooks=M, codebook_size=K, iterations=5)],
                         ids=["pq", "rq"])  # fmt: skip
def test_the_gumbel_softmax_decode_approaches_the_hard_decode_as_tau_falls(options):
    gen = torch.Generator().manual_seed(7)
    codec = options.build().fit(F.avg_pool2d(torch.rand(32, 3, 8, 8, generator=gen) * 2 - 1, 3, 1, 1))
    logits = torch.randn(2, M, K, 4, 4, generator=gen)
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp_min(1e-20)))
    hard = codec.images_from_weights(F.one_hot((logits + gumbel).argmax(2), K).movedim(-1, 2).float())
    torch.testing.assert_close(hard.clamp(-1, 1), codec.images((logits + gumbel).argmax(2)))  # one-hot = images()
    errors = [(codec.images_from_weights(torch.softmax((logits + gumbel) / tau, dim=2)) - hard).abs().max().item()
              for tau in (1.0, 0.3, 0.1, 0.01, 1e-3, 1e-5)]  # fmt: skip
    assert all(a >= b for a, b in zip(errors, errors[1:], strict=False)) and errors[-1] < 1e-4, errors


def test_a_categorical_head_needs_a_quantized_codec_and_the_gaussian_process():
    with pytest.raises(ConfigError, match="codec.kind: expected a quantized codec .* for model.head = categorical"):
        config_from_dict({"model": {"head": "categorical"}})
    with pytest.raises(ConfigError, match="process.kind: expected gaussian for model.head = categorical"):
        config_from_dict({"model": {"head": "categorical"}, "codec": {"kind": "pq"},
                          "process": {"kind": "dvdp", "turning_points": [0.5], "window_widths": [0.2]}})  # fmt: skip
    with pytest.raises(ConfigError, match="sample.code_choice: expected one of argmax, draw, mean"):
        config_from_dict({"sample": {"code_choice": "best"}})


def categorical_config(tmp_path, steps, **sample):
    return config_from_dict({
        "model": {"base_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [], "head": "categorical"},
        "codec": {"kind": "pq", "patch_size": 4, "num_codebooks": 4, "codebook_size": 16, "iterations": 5,
                  "fit_images": 256},
        "data": {"name": "digits", "resolution": 32},
        "train": {"steps": steps, "batch_size": 4, "checkpoint_every": 2, "out_dir": str(tmp_path / "run"),
                  "sample_n": 2, "image_loss_weight": 0.5, "label_smoothing": 0.1},
        "sample": {"steps": 4, **sample},
    })  # fmt: skip


def test_a_categorical_model_trains_resumes_exactly_and_samples_with_each_choice(tmp_path):
    from dimdiff.config import replace_section
    from dimdiff.generate import generate, load_model
    from dimdiff.train.loop import train

    whole = train(categorical_config(tmp_path / "a", 4), progress=False)
    train(categorical_config(tmp_path / "b", 2), progress=False)
    resumed = train(categorical_config(tmp_path / "b", 4), resume="auto", progress=False)
    assert resumed.losses == whole.losses[2:]  # bit for bit, Gumbel noise included
    model = load_model(whole.checkpoint)
    assert isinstance(model.denoiser.head, CategoricalHead) and model.denoiser.head.image_loss_weight == 0.5
    for choice in ("argmax", "draw", "mean"):
        sample = replace_section(model.info.config.sample, code_choice=choice, code_smoothing=0.1)
        images = generate(model, 2, sample, seed=0)
        assert images.shape == (2, 1, 32, 32) and torch.equal(images, generate(model, 2, sample, seed=0))
    from dimdiff.cli import main

    out = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(whole.checkpoint), "--n", "2", "--out", str(out), "--code-choice",
                 "draw", "--code-temperature", "0.5", "--code-smoothing", "0.05", "--steps", "3"]) == 0  # fmt: skip
    assert (out / "grid.png").is_file()
