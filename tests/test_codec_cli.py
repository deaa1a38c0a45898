"""`dimdiff codec`: fit writes a codec file that eval, encode, decode and show read; the same functions work
from Python; bad files and mismatched codes are clear errors (exit status 2, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dimdiff.cli import main
from dimdiff.codec_tool import load_codec
from dimdiff.evaluate import load_reference

pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_thread")

FIT = ["codec", "fit", "--config", "configs/digits32_latent_pq.toml", "codec.codebook_size=16", "codec.iterations=5",
       "codec.fit_images=64"]  # fmt: skip


@pytest.fixture(scope="module")
def codec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "pq.safetensors"
    assert main([*FIT, "--out", str(path)]) == 0
    return path


def test_fit_writes_a_codec_file_that_loads_with_its_section_and_shape(codec_file, capsys):
    fitted = load_codec(codec_file)
    assert fitted.section.kind.value == "pq" and fitted.section.options.codebook_size == 16
    assert fitted.image_shape == (1, 32, 32) and fitted.codec.quantizer.codebooks.shape == (4, 16, 4)


def test_eval_prints_and_writes_the_scores(codec_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["--images", "digits", "--n", "32", "--out", str(out)]
    assert main(["codec", "eval", "--codec", str(codec_file), *args]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 32 and report["bits_per_pixel"] == 1.0 and report["compression_ratio"] == 8.0
    assert 15 < report["psnr_db"] < 60 and 0 < report["ssim"] <= 1
    assert report["index_error_mse"] < report["index_error_mse_unordered"]  # what sorting buys
    assert "psnr_db" in capsys.readouterr().out


def test_encode_then_decode_gives_the_codecs_reconstructions(codec_file, tmp_path):
    codes = tmp_path / "codes.npz"
    assert main(["codec", "encode", "--codec", str(codec_file), "--images", "digits", "--n", "5", "--out",
                 str(codes)]) == 0  # fmt: skip
    with np.load(codes) as f:
        assert f["codes"].shape == (5, 4, 8, 8) and f["codes"].dtype == np.uint8 and int(f["codebook_size"]) == 16
    assert main(["codec", "decode", "--codec", str(codec_file), "--codes", str(codes), "--out",
                 str(tmp_path / "d")]) == 0  # fmt: skip
    written = sorted((tmp_path / "d" / "images").glob("*.png"))
    assert len(written) == 5 and (tmp_path / "d" / "grid.png").is_file()
    codec = load_codec(codec_file).codec
    x = load_reference("digits", resolution=32, channels=1, split="test", n=5).images
    expected = ((codec.decode(codec.encode(x)) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0]
    got = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in written]))
    assert (got.int() - expected.int()).abs().max() <= 1


def test_show_writes_a_png_of_four_rows(codec_file, tmp_path):
    out = tmp_path / "show.png"
    assert main(["codec", "show", "--codec", str(codec_file), "--images", "digits", "--n", "4", "--out", str(out)]) == 0
    width, height = Image.open(out).size
    assert height > 3 * (width / 4) * 0.9  # four rows of four square images


def test_bad_codec_files_and_codes_are_clear_errors(codec_file, tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    assert main(["codec", "eval", "--codec", str(broken), "--images", "digits"]) == 2
    assert "expected a dimdiff codec file (safetensors), cannot read it" in capsys.readouterr().err
    codes = tmp_path / "codes.npz"
    np.savez(codes, codes=np.full((1, 4, 8, 8), 3, np.uint8), codebook_size=256)
    assert main(["codec", "decode", "--codec", str(codec_file), "--codes", str(codes), "--out", str(tmp_path)]) == 2
    assert "expected codes of a codec with 16 words per codebook, got codes of one with 256" in capsys.readouterr().err
    np.savez(codes, codes=np.full((1, 3, 8, 8), 3, np.uint8), codebook_size=16)
    assert main(["codec", "decode", "--codec", str(codec_file), "--codes", str(codes), "--out", str(tmp_path)]) == 2
    assert r"expected codes of shape (B, 4, H', W'), got (1, 3, 8, 8)" in capsys.readouterr().err
    pixel = ["--config", "configs/digits32_ssd.toml", "--out", str(tmp_path / "x.safetensors")]
    assert main(["codec", "fit", *pixel]) == 2
    assert "codec.kind: expected a quantized codec (vq, pq, opq, rq) to fit, got pixel" in capsys.readouterr().err
    assert main([*FIT, "--out", str(tmp_path / "x.bin")]) == 2
    assert "expected a path ending in .safetensors" in capsys.readouterr().err
