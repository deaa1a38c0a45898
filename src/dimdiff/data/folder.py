"""`folder`: image files under a folder, searched recursively, decoded lazily.

Files: extensions in IMAGE_EXTENSIONS (case-insensitive), sorted by their path relative to
the folder so the order is the same on every machine. Names starting with "." (hidden
files and folders, such as macOS "._x.png" resource forks) are not listed. Symbolic links
to folders are not followed.

Each item: decoded with PIL (EXIF orientation applied), converted to RGB or grey
(16-bit grey rescaled, alpha dropped), centre-cropped to a square and resized to
`resolution` (PIL bicubic). A file that cannot be decoded raises DataError naming it; with
`skip_bad_files=True` every file is checked once at construction instead and the bad ones
are left out and listed in `skipped`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image, ImageOps

from .base import ImageDataset
from .errors import DataError
from .transforms import check_channels, check_resolution, fit_pil_image, report_upscaled

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

log = logging.getLogger(__name__)


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursive, no hidden entries), sorted by relative path."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [
            Path(folder, name) for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def open_image(path: Path, resolution: int | None = None) -> Image.Image:
    """Decode a file fully; any failure becomes DataError("cannot decode <path>: ...").

    With `resolution`, JPEG files may be decoded at a reduced scale that still leaves at least
    twice `resolution` pixels on each side (PIL's draft mode), which is much faster.
    """
    try:
        with Image.open(path) as image:
            if resolution is not None:
                image.draft(None, (2 * resolution, 2 * resolution))
            image.load()
            return ImageOps.exif_transpose(image)
    except Exception as err:  # PIL reports corrupt data with many exception types
        raise DataError(f"cannot decode {path}: {type(err).__name__}: {err}") from err


def check_image(path: Path) -> None:
    """Raise DataError unless `path` passes PIL's integrity check and decodes fully."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # PIL reports corrupt data with many exception types
        raise DataError(f"cannot decode {path}: {type(err).__name__}: {err}") from err
    open_image(path)


class FolderDataset(ImageDataset):
    """Images from a folder; `paths[i]` is the file behind item i."""

    def __init__(
        self,
        root: str | os.PathLike[str],     # folder to search recursively
        *,
        resolution: int = 32,             # output height and width
        channels: int | None = None,      # 3 (RGB, the default) or 1 (grey)
        skip_bad_files: bool = False,     # check every file now and leave out bad ones
    ) -> None:
        check_resolution(resolution)
        check_channels(channels)
        root = Path(root)
        if not root.exists():
            raise DataError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise DataError(f"expected a folder of images, got the file {root}")
        paths, skipped = list_images(root), []
        if not paths:
            raise DataError(
                f"no images found in {root} (searched recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)}, any letter case)"
            )
        if skip_bad_files:
            paths, skipped = _drop_bad_files(paths)
            if not paths:
                raise DataError(f"no decodable images in {root}: all {len(skipped)} failed")
        super().__init__(
            name="folder", channels=channels or 3, resolution=resolution, skipped=skipped
        )
        self.root = root
        self.paths = paths
        report_upscaled(_square_sides(paths), resolution, str(root))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = open_image(self.paths[index], self.resolution)
        return fit_pil_image(image, self.resolution, self.channels)   # (C, R, R)


def _square_sides(paths: list[Path]) -> list[int]:
    """The side of the square each file is cropped to, min(width, height), read from its header alone;
    a file whose header does not open is left out (decoding it names it)."""
    sides = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # PIL reports unreadable files with many exception types
            continue
    return sides


def _drop_bad_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Split `paths` into the files that decode and the (string) paths that do not."""
    good, bad = [], []
    for path in paths:
        try:
            check_image(path)
            good.append(path)
        except DataError as err:
            log.warning("skipping %s", err)
            bad.append(str(path))
    if bad:
        log.warning("skipped %d of %d image files that cannot be decoded", len(bad), len(paths))
    return good, bad
