"""Datasets: shapes, value ranges, splits, determinism and clear errors."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dimdiff.data import (
    DataError,
    DatasetName,
    FolderDataset,
    ImageDataset,
    Split,
    TensorImageDataset,
    available_photographs,
    load_dataset,
)
from dimdiff.data.cifar import TEST_BATCHES, TRAIN_BATCHES
from dimdiff.data.digits import digits_test_mask
from dimdiff.data.patches import split_columns


def assert_images(dataset: ImageDataset, n: int, channels: int, resolution: int) -> None:
    assert isinstance(dataset, ImageDataset)
    assert len(dataset) == n
    assert (dataset.channels, dataset.resolution) == (channels, resolution)
    x = dataset.to_tensor()
    assert x.shape == (n, channels, resolution, resolution)
    assert x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert dataset[0].shape == (channels, resolution, resolution)


# ----------------------------------------------------------------------------- digits


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_digits_shapes_range_and_split_sizes(resolution: int) -> None:
    train = load_dataset(DatasetName.DIGITS, resolution=resolution)
    test = load_dataset(DatasetName.DIGITS, resolution=resolution, split=Split.TEST)
    assert_images(train, 1497, 1, resolution)
    assert_images(test, 300, 1, resolution)
    assert isinstance(train, TensorImageDataset)
    assert train.tensor.min() == -1.0 and train.tensor.max() == 1.0
    assert train.labels is not None and train.labels.shape == (1497,)
    assert test.labels is not None and set(test.labels.tolist()) == set(range(10))


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    everything = load_dataset("digits", split="all", resolution=8)
    assert len(everything) == 1797
    mask = torch.from_numpy(digits_test_mask(everything.labels.numpy()))
    test = load_dataset("digits", split="test", resolution=8, seed=123)
    train = load_dataset("digits", split="train", resolution=8, seed=7)
    assert torch.equal(test.tensor, everything.tensor[mask])
    assert torch.equal(train.tensor, everything.tensor[~mask])
    assert torch.equal(train.labels, everything.labels[~mask])
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 31


def test_digits_values_and_channels() -> None:
    native = load_dataset("digits", resolution=8, split="all")
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images).float()
    assert torch.allclose(native.tensor[:, 0], raw / 16 * 2 - 1)
    rgb = load_dataset("digits", resolution=16, channels=3)
    assert rgb.tensor.shape[1] == 3
    assert torch.equal(rgb.tensor[:, 0], rgb.tensor[:, 2])


def test_digits_bad_resolution() -> None:
    with pytest.raises(DataError, match=r"expected resolution in \{8, 16, 32\} for digits, got 24"):
        load_dataset("digits", resolution=24)


# ---------------------------------------------------------------------------- patches


def test_patches_shapes_range_and_photographs() -> None:
    assert len(available_photographs()) >= 3
    patches = load_dataset("patches", num_patches=64, resolution=16)
    assert_images(patches, 64, 3, 16)
    assert patches.labels is None
    grey = load_dataset("patches", num_patches=64, resolution=16, channels=1)
    assert_images(grey, 64, 1, 16)
    assert torch.allclose(
        grey.tensor[:, 0], (patches.tensor * torch.tensor([0.299, 0.587, 0.114])[:, None, None])
        .sum(1), atol=1e-5,
    )


def test_patches_determinism_per_seed() -> None:
    a = load_dataset("patches", num_patches=32, resolution=16, seed=1)
    b = load_dataset("patches", num_patches=32, resolution=16, seed=1)
    c = load_dataset("patches", num_patches=32, resolution=16, seed=2)
    assert torch.equal(a.tensor, b.tensor)
    assert not torch.equal(a.tensor, c.tensor)
    test_1 = load_dataset("patches", num_patches=32, resolution=16, split="test", seed=1)
    test_2 = load_dataset("patches", num_patches=32, resolution=16, split="test", seed=2)
    assert torch.equal(test_1.tensor, test_2.tensor)


def test_patches_train_and_test_never_share_pixels() -> None:
    train = load_dataset("patches", num_patches=500, resolution=32)
    test = load_dataset("patches", num_patches=500, resolution=32, split="test")
    widths = {}
    import skimage.data

    for name in train.sources:
        image = getattr(skimage.data, name)()
        widths[name] = (image[0] if isinstance(image, tuple) else image).shape[1]
    for dataset, split in ((train, Split.TRAIN), (test, Split.TEST)):
        for photo, _, left, window in dataset.boxes.tolist():
            start, stop = split_columns(widths[dataset.sources[photo]], split)
            assert start <= left and left + window <= stop
        assert dataset.boxes[:, 3].min() >= 32
    assert train.boxes[:, 3].max() > 64   # several scales, not only native crops


# ----------------------------------------------------------------------------- folder


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    save(tmp_path / "a.png", rgb)
    save(tmp_path / "b.JPG", rgb, quality=90)
    save(tmp_path / "nested" / "deeper" / "c.jpeg", rgb)
    save(tmp_path / "grey.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, 10:20] = (0, 255, 0)          # the centre square is pure green
    save(tmp_path / "wide.bmp", wide)
    save(tmp_path / "rgba.webp", rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), lossless=True)
    save(tmp_path / "deep16.png", np.full((8, 8), 65535, dtype=np.uint16))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    return tmp_path


def test_folder_loads_every_kind_of_image(image_folder: Path) -> None:
    rgb = load_dataset("folder", path=image_folder, resolution=8)
    names = [path.relative_to(image_folder).as_posix() for path in rgb.paths]
    assert names == [
        "a.png", "b.JPG", "deep16.png", "grey.png", "nested/deeper/c.jpeg", "rgba.webp", "wide.bmp"
    ]
    assert_images(rgb, 7, 3, 8)
    assert rgb.skipped == [] and rgb.labels is None
    green = rgb[names.index("wide.bmp")]
    assert torch.allclose(green, torch.tensor([-1.0, 1.0, -1.0])[:, None, None], atol=0.02)
    assert torch.allclose(rgb[names.index("deep16.png")], torch.ones(3, 8, 8))
    grey = load_dataset("folder", path=str(image_folder), resolution=12, channels=1)
    assert_images(grey, 7, 1, 12)


def test_folder_corrupt_file_is_named(image_folder: Path) -> None:
    bad = image_folder / "sub" / "zz_bad.png"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(256))
    dataset = FolderDataset(image_folder, resolution=8)
    assert len(dataset) == 8
    with pytest.raises(DataError, match=r"cannot decode .*zz_bad\.png"):
        dataset[dataset.paths.index(bad)]
    skipping = load_dataset("folder", path=image_folder, resolution=8, skip_bad_files=True)
    assert len(skipping) == 7
    assert skipping.skipped == [str(bad)]


def test_folder_truncated_file_is_skipped(image_folder: Path) -> None:
    data = (image_folder / "a.png").read_bytes()
    (image_folder / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot decode .*cut\.png"):
        FolderDataset(image_folder, resolution=8)[2]
    skipping = FolderDataset(image_folder, resolution=8, skip_bad_files=True)
    assert [Path(p).name for p in skipping.skipped] == ["cut.png"]


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images found in .*empty.*\.png, \.jpg"):
        load_dataset("folder", path=tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing.* does not exist"):
        load_dataset("folder", path=tmp_path / "missing")
    with pytest.raises(DataError, match="expected a folder"):
        load_dataset("folder", path=tmp_path / "empty" / "readme.txt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(DataError, match="no decodable images"):
        load_dataset("folder", path=tmp_path / "bad", skip_bad_files=True)
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("folder")


# ---------------------------------------------------------------------------- cifar10


def cifar_batch(n: int, first_label: int) -> tuple[bytes, np.ndarray]:
    data = np.zeros((n, 3072), dtype=np.uint8)
    data[:, :1024] = 255                   # every image pure red
    data[:, 1024 + 31] = 255               # green at row 0, column 31
    labels = [(first_label + i) % 10 for i in range(n)]
    batch = {b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": [b"x"] * n}
    return pickle.dumps(batch, protocol=2), np.array(labels)


def write_cifar(root: Path, archive: bool, leave_out: str | None = None) -> Path:
    files = {name: cifar_batch(3, i)[0] for i, name in enumerate(TRAIN_BATCHES + TEST_BATCHES)}
    files = {name: data for name, data in files.items() if name != leave_out}
    if archive:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_loads_archive_and_folder(tmp_path: Path, archive: bool) -> None:
    path = write_cifar(tmp_path, archive)
    for where in (path, tmp_path):              # the archive/folder itself, or its parent
        train = load_dataset("cifar10", path=where)
        assert_images(train, 15, 3, 32)
        assert train.labels.tolist() == [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4, 5, 4, 5, 6]
        image = train[0]
        assert torch.all(image[0] == 1.0) and image[1, 0, 31] == 1.0 and image[1, 0, 30] == -1.0
        assert torch.all(image[2] == -1.0)
    test = load_dataset("cifar10", path=path, split="test", resolution=16, channels=1)
    assert_images(test, 3, 1, 16)
    assert test.labels.tolist() == [5, 6, 7]
    assert len(load_dataset("cifar10", path=path, split="all")) == 18


@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_missing_batch_is_named(tmp_path: Path, archive: bool) -> None:
    path = write_cifar(tmp_path, archive, leave_out="data_batch_3")
    with pytest.raises(DataError, match=r"data_batch_3 is missing from .*cifar-10"):
        load_dataset("cifar10", path=path)
    assert len(load_dataset("cifar10", path=path, split="test")) == 3


def test_cifar10_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="found none of them"):
        load_dataset("cifar10", path=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", path=tmp_path / "cifar-10-python.tar.gz")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="cannot read archive"):
        load_dataset("cifar10", path=tmp_path / "broken.tar.gz")


def test_cifar10_refuses_foreign_pickles(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path, archive=False)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Path("x")}))
    with pytest.raises(DataError, match="cannot read CIFAR-10 batch .*test_batch"):
        load_dataset("cifar10", path=folder, split="test")


# -------------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((5, 12, 12), 1), ((5, 12, 12, 3), 3), ((5, 12, 12, 1), 1), ((5, 3, 12, 12), 3),
     ((5, 1, 12, 12), 1)],
)
def test_npz_layouts(tmp_path: Path, shape: tuple[int, ...], channels: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images, other=np.zeros(3))
    dataset = load_dataset("npz", path=tmp_path / "x.npz", resolution=12)
    assert_images(dataset, 5, channels, 12)
    nchw = images.transpose(0, 3, 1, 2) if shape[-1] in (1, 3) else images.reshape(5, -1, 12, 12)
    expected = torch.from_numpy(nchw.astype(np.float32)) / 127.5 - 1
    assert torch.allclose(dataset.tensor, expected, atol=1e-6)


def test_npz_dtypes_and_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    unit = rng.random((4, 16, 24, 3)).astype(np.float32)         # [0, 1], non-square
    unit[0, 0, 4] = 0.0
    np.savez(tmp_path / "unit.npz", unit)                         # the only array: any key
    dataset = load_dataset("npz", path=tmp_path / "unit.npz", resolution=16)
    assert_images(dataset, 4, 3, 16)
    cropped = torch.from_numpy(unit[:, :, 4:20]).permute(0, 3, 1, 2) * 2 - 1
    assert torch.allclose(dataset.tensor, cropped, atol=1e-6)
    signed = (unit.astype(np.float64) * 2 - 1)                    # [-1, 1], float64
    np.savez(tmp_path / "signed.npz", images=signed)
    same = load_dataset("npz", path=tmp_path / "signed.npz", resolution=16)
    assert torch.allclose(same.tensor, dataset.tensor, atol=1e-6)
    small = load_dataset("npz", path=tmp_path / "signed.npz", resolution=8, channels=1)
    assert_images(small, 4, 1, 8)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5, 6, 7), np.uint8), r"got shape \(4, 5, 6, 7\)"),
        (np.zeros((4, 3, 8, 3), np.uint8), "ambiguous"),
        (np.zeros((8, 8), np.uint8), r"\(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)"),
        (np.full((2, 8, 8), 255.0), r"in \[0, 1\] or \[-1, 1\], got values in \[255, 255\]"),
        (np.zeros((2, 8, 8), np.int32), "expected uint8 or float images, got dtype int32"),
    ],
)
def test_npz_bad_input(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "bad.npz", images=array)
    with pytest.raises(DataError, match=message):
        load_dataset("npz", path=tmp_path / "bad.npz")


def test_npz_file_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 4, 4)), b=np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match=r"expected an array named 'images'.*\['a', 'b'\]"):
        load_dataset("npz", path=tmp_path / "two.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", path=tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk.npz is not a NumPy .npz archive.*got a text file"):
        load_dataset("npz", path=tmp_path / "junk.npz")


# ------------------------------------------------------------------------ load_dataset


def test_load_dataset_argument_errors() -> None:
    with pytest.raises(DataError, match=r"expected dataset in \{digits, patches"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"expected split in \{train, test, all\}, got 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(DataError, match="expected channels"):
        load_dataset("digits", channels=2)
    with pytest.raises(DataError, match="takes no path"):
        load_dataset("digits", path="somewhere")
    with pytest.raises(DataError, match="expected an integer resolution"):
        load_dataset("patches", resolution=0)
