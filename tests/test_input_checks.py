"""User errors in `dimdiff train / sample / eval` end in one `error: ...` line that names what was expected
and what was received: no traceback, and (for training) nothing written to the run folder."""

import numpy as np
import pytest
import torch

from dimdiff.cli import main
from dimdiff.config import ConfigError, apply_overrides, config_from_dict, load_config

TINY = ["--config", "configs/digits16_tiny.toml", "--no-progress", "train.steps=2", "train.batch_size=8",
        "train.sample_n=2", "sample.steps=2", "model.base_channels=8"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("checks") / "run"
    assert main(["train", *TINY, f"train.out_dir={out}"]) == 0
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _fails(args, capsys, *expected):
    """main(args) exits non-zero with one error line holding every ``expected`` text."""
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for text in expected:
        assert text in line, line
    return line


# ----------------------------------------------------------------------------------- train: before any write
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.channel_mult=[1,1,1,1,1,1]"], ["divisible by 32", "got 16x16"]),  # 6 levels on 16 px
        (["process.kind=dvdp", "process.turning_points=[0.2,0.4,0.6]", "process.window_widths=[0.1,0.1,0.1]",
          "model.channel_mult=[1,2,2]", "model.attention_resolutions=[]"],
         ["divisible by 4", "got 2x2", "16x16, 8x8, 4x4, 2x2"]),  # stage 3 of 16 px is 2x2
        (["process.kind=dvdp", "process.turning_points=[0.1,0.2,0.4,0.6,0.8]",
          "process.window_widths=[0.05,0.1,0.1,0.1,0.1]", "model.channel_mult=[1]", "model.attention_resolutions=[]"],
         ["process.turning_points", "divisible by 32, got 16x16"]),  # more turning points than 16 px allows
        (["train.lr=inf"], ["train.lr: expected a finite number, got inf"]),
        (["train.device=cuda"], ["train.device: expected a CUDA device, but this torch"]),
        (["train.precision=fp16", "train.device=auto"], ["train.precision", "fp16 needs a CUDA device"]),
        (["model.num_heads=3"], ["model.num_heads: expected a divisor of the widths [16]", "got 3"]),
    ],
    ids=["levels", "dvdp_levels", "turning_points", "lr_inf", "cuda", "fp16", "heads"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "train"])
@pytest.mark.usefixtures("no_cuda")
def test_train_refuses_before_writing_anything(tmp_path, capsys, overrides, expected, dry_run):
    out = tmp_path / "run"
    _fails(["train", *TINY, f"train.out_dir={out}", *overrides, *(["--dry-run"] if dry_run else [])], capsys,
           *expected)  # fmt: skip
    assert not out.exists()


def test_train_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    _fails(["train", *TINY, f"train.out_dir={tmp_path / 'taken'}"], capsys,
           "train.out_dir: expected a folder", "got the file")  # fmt: skip


def test_config_path_that_is_a_folder_or_binary(tmp_path, capsys):
    _fails(["train", "--config", str(tmp_path), "--dry-run"], capsys, "expected a TOML config file, got the folder")
    (tmp_path / "bin.toml").write_bytes(bytes(range(128, 256)))
    _fails(["train", "--config", str(tmp_path / "bin.toml"), "--dry-run"], capsys,
           "expected a TOML config file (UTF-8 text), got binary data")  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=inf", "train.lr: expected a finite number, got inf"),
        ("train.lr=nan", "train.lr: expected a finite number, got nan"),
        ("train.min_snr_gamma=inf", "train.min_snr_gamma: expected a finite number"),
        ("sample.eta=nan", "sample.eta: expected a finite number"),
        ("train.weight_decay=-1", "train.weight_decay: expected a value >= 0, got -1.0"),
        ("train.grad_clip=-1", "train.grad_clip: expected a value >= 0"),
        ("train.warmup_steps=-5", "train.warmup_steps: expected a value >= 0"),
        ("data.num_workers=-1", "data.num_workers: expected an integer >= 0, got -1"),
        ("train.sample_every=-1", "train.sample_every: expected a value >= 0, got -1"),
        ("model.num_heads=0", "model.num_heads: expected an integer >= 1, got 0"),
    ],
)
def test_non_finite_and_negative_values_are_refused_on_load(override, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(apply_overrides({}, [override]))
    assert message in str(info.value)


def test_train_config_refuses_an_infinite_learning_rate_from_python():
    from dimdiff.config import TrainConfig

    with pytest.raises(ConfigError, match="train.lr: expected a finite value > 0, got inf"):
        TrainConfig(lr=float("inf"))


def test_shipped_defaults_still_load():
    assert load_config("configs/digits16_tiny.toml").train.lr > 0


# ----------------------------------------------------------------------------------- sample
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], ["--batch-size: expected an integer >= 1, got 0"]),
        (["--batch-size", "-1"], ["--batch-size: expected an integer >= 1, got -1"]),
        (["--n", "-3"], ["--n: expected an integer >= 1, got -3"]),
        (["--threads", "-1"], ["--threads: expected an integer >= 0, got -1"]),
        (["--seed", "-1"], ["--seed: expected an integer >= 0, got -1"]),
        (["--steps", "0"], ["sample.steps: expected an integer >= 1, got 0"]),
        (["--eta", "2"], ["sample.eta: expected a value in [0, 1]"]),
        (["--device", "cuda"], ["--device: expected a CUDA device, but this torch"]),
        (["--device", "cuda:3"], ["--device: expected a CUDA device"]),
        (["--device", "gpu"], ["--device: expected cpu, cuda or cuda:N, got 'gpu'"]),
    ],
)
@pytest.mark.usefixtures("no_cuda")
def test_sample_argument_errors(checkpoint, tmp_path, capsys, args, expected):
    out = tmp_path / "s"
    _fails(["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--n", "2", *args], capsys, *expected)
    assert not out.exists()


def test_sample_out_that_is_a_file(checkpoint, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    _fails(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "f"), "--n", "1"], capsys,
           "--out: expected a folder", "got the file")  # fmt: skip


@pytest.mark.usefixtures("no_cuda")
def test_load_model_checks_the_device(checkpoint):
    from dimdiff.generate import generate, load_model

    with pytest.raises(ConfigError, match="device: expected a CUDA device, but this torch"):
        load_model(checkpoint, device="cuda")
    with pytest.raises(ConfigError, match="batch_size: expected an integer >= 1, got 0"):
        generate(load_model(checkpoint), 2, batch_size=0)


# ----------------------------------------------------------------------------------- eval
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--n", "0"], ["--n: expected an integer >= 1, got 0"]),
        (["--n", "-2"], ["--n: expected an integer >= 1, got -2"]),
        (["--batch-size", "0"], ["--batch-size: expected an integer >= 1, got 0"]),
        (["--seed", "-5"], ["--seed: expected an integer >= 0, got -5"]),
        (["--device", "cuda"], ["--device: expected a CUDA device"]),
        (["--cache-dir", "e.json", "--metrics", "fd-digits"], ["--cache-dir: expected a folder", "got the file"]),
        (["--save-samples", "somewhere"], ["--save-samples: expected a path ending in .npz, got somewhere"]),
    ],
)
@pytest.mark.usefixtures("no_cuda")
def test_eval_argument_errors(checkpoint, tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)  # whatever a failing check lets through is written here
    (tmp_path / "e.json").write_text("{}")
    _fails(["eval", "--checkpoint", str(checkpoint), "--metrics", "swd", "--steps", "2", "--out", "e.json", *args],
           capsys, *expected)  # fmt: skip


def test_eval_out_that_is_a_folder(checkpoint, tmp_path, capsys):
    _fails(["eval", "--checkpoint", str(checkpoint), "--metrics", "swd", "--n", "2", "--out", str(tmp_path)],
           capsys, "--out: expected a path for the JSON result file, got the folder")  # fmt: skip


@pytest.mark.parametrize("content", [b"\x9d\x00\xff\x13 random bytes", b"hello, text", None], ids=["bytes", "text",
                                                                                                 "truncated"])
def test_eval_samples_that_are_not_an_npz(tmp_path, capsys, content):
    path = tmp_path / "s.npz"
    if content is None:
        np.savez(path, images=np.zeros((4, 8, 8), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(content)
    line = _fails(["eval", "--samples", str(path), "--reference", "digits", "--metrics", "swd"], capsys,
                  str(path), "is not a NumPy .npz archive")  # fmt: skip
    assert "pickle" not in line


def test_training_data_that_is_not_an_npz(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    line = _fails(["train", *TINY, "data.name=npz", f"data.path={path}", f"train.out_dir={tmp_path / 'r'}"], capsys,
                  "data.npz is not a NumPy .npz archive", "got other binary data")  # fmt: skip
    assert "pickle" not in line
    np.savez(path, images=np.array([1, "a", None], dtype=object))
    line = _fails(["train", *TINY, "data.name=npz", f"data.path={path}", f"train.out_dir={tmp_path / 'r'}"], capsys,
                  "expected an array of numbers under 'images'", "got an array of Python objects")  # fmt: skip
    assert "pickle" not in line


def test_an_npz_with_another_kind_of_member_or_a_single_npy(tmp_path):
    import zipfile

    from dimdiff.data import DataError, load_dataset

    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as archive:
        archive.writestr("picture.png", b"not an array")
    with pytest.raises(DataError, match="expected .npy arrays in the npz file .*got the member 'picture.png'"):
        load_dataset("npz", path=tmp_path / "zip.npz")
    np.save(tmp_path / "one.npy", np.zeros((2, 8, 8), dtype=np.uint8))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError, match=r"not a NumPy .npz archive.*got a single .npy array \(numpy.save\)"):
        load_dataset("npz", path=tmp_path / "one.npz")


# ----------------------------------------------------------------------------------- upscaled images
def _folder(root, n, size):
    from PIL import Image

    root.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 10 * i, dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_tiny_images_upscaled_more_than_2x_are_reported_once(tmp_path, caplog):
    from dimdiff.data import load_dataset

    tiny, fine = _folder(tmp_path / "tiny", 5, 1), _folder(tmp_path / "fine", 3, 8)
    with caplog.at_level("WARNING", logger="dimdiff.data"):
        assert load_dataset("folder", path=tiny, resolution=16)[0].shape == (3, 16, 16)
    warnings = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert warnings == [f"5 of 5 images in {tiny} are upscaled more than 2x (smallest 1x1 px) to 16 px; they will "
                        f"look like blobs: use a lower resolution or larger images"]  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING", logger="dimdiff.data"):
        load_dataset("folder", path=fine, resolution=16)  # exactly 2x: not reported
        np.savez(tmp_path / "small.npz", images=np.zeros((7, 4, 6), dtype=np.uint8))
        load_dataset("npz", path=tmp_path / "small.npz", resolution=16)
    assert [r.getMessage()[:60] for r in caplog.records] == [
        f"7 of 7 images in {tmp_path / 'small.npz'} are upscaled more than 2x (smallest 4x4 px)"[:60]
    ]


def test_training_on_tiny_images_warns(tmp_path, caplog):
    tiny = _folder(tmp_path / "tiny", 8, 1)
    with caplog.at_level("WARNING", logger="dimdiff.data"):
        assert main(["train", *TINY, "data.name=folder", f"data.path={tiny}", "train.steps=1",
                     f"train.out_dir={tmp_path / 'r'}"]) == 0  # fmt: skip
    assert sum("8 of 8 images" in r.getMessage() and "they will look like blobs" in r.getMessage()
               for r in caplog.records) == 1  # fmt: skip
