import numpy as np
import pytest
import torch
from PIL import Image

from dimdiff.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--config", "configs/digits16_tiny.toml", "--no-progress",
            f"train.out_dir={out}", "train.steps=4", "train.batch_size=8", "train.sample_n=4",
            "sample.steps=2", "model.base_channels=8"]  # fmt: skip
    assert main(args) == 0
    return out


def test_train_prints_where_things_are(trained, capsys):
    assert (trained / "loss.png").is_file() and (trained / "config.json").is_file()


def test_sample_writes_grid_pngs_and_npz(trained, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(trained), "--n", "5", "--steps", "3", "--sampler", "ddim",
                 "--eta", "0", "--seed", "1", "--out", str(out), "--npz", "--batch-size", "2"]) == 0  # fmt: skip
    assert (out / "grid.png").is_file()
    assert len(list((out / "images").glob("*.png"))) == 5
    with Image.open(out / "images" / "000000.png") as im:
        assert im.size == (16, 16)
    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (5, 16, 16, 1) and images.dtype == np.uint8
    again = tmp_path / "again"
    main(["sample", "--checkpoint", str(trained), "--n", "5", "--steps", "3", "--seed", "1", "--out", str(again),
          "--npz", "--batch-size", "2"])  # fmt: skip
    assert np.array_equal(np.load(again / "samples.npz")["images"], images)  # same seed, same images


def test_info(trained, capsys):
    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "step:       4" in out and "parameters:" in out and '"base_channels": 8' in out


@pytest.mark.parametrize("sampler", ["ddpm", "adaptive"])
def test_other_samplers_from_the_cli(trained, tmp_path, sampler):
    assert main(["sample", "--checkpoint", str(trained), "--n", "2", "--steps", "4", "--sampler", sampler,
                 "--out", str(tmp_path), "--no-images"]) == 0  # fmt: skip


def test_the_corrector_from_the_cli_needs_a_process_that_crosses_up(trained, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(trained), "--n", "2", "--steps", "4", "--corrector-steps", "2",
                 "--out", str(tmp_path), "--no-images"]) == 2  # fmt: skip
    assert "sample.corrector_steps: expected 0 for a process that never crosses up" in capsys.readouterr().err
    out = tmp_path / "sub"
    args = ["train", "--config", "configs/digits32_subspace.toml", "--no-progress", f"train.out_dir={out}",
            "train.steps=2", "train.batch_size=4", "train.sample_n=2", "sample.steps=3", "model.base_channels=8",
            "data.resolution=16", "model.attention_resolutions=[4]"]  # fmt: skip
    assert main(args) == 0
    assert "process.complement_std estimated from the data" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(out), "--n", "2", "--steps", "3", "--corrector-steps", "2",
                 "--corrector-snr", "0.2", "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert (tmp_path / "s" / "grid.png").is_file()


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 2
    assert "neither a checkpoint folder" in capsys.readouterr().err
    assert main(["train", "--config", "configs/digits16_tiny.toml", "data.name=folder",
                 f"data.path={tmp_path / 'nope'}", f"train.out_dir={tmp_path / 'r'}"]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", "configs/digits16_tiny.toml", "data.resolution=24", "--no-progress",
                 f"train.out_dir={tmp_path / 'r'}"]) == 2  # fmt: skip
    assert "expected resolution in {8, 16, 32} for digits, got 24" in capsys.readouterr().err


def _image_folder(root, n=12, size=20):
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        folder = root / "sub" if i % 2 else root
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return root


def test_folder_training_with_a_corrupt_file(tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    (root / "broken.png").write_bytes(b"this is not a png")
    base = ["train", "--config", "configs/digits16_tiny.toml", "--no-progress", "data.name=folder",
            f"data.path={root}", "data.resolution=8", "model.attention_resolutions=[4]", "model.base_channels=8",
            "train.batch_size=13", "train.steps=2", "train.sample_n=2", "sample.steps=2"]  # fmt: skip
    assert main([*base, f"train.out_dir={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "cannot decode" in err and "broken.png" in err
    assert main([*base, f"train.out_dir={tmp_path / 'b'}", "data.skip_bad_files=true", "train.batch_size=4"]) == 0
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert '"skipped_files": 1' in metrics and "broken.png" in metrics


def test_different_seeds_share_no_images(trained):
    from dimdiff.generate import generate, load_model

    model = load_model(trained)
    a = generate(model, 8, seed=0, batch_size=4)
    b = generate(model, 4, seed=1, batch_size=4)
    assert not any(torch.allclose(b[i], a[j]) for i in range(4) for j in range(8))
    torch.testing.assert_close(generate(model, 4, seed=0, batch_size=4), a[:4])  # prefix-stable
