"""The quantized patch codecs (VQ, PQ, OPQ, RQ): the properties of their math, each its own test.

The shared codec contract (shapes, per-example, state round trip) is in contracts/test_codec_contract.py;
here: torch's encoding equals faiss's for the same codebooks (so decode(encode(x)) has exactly the
quantizer's own error), codes in range, finer product splits reconstruct better, OPQ's rotation is
orthonormal, residual stages never raise the error, sorting relabels without changing any decoding and
brings neighbouring words together, the [-1, 1] code map round-trips, the bit counts, and a saved codec
loads and runs without faiss.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from dimdiff.codecs import OPQOptions, PQOptions, QuantizedCodec, RQOptions, VQOptions
from dimdiff.codecs.quantized import codes_to_unit, from_patches, to_patches, unit_to_codes
from dimdiff.codecs.quantizer import Quantizer, Structure, sort_codebook

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_images(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields in [-1, 1] (noise blurred at two scales), like natural image patches."""
    gen = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(n, channels, size // 4, size // 4, generator=gen), size=size, mode="bilinear",
                           align_corners=False)  # fmt: skip
    fine = F.avg_pool2d(torch.randn(n, channels, size, size, generator=gen), 3, 1, 1)
    return (0.5 * coarse + 0.3 * fine).clamp(-1, 1)


def fit(options: object, n: int = 64, channels: int = 3) -> QuantizedCodec:
    return options.build().fit(smooth_images(n, channels))


def patch_vectors(codec: QuantizedCodec, x: torch.Tensor) -> torch.Tensor:
    return to_patches(x, codec.options.patch_size).reshape(-1, x.shape[1] * codec.options.patch_size**2)


def test_patches_fold_back_exactly():
    x = torch.randn(2, 3, 8, 12)
    v = to_patches(x, 4)
    assert v.shape == (2, 2, 3, 48)
    assert torch.equal(v[1, 0, 2], x[1, :, 0:4, 8:12].reshape(-1))  # one patch, channel-row-column order
    assert torch.equal(from_patches(v, 3, 4), x)


@pytest.mark.parametrize("options", [VQOptions(patch_size=2, codebook_size=32),
                                     PQOptions(patch_size=4, num_codebooks=4, codebook_size=32),
                                     OPQOptions(patch_size=4, num_codebooks=4, codebook_size=32)],
                         ids=["vq", "pq", "opq"])  # fmt: skip
def test_product_codes_equal_faiss_and_the_round_trip_error_is_the_quantizers_own(options):
    codec = fit(options)
    x = smooth_images(8, seed=5)
    q, v = codec.quantizer, patch_vectors(codec, x)
    m, k, d = q.codebooks.shape
    pq = faiss.ProductQuantizer(m * d, m, int(k).bit_length() - 1)
    faiss.copy_array_to_vector(q.codebooks.numpy().ravel(), pq.centroids)
    u = v @ q.rotation.T if q.rotation is not None else v
    theirs = torch.from_numpy(pq.decode(pq.compute_codes(u.numpy())))  # faiss' reconstruction of R v
    ours = q.encode(v)
    assert ours.min() >= 0 and ours.max() < k
    ours_rotated = q.decode(ours) @ q.rotation.T if q.rotation is not None else q.decode(ours)
    torch.testing.assert_close(ours_rotated, theirs, rtol=1e-5, atol=1e-6)  # the same words (ties aside: none here)
    # the round trip's error is the quantizer's own, each sub-vector at its nearest word (R keeps norms); the
    # codec then clamps to [-1, 1], which can only bring a reconstruction closer to an image in range
    nearest = torch.cdist(u.reshape(-1, m, d).transpose(0, 1), q.codebooks).pow(2).min(-1).values.sum()
    torch.testing.assert_close((q.decode(ours) - v).pow(2).sum().double(), nearest.double(), rtol=1e-4, atol=1e-6)
    codec_error = (codec.decode(codec.encode(x)) - x).pow(2).sum()
    assert codec_error <= nearest * (1 + 1e-5)
    if options.rotated is False:  # words are means of patches in range: nothing is clamped
        torch.testing.assert_close(codec_error.double(), nearest.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_residual_codes_reconstruct_as_faiss_does_and_a_full_beam_is_the_exhaustive_search(beam_size):
    codec = fit(RQOptions(patch_size=2, num_codebooks=3, codebook_size=16, beam_size=beam_size))
    q, v = codec.quantizer, patch_vectors(codec, smooth_images(8, seed=5))
    rq = faiss.ResidualQuantizer(v.shape[1], 3, 4)
    faiss.copy_array_to_vector(q.codebooks.numpy().ravel(), rq.codebooks)
    rq.max_beam_size, rq.is_trained = beam_size, True
    theirs = torch.from_numpy(rq.decode(rq.compute_codes(v.numpy())))
    ours = q.decode(q.encode(v))
    torch.testing.assert_close((ours - v).pow(2).sum(1), (theirs - v).pow(2).sum(1), rtol=1e-4, atol=1e-5)
    exhaustive = Quantizer(Structure.RESIDUAL, q.codebooks, beam_size=16**3)
    best = exhaustive.decode(exhaustive.encode(v))
    sums = q.codebooks[0][:, None, None] + q.codebooks[1][None, :, None] + q.codebooks[2][None, None]  # (16,16,16,D)
    brute = torch.cdist(v, sums.reshape(-1, v.shape[1])).pow(2).min(1).values
    torch.testing.assert_close((best - v).pow(2).sum(1), brute, rtol=1e-4, atol=1e-5)


def test_codes_lie_in_range_and_the_latents_in_the_unit_interval():
    codec = fit(PQOptions(patch_size=2, num_codebooks=3, codebook_size=8))
    x = smooth_images(4, seed=3)
    y, z = codec.codes(x), codec.encode(x)
    assert y.dtype == torch.int64 and y.shape == (4, 3, 8, 8) and y.min() >= 0 and y.max() < 8
    assert z.min() >= -1 and z.max() <= 1 and torch.equal(unit_to_codes(z, 8), y)


@pytest.mark.parametrize("codebook_size", [2, 16, 256, 65536])
def test_the_unit_code_map_round_trips_exactly(codebook_size):
    y = torch.arange(codebook_size)
    z = codes_to_unit(y, codebook_size)
    assert z[0] == -1 and z[-1] == 1 and torch.equal(unit_to_codes(z, codebook_size), y)
    assert torch.equal(unit_to_codes(torch.tensor([-3.0, 7.0]), codebook_size), torch.tensor([0, codebook_size - 1]))
    with pytest.raises(ValueError, match="expected finite latents"):
        unit_to_codes(torch.tensor([0.0, float("nan")]), codebook_size)


def test_a_finer_product_split_reconstructs_better():
    held_out = smooth_images(16, seed=9)
    psnr = []
    for m in (2, 4, 8):  # nested: each sub-vector of the coarser split is two of the finer one
        codec = fit(PQOptions(patch_size=4, num_codebooks=m, codebook_size=32))
        mse = (codec.decode(codec.encode(held_out)) - held_out).pow(2).mean()
        psnr.append(10 * torch.log10(4 / mse).item())
    assert psnr[0] < psnr[1] < psnr[2], psnr
    assert VQOptions(patch_size=4, codebook_size=32).build().bits_per_pixel < PQOptions().build().bits_per_pixel


def test_the_opq_rotation_is_orthonormal():
    rotation = fit(OPQOptions(patch_size=4, num_codebooks=4, codebook_size=16)).quantizer.rotation
    assert rotation.shape == (48, 48)
    torch.testing.assert_close(rotation.double() @ rotation.double().T, torch.eye(48, dtype=torch.float64), atol=1e-5,
                               rtol=0)  # fmt: skip


@pytest.mark.parametrize("beam_size", [1, 4])
def test_residual_stages_never_raise_the_error(beam_size):
    codec = fit(RQOptions(patch_size=4, num_codebooks=4, codebook_size=16, beam_size=beam_size))
    errors = codec.quantizer.stage_errors(patch_vectors(codec, smooth_images(64)))
    assert (errors[1:] <= errors[:-1]).all() and errors[-1] < 0.5 * errors[0], errors


def consecutive_distance(codebooks: torch.Tensor) -> float:
    return (codebooks[:, 1:] - codebooks[:, :-1]).norm(dim=-1).mean().item()


@pytest.mark.parametrize("options", [VQOptions(patch_size=2, codebook_size=64),
                                     PQOptions(patch_size=4, num_codebooks=8, codebook_size=64),
                                     OPQOptions(patch_size=4, num_codebooks=8, codebook_size=64),
                                     RQOptions(patch_size=4, num_codebooks=4, codebook_size=64)],
                         ids=["vq", "pq", "opq", "rq"])  # fmt: skip
def test_sorting_relabels_without_changing_decoding_and_brings_neighbours_together(options):
    import dataclasses

    raw = fit(dataclasses.replace(options, sort=False))
    ordered, relabel = raw.quantizer.sorted()
    x = smooth_images(16, seed=4)
    codes = raw.codes(x)  # (B, M, gh, gw) in the unsorted labels
    new = relabel[torch.arange(relabel.shape[0])[None, :, None, None], codes]
    sorted_codec = QuantizedCodec(raw.options, ordered, raw.channels)
    assert torch.equal(sorted_codec.images(new), raw.images(codes))
    assert torch.equal(sorted_codec.codes(x), new)
    distance = consecutive_distance(ordered.codebooks) / consecutive_distance(raw.quantizer.codebooks)
    index_error = sorted_codec.index_error_mse(x) / raw.index_error_mse(x)
    print(f"{options.kind_name}: consecutive distance x{distance:.3f}, +-1 index error MSE x{index_error:.3f}")
    assert distance < 0.9 and index_error < 0.9
    if options.num_codebooks > 1 and options.structure is Structure.PRODUCT:  # short sub-vectors sort best
        assert distance < 0.6 and index_error < 0.4
    fitted_sorted = fit(options)  # sort = True at fit time gives the same codec
    assert torch.equal(fitted_sorted.quantizer.codebooks, ordered.codebooks)


def test_sorting_is_deterministic_in_sign_and_stable():
    words = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 0.0], [0.0, 0.0]])
    for flip in (1.0, -1.0):
        ordered, relabel = sort_codebook(words * flip)
        assert torch.equal(ordered[:, 1], torch.tensor([-1.0, 0.0, 0.0, 1.0]))
    _, relabel = sort_codebook(words)
    assert torch.equal(relabel, torch.tensor([3, 0, 1, 2]))  # the two equal words keep their order


def test_bits_per_pixel_and_compression_ratio():
    codec = PQOptions(patch_size=4, num_codebooks=8, codebook_size=256).build()
    assert codec.bits_per_pixel == 8 * 8 / 16  # M_q b_q / s_q^2
    assert codec.compression_ratio(3) == 24 * 16 / (8 * 8)  # 24 s_q^2 / (M_q b_q) against 24-bit RGB
    assert VQOptions(patch_size=8, codebook_size=256).build().compression_ratio(3) == 192  # 24 * 64 / 8
    assert RQOptions(patch_size=4, num_codebooks=2, codebook_size=16).build().compression_ratio(1) == 8 * 16 / 8


def test_a_saved_codec_loads_and_runs_without_faiss(monkeypatch):
    codec = fit(OPQOptions(patch_size=2, num_codebooks=3, codebook_size=8))
    x = smooth_images(3, seed=2)
    state = {k: v.clone() for k, v in codec.state().items()}
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails
    restored = OPQOptions(patch_size=2, num_codebooks=3, codebook_size=8).build().load_state(state)
    assert torch.equal(restored.encode(x), codec.encode(x)) and torch.equal(restored.decode(codec.encode(x)),
                                                                          codec.decode(codec.encode(x)))  # fmt: skip
    with pytest.raises(RuntimeError, match="needs faiss, which is not installed: pip install faiss-cpu"):
        PQOptions().build().fit(x)


def test_a_mismatched_or_corrupt_state_is_refused_with_what_was_expected():
    codec = fit(PQOptions(patch_size=2, num_codebooks=3, codebook_size=8))
    state = codec.state()
    with pytest.raises(ValueError, match=r"expected finite pq codebooks of shape \(6, 8, 2\).*got \(3, 8, 4\)"):
        PQOptions(patch_size=2, num_codebooks=6, codebook_size=8).build().load_state(state)
    bad = dict(state, codebooks=state["codebooks"].clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="expected finite pq codebooks"):
        PQOptions(patch_size=2, num_codebooks=3, codebook_size=8).build().load_state(bad)
    with pytest.raises(ValueError, match=r"expected opq codec state with tensors \['channels', 'codebooks', 'rot"):
        OPQOptions(patch_size=2, num_codebooks=3, codebook_size=8).build().load_state(state)
    skewed = fit(OPQOptions(patch_size=2, num_codebooks=3, codebook_size=8)).state()
    skewed["rotation"] = skewed["rotation"] * 2
    with pytest.raises(ValueError, match="expected an orthonormal 12 x 12 OPQ rotation"):
        OPQOptions(patch_size=2, num_codebooks=3, codebook_size=8).build().load_state(skewed)


def test_bad_images_and_options_get_clear_errors():
    from dimdiff.errors import ConfigError

    codec = fit(PQOptions(patch_size=4, num_codebooks=4, codebook_size=8))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\) for this codec, got \(2, 1, 16"):
        codec.encode(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible by codec.patch_size = 4, got 18 x 16"):
        codec.encode(torch.zeros(2, 3, 18, 16))
    with pytest.raises(ValueError, match=r"expected integer codes in \[0, 8\)"):
        codec.images(torch.full((1, 4, 2, 2), 8))
    with pytest.raises(ValueError, match="expected a fitted pq codec"):
        PQOptions().build().encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by codec.num_codebooks = 5"):
        PQOptions(patch_size=4, num_codebooks=5, codebook_size=8).build().fit(smooth_images(4))
    with pytest.raises(ConfigError, match="codec.codebook_size: expected a power of two"):
        PQOptions(codebook_size=100)
    with pytest.raises(ConfigError, match="codec.num_codebooks: expected 1 for vq"):
        VQOptions(num_codebooks=2)


def test_fitting_reports_progress_and_is_reproducible_from_the_seed():
    lines: list[str] = []
    a = PQOptions(patch_size=4, num_codebooks=4, codebook_size=16, seed=3).build().fit(smooth_images(32), lines.append)
    b = PQOptions(patch_size=4, num_codebooks=4, codebook_size=16, seed=3).build().fit(smooth_images(32))
    c = PQOptions(patch_size=4, num_codebooks=4, codebook_size=16, seed=4).build().fit(smooth_images(32))
    assert torch.equal(a.quantizer.codebooks, b.quantizer.codebooks)
    assert not torch.equal(a.quantizer.codebooks, c.quantizer.codebooks)
    assert lines[0].startswith("fitting the pq codec (s_q = 4, M_q = 4, K_q = 16) on 512 patches of 32 images")
    assert lines[-1].startswith("fitted the pq codec in")


def test_an_untrained_refiner_is_the_identity_and_a_fitted_one_removes_error_on_unseen_images():
    from dimdiff.codecs.refiner import Refiner

    x = smooth_images(4, seed=8)
    assert torch.equal(Refiner(3, 8, 3)(x), x)
    options = dict(patch_size=4, num_codebooks=2, codebook_size=16, iterations=5)
    lines: list[str] = []
    refined = PQOptions(**options, refiner_steps=150, refiner_width=16, refiner_depth=3).build().fit(
        smooth_images(64), progress=lines.append)  # fmt: skip
    raw = PQOptions(**options).build().fit(smooth_images(64))
    assert torch.equal(refined.quantizer.codebooks, raw.quantizer.codebooks)  # the refiner changes no codebook
    held_out = smooth_images(16, seed=11)
    z = refined.encode(held_out)
    error_raw = (refined.images(refined.codes(held_out), refine=False) - held_out).pow(2).mean()
    error_refined = (refined.decode(z) - held_out).pow(2).mean()
    assert error_refined < 0.9 * error_raw, (error_refined, error_raw)
    assert any(line.startswith("refiner step 150/150: mse") for line in lines)


def test_the_refiner_is_saved_in_the_state_and_a_mismatch_is_refused():
    options = dict(patch_size=2, num_codebooks=3, codebook_size=8, iterations=5)
    codec = fit(PQOptions(**options, refiner_steps=5, refiner_width=8, refiner_depth=2))
    state = codec.state()
    assert {k for k in state if k.startswith("refiner.")} == {"refiner.body.0.weight", "refiner.body.0.bias",
                                                               "refiner.body.2.weight", "refiner.body.2.bias"}
    x = smooth_images(2, seed=3)
    restored = PQOptions(**options, refiner_steps=5, refiner_width=8, refiner_depth=2).build().load_state(state)
    assert torch.equal(restored.decode(codec.encode(x)), codec.decode(codec.encode(x)))
    with pytest.raises(ValueError, match="expected no refiner in the pq codec state"):
        PQOptions(**options).build().load_state(state)
    with pytest.raises(ValueError, match="expected refiner tensors for codec.refiner_width = 16"):
        PQOptions(**options, refiner_steps=5, refiner_width=16, refiner_depth=2).build().load_state(state)
