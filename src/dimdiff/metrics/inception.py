"""Inception-v3 as used for FID in papers: pool3 features (2048-d) of the TF "2015-12-05" graph.

The weights are the Apache-2.0 state dict `pt_inception-2015-12-05-6726825d.pth` that
pytorch-fid publishes (a port of TensorFlow's `inception-2015-12-05.tgz`, the network of the
original FID code). They cannot be downloaded here: the user passes the file and
`load_fid_inception` checks its sha256 and loads it strictly. Module and parameter names
mirror torchvision's `Inception3` (aux head removed, 1008-way fc), so the file's keys
(`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ..., `fc.bias`) fit as they are.

Where this graph differs from torchvision's Inception-v3 (pytorch-fid's FIDInception* blocks):
    - the pool branches of Mixed_5b-5d (A), Mixed_6b-6e (C) and Mixed_7b (E) average with
      `count_include_pad=False` (TensorFlow does not count the zero padding),
    - the pool branch of Mixed_7c (the last E block) is a 3x3 max pool, not an average pool,
    - the classifier has 1008 classes; the pool3 features do not use it.
Input: (N, 3 or 1, H, W) in [-1, 1] (grey is repeated to 3 channels), resized to 299x299
bilinearly with `align_corners=False` as pytorch-fid does. pytorch-fid takes [0, 1] and maps it
to 2x - 1; here images are already in [-1, 1], which is the same network input.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FID_WEIGHTS_FILENAME", "FID_WEIGHTS_SHA256", "FID_WEIGHTS_URL", "FeatureNetworkError", "FIDInceptionV3",
    "INCEPTION_WEIGHTS_ENV", "file_sha256", "load_fid_inception",
]  # fmt: skip

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILENAME}"
# sha256 of the published file (95,628,359 bytes); the filename carries its first 8 hex digits.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_WEIGHTS_ENV = "DIMDIFF_INCEPTION_WEIGHTS"
INCEPTION_RESOLUTION = 299  # the network's input size
POOL3_DIM = 2048            # width of the pool3 features
NUM_CLASSES = 1008          # the TF graph's classifier (1000 ImageNet classes + 8 unused)

PoolKind = Literal["avg", "max"]


class FeatureNetworkError(ValueError):
    """A feature network's weights are missing, corrupt or do not fit, or its input is malformed."""


def weights_hint() -> str:
    """Which file to obtain and where to put it, appended to every missing-weights error."""
    return (
        f"FID needs the Inception weights file {FID_WEIGHTS_FILENAME} (95.6 MB, Apache-2.0) from the "
        f"pytorch-fid GitHub releases (release 'fid_weights', published with pytorch-fid v0.1.0): "
        f"{FID_WEIGHTS_URL} . Download it on a machine with network access, then pass "
        f"--inception-weights PATH or set {INCEPTION_WEIGHTS_ENV}=PATH"
    )


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as TF) -> ReLU; torchvision's `BasicConv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool_3x3_same(x: Tensor, kind: PoolKind) -> Tensor:
    """Stride-1 3x3 pool of the pool branches; the average ignores the zero padding as TF does."""
    if kind == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)                                                      # (N, 64, H, W)
        b5 = self.branch5x5_2(self.branch5x5_1(x))                                  # (N, 64, H, W)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))       # (N, 96, H, W)
        bp = self.branch_pool(pool_3x3_same(x, "avg"))                              # (N, pool_features, H, W)
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)                                                      # (N, 384, H', W')
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))       # (N, 96, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)                               # (N, C_in, H', W')
        return torch.cat([b3, bd, bp], dim=1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b-6e) with factorised 7x7 convolutions of width `channels_7x7`."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)                                                      # (N, 192, H, W)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))                # (N, 192, H, W)
        bd = self.branch7x7dbl_1(x)                                                 # (N, c7, H, W)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))                           # (N, c7, H, W)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))                           # (N, 192, H, W)
        bp = self.branch_pool(pool_3x3_same(x, "avg"))                              # (N, 192, H, W)
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))                                  # (N, 320, H', W')
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))                              # (N, 192, H, W)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))                             # (N, 192, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)                               # (N, C_in, H', W')
        return torch.cat([b3, b7, bp], dim=1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, 7c) with split 1x3 / 3x1 outputs; `pool` is the pool branch's kind."""

    def __init__(self, in_channels: int, pool: PoolKind) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)                                                      # (N, 320, H, W)
        b3 = self.branch3x3_1(x)                                                    # (N, 384, H, W)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)       # (N, 768, H, W)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))                            # (N, 384, H, W)
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)  # (N, 768, H, W)
        bp = self.branch_pool(pool_3x3_same(x, self.pool))                          # (N, 192, H, W)
        return torch.cat([b1, b3, bd, bp], dim=1)                                   # (N, 2048, H, W)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3; `forward` gives pool3 features (N, 2048) of images in [-1, 1].

    Freshly built it is randomly initialised; `load_fid_inception` gives the real network.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(POOL3_DIM, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)                                                         # (N, 3, 299, 299)
        x = self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))                               # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)                                                   # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                               # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                                # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))                          # (N, 288, 35, 35)
        x = self.Mixed_6a(x)                                                        # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))           # (N, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))                          # (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))                                                   # (N, 2048) pool3

    def logits(self, x: Tensor) -> Tensor:
        """1008-way classifier logits (for the Inception Score); not part of the FID features."""
        return self.fc(self(x))                                                     # (N, 1008)

    @staticmethod
    def prepare(x: Tensor) -> Tensor:
        """Check (N, 1 or 3, H, W) floats, repeat grey to RGB, resize to 299x299 (bilinear)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise FeatureNetworkError(f"expected images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise FeatureNetworkError(f"expected float images in [-1, 1], got dtype {x.dtype}")
        x = x.expand(-1, 3, -1, -1)                                                 # (N, 3, H, W)
        size = (INCEPTION_RESOLUTION, INCEPTION_RESOLUTION)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)    # (N, 3, 299, 299)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights_path(path: str | os.PathLike[str] | None) -> Path:
    """The weights path from the argument, else from $DIMDIFF_INCEPTION_WEIGHTS; it must be a file."""
    source = "given"
    if path is None or str(path) == "":
        path, source = os.environ.get(INCEPTION_WEIGHTS_ENV, ""), f"from ${INCEPTION_WEIGHTS_ENV}"
    if str(path) == "":
        raise FeatureNetworkError(f"no Inception weights file given. {weights_hint()}")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FeatureNetworkError(f"Inception weights file {resolved} ({source}) does not exist. {weights_hint()}")
    return resolved


def load_fid_inception(
    path: str | os.PathLike[str] | None = None,  # weights file; None: $DIMDIFF_INCEPTION_WEIGHTS
    *,
    expected_sha256: str = FID_WEIGHTS_SHA256,   # digest the file must have (tests pass their own)
) -> FIDInceptionV3:
    """The FID Inception with the pytorch-fid weights, in eval mode and without gradients.

    The file's sha256 is checked before it is read; it is loaded with `weights_only=True` and
    `strict=True`. Every failure is a FeatureNetworkError that says what was expected.
    """
    path = resolve_weights_path(path)
    received = file_sha256(path)
    if received != expected_sha256.lower():
        raise FeatureNetworkError(
            f"Inception weights file {path} has sha256 {received}, expected {expected_sha256.lower()} "
            f"(the published {FID_WEIGHTS_FILENAME}). {weights_hint()}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: report it with its name
        raise FeatureNetworkError(f"cannot read Inception weights {path}: {error}") from error
    if not isinstance(state, dict):
        raise FeatureNetworkError(f"expected a state dict in {path}, got {type(state).__name__}")
    model = FIDInceptionV3()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FeatureNetworkError(f"Inception weights {path} do not fit FIDInceptionV3: {error}") from error
    return model.eval().requires_grad_(False)
