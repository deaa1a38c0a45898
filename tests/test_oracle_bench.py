"""The oracle bench: exact denoisers of Gaussian images, the Frechet distance, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import GaussianData
from test_dimension_varying import dvdp_oracle
from test_samplers import oracle as gaussian_oracle

from dimdiff.bench.cli import main as bench_main
from dimdiff.bench.oracle import GaussianImages, frechet_gaussian, oracle_denoiser, stationary_images
from dimdiff.process.dimension_varying import DimensionVaryingProcess
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.stages import Stages, Window


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_images(data: GaussianData) -> GaussianImages:
    return GaussianImages(data.shape, data.mean, data.cov, torch.linalg.cholesky(data.cov))


def test_stationary_images_have_the_variance_a_shift_invariant_covariance_and_a_falling_spectrum():
    data = stationary_images((2, 8, 8), variance=0.3)
    d = 64
    torch.testing.assert_close(data.cov.diagonal(), torch.full((2 * d,), 0.3, dtype=torch.float64), atol=1e-8, rtol=0)
    assert torch.equal(data.cov[:d, d:], torch.zeros(d, d, dtype=torch.float64))  # channels independent
    assert torch.linalg.eigvalsh(data.cov).min() > 0
    single = data.cov[:d, :d].reshape(8, 8, 8, 8)
    torch.testing.assert_close(single[1, 2, 3, 5], single[4, 0, 6, 3], atol=1e-12, rtol=0)  # same offset (2, 3)
    assert single[0, 0, 0, 1] > single[0, 0, 0, 2] > single[0, 0, 0, 4] > 0  # neighbours correlate, less with distance
    x = data.sample(20_000, g(0))
    assert x.shape == (20_000, 2, 8, 8)
    torch.testing.assert_close(x.var(0), torch.full((2, 8, 8), 0.3, dtype=torch.float64), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="variance > 0"):
        stationary_images((1, 4, 4), variance=0.0)


def test_frechet_distance_of_samples_against_the_closed_form():
    d = 16
    mean, cov = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    x = math.sqrt(2.0) * torch.randn(200_000, d, generator=g(0), dtype=torch.float64) + 0.5
    expected = d * 0.25 + d * (3.0 - 2.0 * math.sqrt(2.0))  # |mu|^2 + tr(2I + I - 2 sqrt(2) I)
    assert abs(frechet_gaussian(x, mean, cov) - expected) < 0.02
    assert abs(frechet_gaussian(torch.randn(200_000, d, generator=g(1), dtype=torch.float64), mean, cov)) < 0.01


def test_the_oracle_of_the_gaussian_process_is_the_closed_form_posterior_mean():
    data = GaussianData((1, 4, 4), seed=1)
    process = GaussianProcess((1, 4, 4))
    ours, reference = oracle_denoiser(process, as_images(data)), gaussian_oracle(data, process)
    for t in (0.05, 0.5, 0.95):
        x_t = torch.randn(5, 1, 4, 4, generator=g(2), dtype=torch.float64)
        tt = torch.full((5,), t, dtype=torch.float64)
        torch.testing.assert_close(ours(x_t, tt), reference(x_t, tt), atol=1e-9, rtol=0)


@pytest.mark.parametrize("t", [0.1, 0.25, 0.45, 0.8])  # stage 0 (in and out of a window), 1 and 2
def test_the_oracle_of_dvdp_matches_the_one_built_from_explicit_components(t):
    data = GaussianData((1, 8, 8), seed=2)
    process = DimensionVaryingProcess((1, 8, 8), Stages((0.3, 0.6), (0.2, 0.2), window=Window.COSINE))
    ours, reference = oracle_denoiser(process, as_images(data)), dvdp_oracle(process, data)
    z_t = torch.randn((4, *process.shape_at(t)), generator=g(3), dtype=torch.float64)
    tt = torch.full((4,), t, dtype=torch.float64)
    torch.testing.assert_close(ours(z_t, tt), reference(z_t, tt), atol=1e-9, rtol=0)


def test_oracle_bench_from_the_cli(tmp_path: Path):
    argv = ["oracle", "--steps", "4,40", "--samples", "3000", "--methods", "dvdp-ddim", "--out", str(tmp_path),
            "data.resolution=8"]  # fmt: skip
    assert bench_main(argv) == 0
    result = json.loads((tmp_path / "oracle.json").read_text())
    rows = {(r["key"], r["steps"]): r for r in result["rows"]}
    assert set(rows) == {(k, n) for k in ("ddim", "dvdp-ddim") for n in (4, 40)}
    assert rows[("ddim", 4)]["excess_ratio_to_ddim"] == pytest.approx(1.0)
    for key in ("ddim", "dvdp-ddim"):  # more steps, less discretisation error, down towards the floor
        assert rows[(key, 40)]["frechet"] < 0.5 * rows[(key, 4)]["frechet"]
    assert 0 < result["floor"] < rows[("ddim", 40)]["frechet"]
    assert "| DVDP DDIM (tau 0.3/0.6) | 40 |" in (tmp_path / "oracle.md").read_text()


def test_oracle_bench_refuses_cuda(capsys):
    assert bench_main(["oracle", "--device", "cuda", "--samples", "10"]) == 2
    assert "the oracle bench solves float64 systems on the CPU" in capsys.readouterr().err
