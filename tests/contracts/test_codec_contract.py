"""The contract every codec in dimdiff must pass, checked through the `Codec` protocol alone.

Every test is parametrised over ``CODEC_CASES``: a new codec gets the suite by adding one line (a
fitted codec, built by its options as a config would, and the images it must handle). Checked: the
latent shape it declares is the one it produces; encode and decode work per example (no mixing
across the batch); decoded images lie in [-1, 1]; decode then encode gives the latents back (a codec
is a projection onto what it can represent; a residual quantizer's search or a refined decode, which are
not, must represent the codec's own output at least as well as the data); fitting is deterministic and
leaves nothing to fit; the state is a flat dict of tensors that survives a safetensors file and restores
the same maps into a fresh codec; a state from another codec is refused with a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file, save_file

from contracts.throwaway_codec import StandardiseOptions
from dimdiff.codecs import Codec, OPQOptions, PixelOptions, PQOptions, RQOptions, VQOptions

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread (conftest)


class Case(NamedTuple):
    id: str
    options: Callable[[], object]  # the kind's options (as a config builds them); .build() gives the codec
    image_shape: tuple[int, int, int]  # (C, H, W) of the images it must handle
    projection: bool = True  # encode(decode(z)) == z; False where encoding is a search that may find other codes


CODEC_CASES: list[Case] = [
    Case("pixel-gray", PixelOptions, (1, 8, 8)),
    Case("pixel-rgb", PixelOptions, (3, 8, 12)),
    Case("throwaway-standardise-2", lambda: StandardiseOptions(2), (3, 8, 8)),
    Case("throwaway-standardise-4", lambda: StandardiseOptions(4), (1, 16, 8)),
    Case("vq-gray", lambda: VQOptions(patch_size=2, codebook_size=16, iterations=5), (1, 8, 8)),
    Case("pq-rgb", lambda: PQOptions(patch_size=2, num_codebooks=3, codebook_size=16, iterations=5), (3, 8, 12)),
    Case("opq-rgb", lambda: OPQOptions(patch_size=2, num_codebooks=2, codebook_size=8, iterations=5), (3, 8, 8)),
    Case("rq-gray", lambda: RQOptions(patch_size=4, num_codebooks=3, codebook_size=16, iterations=5), (1, 16, 8),
         projection=False),
    Case("rq-beam", lambda: RQOptions(patch_size=2, num_codebooks=2, codebook_size=8, beam_size=3), (3, 8, 8),
         projection=False),
    Case("pq-refiner", lambda: PQOptions(patch_size=2, num_codebooks=3, codebook_size=8, refiner_steps=10,
                                         refiner_width=8, refiner_depth=3), (3, 8, 8), projection=False),
]
CASES = pytest.mark.parametrize("case", CODEC_CASES, ids=[c.id for c in CODEC_CASES])


def images(case: Case, n: int, seed: int = 0) -> torch.Tensor:
    """n images in [-1, 1] of the case's shape, with structure at every scale (a smooth ramp plus noise)."""
    c, h, w = case.image_shape
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.6, 0.6, w).expand(n, c, h, w)
    return (ramp + 0.3 * torch.randn(n, c, h, w, generator=gen)).clamp(-1, 1)


def fitted(case: Case) -> Codec:
    codec = case.options().build()
    return codec.fit(images(case, 32, seed=1)) if codec.needs_fit else codec


@CASES
def test_latents_have_the_declared_shape_and_decode_to_images_in_range(case):
    codec, x = fitted(case), images(case, 5)
    z = codec.encode(x)
    assert z.shape == (5, *codec.latent_shape(case.image_shape)) and torch.isfinite(z).all()
    y = codec.decode(z)
    assert y.shape == x.shape and y.min() >= -1.0 and y.max() <= 1.0


@CASES
def test_encode_and_decode_work_per_example(case):
    codec, x = fitted(case), images(case, 4)
    z = codec.encode(x)
    for i in range(len(x)):
        torch.testing.assert_close(codec.encode(x[i : i + 1]), z[i : i + 1])
        torch.testing.assert_close(codec.decode(z[i : i + 1]), codec.decode(z)[i : i + 1])


@CASES
def test_decode_then_encode_gives_the_latents_back(case):
    codec, x = fitted(case), images(case, 4)
    z = codec.encode(x)
    if case.projection:
        torch.testing.assert_close(codec.encode(codec.decode(z)), z, atol=1e-5, rtol=1e-5)
    else:  # a residual search (or a refiner) may lead to other codes for a decoded patch, as good for it
        y = codec.decode(z)
        assert (codec.decode(codec.encode(y)) - y).pow(2).mean() <= (y - x).pow(2).mean()


@CASES
def test_fitting_is_deterministic_and_leaves_nothing_to_fit(case):
    a, b = fitted(case), fitted(case)
    assert not a.needs_fit
    assert a.state().keys() == b.state().keys()
    for key, value in a.state().items():
        assert torch.equal(value, b.state()[key]), key


@CASES
def test_the_state_survives_a_safetensors_file_and_restores_the_same_maps(case, tmp_path):
    codec, x = fitted(case), images(case, 3)
    state = codec.state()
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if state:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "codec.safetensors"))
        state = load_file(str(tmp_path / "codec.safetensors"))
    restored = case.options().build().load_state(state)
    assert not restored.needs_fit
    torch.testing.assert_close(restored.encode(x), codec.encode(x), atol=0, rtol=0)
    z = codec.encode(x)
    torch.testing.assert_close(restored.decode(z), codec.decode(z), atol=0, rtol=0)


@CASES
def test_a_state_from_another_codec_is_refused(case):
    with pytest.raises(ValueError, match="expected"):
        case.options().build().load_state({"codebook_from_elsewhere": torch.zeros(4, 2)})
