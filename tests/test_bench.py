"""The benchmark harness: registry, sampling and training costs (FLOP counting checked against
one network forward), the diffusers peer, result files, the CLI, and a tiny quality run."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dimdiff
from dimdiff.bench import training
from dimdiff.bench.cli import add_bench_parser, run_bench
from dimdiff.bench.oracle import OracleRow
from dimdiff.bench.peer import MISSING_NOTE
from dimdiff.bench.quality import QualityRow, headline_metric
from dimdiff.bench.registry import (
    REFERENCE_KEY,
    available_methods,
    reference_method,
    select_methods,
    training_groups,
    unregistered_kinds,
)
from dimdiff.bench.sampling import PEER_KEY, SamplingOptions, SamplingRow, sampling_bench
from dimdiff.bench.timing import count_flops, peak_memory_mb
from dimdiff.bench.training import TrainingOptions, TrainingRow, training_bench
from dimdiff.build import build_head, build_net, build_process
from dimdiff.config import ConfigError, NetLayout, ProcessKind, SamplerKind, config_from_dict
from dimdiff.train.loop import train

TINY = {
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4]},
    "data": {"name": "digits", "resolution": 8, "channels": 1},
    "sample": {"steps": 3},
}
TINY_OVERRIDES = ["model.base_channels=8", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
                  "model.attention_resolutions=[4]", "data.resolution=8", "data.channels=1"]  # fmt: skip
SAMPLING_KEYS = ("time_per_image_s", "flops_per_image", "nfe", "peak_memory_mb", "time_ratio_to_ddim")


@pytest.fixture(scope="module")
def tiny_methods() -> list:
    return select_methods(available_methods(config_from_dict(TINY)), None)  # the default ones


def _forward_flops(config, batch: int) -> float:
    """FLOPs of one forward of the configured net on a batch, per image."""
    torch.manual_seed(0)
    process = build_process(config.process, (1, config.data.resolution, config.data.resolution))
    net = build_net(config.model, process, build_head(config)).eval()
    x, t = torch.randn(batch, 1, config.data.resolution, config.data.resolution), torch.rand(batch)
    with torch.inference_mode():
        return count_flops(lambda: net(x, t)) / batch


# ----------------------------------------------------------------------------- registry
def test_registry_reference_first_and_every_process_registered(tiny_methods: list) -> None:
    assert unregistered_kinds() == [], "add the new ProcessKind to bench.registry.METHOD_BUILDERS"
    assert tiny_methods[0].key == REFERENCE_KEY == reference_method(tiny_methods).key
    ref = tiny_methods[0].config
    assert ref.process.kind is ProcessKind.GAUSSIAN and ref.sample.sampler is SamplerKind.DDIM
    assert ref.sample.eta == 0.0
    assert len({m.key for m in tiny_methods}) == len(tiny_methods)
    same = [dataclasses.replace(m.config.model, layout=NetLayout.AUTO) == ref.model for m in tiny_methods]
    assert all(same)  # one shared U-Net (entered at each level by SSD's Flexi-UNet)


def test_select_methods_keeps_reference_and_names_valid_keys(tiny_methods: list) -> None:
    assert [m.key for m in select_methods(tiny_methods, ["ddpm"])] == ["ddim", "ddpm"]
    with pytest.raises(ConfigError, match="ddim"):
        select_methods(tiny_methods, ["nope"])


def test_per_stage_dvdp_runs_only_when_named_and_trains_apart() -> None:
    everything = available_methods(config_from_dict(TINY))
    assert "dvdp-perstage-ddim" not in [m.key for m in select_methods(everything, None)]
    named = select_methods(everything, ["dvdp-ddpm", "dvdp-perstage-ddim", "dvdp-perstage-ddpm"])
    assert [m.key for m in named] == ["ddim", "dvdp-ddpm", "dvdp-perstage-ddim", "dvdp-perstage-ddpm"]
    assert [m.config.model.per_stage_nets for m in named] == [False, False, True, True]
    assert named[2].config.process == named[1].config.process
    groups = [[m.key for m in g] for g in training_groups(named)]
    assert groups == [["ddim"], ["dvdp-ddpm"], ["dvdp-perstage-ddim", "dvdp-perstage-ddpm"]]


def test_methods_that_differ_only_in_sampler_train_together(tiny_methods: list) -> None:
    groups = [[m.key for m in g] for g in training_groups(tiny_methods)]
    assert groups == [["ddim", "ddpm"], ["dvdp-ddim", "dvdp-ddpm"], ["subspace-ddim", "subspace-ddpm"],
                      ["ssd-ddim", "ssd-ddpm"]]  # fmt: skip


def test_every_bench_names_one_quantity_with_one_key() -> None:
    """Rows are dataclasses; a ratio to DDIM of time or FLOPs has one name wherever it appears."""
    rows = {SamplingRow: 2, TrainingRow: 2, QualityRow: 0, OracleRow: 0}  # ratios of time and FLOPs per row
    for row, count in rows.items():
        assert dataclasses.is_dataclass(row) and row.__dataclass_params__.frozen
        names = {f.name for f in dataclasses.fields(row)}
        assert len(names & {"time_ratio_to_ddim", "flops_ratio_to_ddim"}) == count, row
        assert {n for n in names if "ratio_to" in n} <= {"time_ratio_to_ddim", "flops_ratio_to_ddim",
                                                          "excess_ratio_to_ddim"}, row  # fmt: skip


# ----------------------------------------------------------------------------- timing helpers
def test_peak_memory_on_cpu_matches_a_known_allocation() -> None:
    def allocate_twice() -> None:
        a = torch.ones(4 * 2**20)  # 16 MiB
        del a
        b = torch.ones(4 * 2**20) + 1  # 16 MiB, then 16 MiB more for the sum
        del b

    assert peak_memory_mb(allocate_twice, torch.device("cpu")) == pytest.approx(32.0, abs=0.5)


def test_count_flops_includes_cpu_attention() -> None:
    q = torch.randn(2, 4, 64, 16)  # (b, heads, tokens, head dim)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * 2 * 4 * 64 * 64 * 16


# ----------------------------------------------------------------------------- sampling
def test_sampling_bench_tiny(tiny_methods: list) -> None:
    result = sampling_bench(tiny_methods, SamplingOptions(batch=2, repeats=2, warmup=0, peer=False))
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"ddim", "ddpm", "dvdp-ddim", "dvdp-ddpm", "subspace-ddim", "subspace-ddpm", "ssd-ddim",
                         "ssd-ddpm"}  # fmt: skip
    for key in ("ssd-ddim", "ssd-ddpm"):  # 3 steps and the change step 4 -> 8 px added: 4, 4, 8, 8, 8 px
        ssd = rows.pop(key)
        assert ssd["nfe"] == 5 and ssd["dimension_ratio"] == pytest.approx((2 / 4 + 3) / 5)
    for key in ("dvdp-ddim", "dvdp-ddpm", "subspace-ddim", "subspace-ddpm"):  # one step per stage: 8, 4 and 2 px
        dvdp = rows.pop(key)
        assert dvdp["nfe"] == 3 and dvdp["dimension_ratio"] == pytest.approx((1 + 1 / 4 + 1 / 16) / 3)
        assert dvdp["flops_ratio_to_ddim"] < 0.6
    for row in rows.values():
        assert all(row[k] is not None for k in SAMPLING_KEYS), row
        assert row["time_per_image_s"] > 0 and row["peak_memory_mb"] > 0
        assert row["nfe"] == 3 and row["dimension_ratio"] == 1.0
        # N network evaluations per image, nothing else counted
        assert row["flops_per_image"] == 3 * _forward_flops(tiny_methods[0].config, 2)
    assert rows[REFERENCE_KEY]["time_ratio_to_ddim"] == 1.0 and rows[REFERENCE_KEY]["flops_ratio_to_ddim"] == 1.0
    assert all(set(r) == {f.name for f in dataclasses.fields(SamplingRow)} for r in result["rows"])
    assert "machine" in result["environment"] and result["environment"]["seeds"]


def test_sampling_peer_matches_widths(tiny_methods: list) -> None:
    pytest.importorskip("diffusers")
    result = sampling_bench(tiny_methods[:1], SamplingOptions(batch=2, repeats=1, warmup=0))
    peer = next(r for r in result["rows"] if r["key"] == PEER_KEY)
    assert abs(peer["parameter_gap"]) < 0.05 and peer["nfe"] == 3
    assert peer["flops_per_image"] == pytest.approx(result["rows"][0]["flops_per_image"], rel=0.05)
    assert not result["notes"]


def test_sampling_peer_skipped_with_note_without_diffusers(tiny_methods: list, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    result = sampling_bench(tiny_methods[:1], SamplingOptions(batch=2, repeats=1, warmup=0))
    assert [r["key"] for r in result["rows"]] == [REFERENCE_KEY]
    assert MISSING_NOTE in result["notes"]


# ----------------------------------------------------------------------------- training
def test_training_bench_tiny(tiny_methods: list) -> None:
    result = training_bench(tiny_methods, TrainingOptions(batch=2, repeats=2, warmup=1, flop_batches=2))
    row, *staged = result["rows"]
    assert all(set(r) == {f.name for f in dataclasses.fields(TrainingRow)} for r in result["rows"])
    assert [r["key"] for r in staged] == ["dvdp-ddim+dvdp-ddpm", "subspace-ddim+subspace-ddpm", "ssd-ddim+ssd-ddpm"]
    for r in staged:  # t decides the resolution (SSD's 2 levels: 8 px for 75 % of the steps)
        bound = 0.9 if r["key"].startswith("ssd") else 0.8
        assert r["flops_ratio_to_ddim"] < bound and r["dimension_ratio"] < bound
    assert row["examples_per_s"] > 0 and row["flops_per_example"] > 0 and row["peak_memory_mb"] > 0
    assert row["forward_flops_per_example"] == _forward_flops(tiny_methods[0].config, 2)
    assert 2.0 <= row["training_over_forward_flops"] <= 4.0
    assert row["time_ratio_to_ddim"] == 1.0 and row["dimension_ratio"] == 1.0
    (level,) = row["levels"]  # full resolution: one level, measured as a plain training step
    assert level["probability"] == 1.0 and len(level["times_s"]) == 2
    assert level["flops_per_example"] == row["flops_per_example"] and level["state_shape"] == (1, 8, 8)
    *dvdp, ssd = staged
    for r in dvdp:  # stages of 8, 4 and 2 px, with probabilities equal to their lengths
        assert [lv["state_shape"] for lv in r["levels"]] == [(1, 8, 8), (1, 4, 4), (1, 2, 2)]
        p = [lv["probability"] for lv in r["levels"]]
        assert r["dimension_ratio"] == pytest.approx(p[0] + p[1] / 4 + p[2] / 16, rel=1e-12)
    # SSD: levels of 8 and 4 px, then the change step (a 4 px state, its x0 at 8 px), with their shares of steps
    assert [lv["state_shape"] for lv in ssd["levels"]] == [(1, 8, 8), (1, 4, 4), (1, 4, 4)]
    assert [round(lv["probability"] * 1000) for lv in ssd["levels"]] == [750, 249, 1]
    p = [lv["probability"] for lv in ssd["levels"]]
    assert ssd["dimension_ratio"] == pytest.approx(p[0] + (p[1] + p[2]) / 4, rel=1e-12)


def test_training_bench_reports_the_expectation_over_levels(tiny_methods: list, monkeypatch) -> None:
    """Seconds and FLOPs per example are the probability-weighted sums over the levels, peak memory
    their maximum; every (set-up, level) pair is timed in one interleaved run."""
    batches: list[int] = []

    def fake_times(functions, repeats, warmup, device):
        batches.append(len(functions))
        return [[0.01 * (i + 1), 0.01 * (i + 1)] for i in range(len(functions))]  # seconds per step

    peaks = iter([10.0, 30.0, 20.0, 5.0])
    monkeypatch.setattr(training, "interleaved_times", fake_times)
    monkeypatch.setattr(training, "peak_memory_mb", lambda fn, device: next(peaks))
    methods = select_methods(tiny_methods, ["dvdp-ddim"])
    result = training_bench(methods, TrainingOptions(batch=2, repeats=2, warmup=0, flop_batches=1))
    assert batches == [4]  # DDIM's one level and DVDP's three, interleaved together
    ddim, dvdp = result["rows"]
    assert ddim["examples_per_s"] == pytest.approx(2 / 0.01, rel=1e-12) and ddim["peak_memory_mb"] == 10.0
    levels = dvdp["levels"]
    p = [lv["probability"] for lv in levels]
    lengths = [0.3 - 1e-3, 0.3, 0.4]
    assert p == pytest.approx([x / sum(lengths) for x in lengths], abs=1e-15) and sum(p) == pytest.approx(1.0)
    assert [lv["t_range"] for lv in levels] == [pytest.approx(r) for r in [(1e-3, 0.3), (0.3, 0.6), (0.6, 1.0)]]
    seconds = [0.02, 0.03, 0.04]  # per step of 2 examples, finest level first
    assert [lv["examples_per_s"] for lv in levels] == pytest.approx([2 / s for s in seconds], rel=1e-12)
    expected_seconds = sum(pk * s / 2 for pk, s in zip(p, seconds, strict=True))
    assert dvdp["examples_per_s"] == pytest.approx(1 / expected_seconds, rel=1e-12)
    assert dvdp["time_ratio_to_ddim"] == pytest.approx(expected_seconds / (0.01 / 2), rel=1e-12)
    flops = [lv["flops_per_example"] for lv in levels]
    assert flops[0] == ddim["flops_per_example"] and flops[0] > flops[1] > flops[2] > 0  # coarser is cheaper
    assert dvdp["flops_per_example"] == pytest.approx(sum(pk * f for pk, f in zip(p, flops, strict=True)), rel=1e-12)
    assert dvdp["flops_ratio_to_ddim"] == pytest.approx(dvdp["flops_per_example"] / flops[0], rel=1e-12)
    assert dvdp["peak_memory_mb"] == 30.0 and [lv["peak_memory_mb"] for lv in levels] == [30.0, 20.0, 5.0]


# ----------------------------------------------------------------------------- command line
def _run_cli(argv: list[str], trainer=None) -> int:
    parser = argparse.ArgumentParser(prog="dimdiff")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return run_bench(parser.parse_args(["bench", *argv]), trainer)


def test_cli_sampling_and_training_write_results(tmp_path: Path, capsys) -> None:
    common = ["--seed", "1", "--out", str(tmp_path), "--methods", "dvdp-ddim", *TINY_OVERRIDES]  # and the reference
    assert _run_cli(["sampling", "--steps", "3", "--batch", "2", "--repeats", "1", "--no-peer", *common]) == 0
    assert _run_cli(["training", "--batch", "2", "--repeats", "1", "--flop-batches", "1", *common]) == 0
    printed = capsys.readouterr().out
    assert "| DDIM (full res.) |" in printed and "wrote" in printed
    for name in ("sampling", "training"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        env = result["environment"]
        assert {"machine", "versions", "git_commit", "seeds", "command"} <= set(env)
        assert 1 in env["seeds"].values()
        assert (tmp_path / f"{name}.md").read_text().startswith(name.capitalize())
    assert json.loads((tmp_path / "sampling.json").read_text())["rows"][0]["nfe"] == 3


def test_cli_rejects_unknown_method(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--methods"):
        _run_cli(["sampling", "--methods", "dvdp", "--out", str(tmp_path), *TINY_OVERRIDES])


def test_quality_bench_tiny_writes_json_and_plot(tmp_path: Path) -> None:
    argv = ["quality", "--train-steps", "20", "--train-batch", "16", "--samples", "32", "--sample-batch", "16",
            "--steps", "3,4", "--metrics", "fd-digits,swd", "--out", str(tmp_path / "out"),
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), *TINY_OVERRIDES]  # fmt: skip
    trained = []

    def trainer(config, **kwargs):  # the trainer is handed in: the bench never imports dimdiff.train
        trained.append(config.process.kind)
        return train(config, **kwargs)

    assert _run_cli(argv, trainer) == 0
    assert trained == [ProcessKind.GAUSSIAN, ProcessKind.DVDP, ProcessKind.SUBSPACE, ProcessKind.SSD]
    result = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert (tmp_path / "out" / "quality.png").stat().st_size > 0
    keys = ["ddim", "ddpm", "dvdp-ddim", "dvdp-ddpm", "subspace-ddim", "subspace-ddpm", "ssd-ddim", "ssd-ddpm"]
    assert [(r["key"], r["steps"]) for r in result["rows"]] == [(k, n) for k in keys for n in (3, 4)]
    for row in result["rows"]:
        assert row["samples"] == 32 and row["time_per_image_s"] > 0
        assert {"fd-digits", "swd_mean"} <= set(row["scores"])
    per_scale = [k for k in result["rows"][0]["scores"] if k.startswith("swd_") and k != "swd_mean"]
    header = (tmp_path / "out" / "quality.md").read_text().splitlines()[2]
    assert per_scale and all(f" {k} " in header for k in per_scale)  # SWD per scale in the table
    assert len(result["training"]) == 4 and result["training"][0]["steps"] == 20  # one model per process
    subspace = json.loads((Path(result["training"][2]["checkpoint"]) / "config.json").read_text())
    assert len(subspace["config"]["process"]["complement_std"]) == 2  # estimated from the digits when training began
    assert "git_commit" in result["environment"]


@pytest.mark.parametrize("resolution", [8, 16, 32])  # SWD has one key per pyramid level
def test_every_score_key_a_quality_run_can_produce_has_a_direction(resolution: int, monkeypatch) -> None:
    from dimdiff import evaluate

    assert set(evaluate.METRIC_SCORES) == set(evaluate.Metric)
    monkeypatch.setattr(evaluate, "load_fid_inception", lambda weights: lambda x: x.flatten(1)[:, :16])  # no weights
    g = torch.Generator().manual_seed(0)
    samples, real = (torch.rand(48, 1, resolution, resolution, generator=g) * 2 - 1 for _ in range(2))
    reference = evaluate.Reference(real, "noise")
    for metric in evaluate.Metric:  # every metric a quality run can ask for, on its own
        keys = evaluate.score_images(samples, reference, [metric])
        declared = evaluate.METRIC_SCORES[metric]
        assert all(any(s.matches(k) for s in declared) for k in keys), (metric, keys)
        assert all(any(s.matches(k) for k in keys) for s in declared), (metric, keys)  # none declared in vain
        assert all(isinstance(evaluate.score_direction(k), evaluate.Direction) for k in keys)
    distances = ["fd-digits", "fid", "kid", "swd_mean", "swd_32", "swd_16", "swd_8", "swd_4"]
    assert all(evaluate.lower_is_better(k) for k in distances)
    assert not any(evaluate.lower_is_better(k) for k in ("precision", "recall", "confidence", "kid_std"))
    assert evaluate.score_direction("kid_std") is evaluate.Direction.NEITHER
    assert headline_metric([evaluate.Metric.SWD, evaluate.Metric.KID]) == "swd_mean"
    with pytest.raises(ValueError, match=r"expected a score key among .*swd_<resolution>.*got 'swd_x'"):
        evaluate.score_direction("swd_x")


def test_standalone_main_takes_overrides_after_options_and_reports_errors(tmp_path: Path, capsys) -> None:
    from dimdiff.bench.cli import main

    argv = ["training", "--batch", "2", *TINY_OVERRIDES[:3], "--repeats", "1", "--flop-batches", "1",
            *TINY_OVERRIDES[3:], "--methods", "ddim", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0 and (tmp_path / "training.json").is_file()
    assert main(["sampling", "--methods", "nope", "--out", str(tmp_path), *TINY_OVERRIDES]) == 2
    assert "--methods" in capsys.readouterr().err


def test_quality_without_a_trainer_says_what_it_needs(tmp_path: Path, capsys) -> None:
    from dimdiff.bench.cli import main

    assert main(["quality", "--out", str(tmp_path), *TINY_OVERRIDES]) == 2
    assert "expected a trainer (dimdiff.train.loop.train" in capsys.readouterr().err


def test_bench_modules_do_not_import_the_trainer_or_the_cli() -> None:
    """Importing any module of dimdiff.bench loads neither dimdiff.train nor dimdiff.cli (they sit on top)."""
    code = """if True:
        import importlib, pkgutil, sys
        import dimdiff.bench
        for info in pkgutil.iter_modules(dimdiff.bench.__path__):
            importlib.import_module("dimdiff.bench." + info.name)
            top = [m for m in sys.modules if m in ("dimdiff.train", "dimdiff.cli") or m.startswith("dimdiff.train.")]
            assert not top, f"importing dimdiff.bench.{info.name} imported {sorted(top)}"
        print(len(list(pkgutil.iter_modules(dimdiff.bench.__path__))))
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) >= 10  # cli, environment, oracle, peer, quality, registry, report, sampling, ...


def _imported_modules(path: Path, package: str) -> list[str]:
    """Every module that ``path`` imports, at any depth (lazy imports in functions too), except in its
    ``if __name__ == "__main__":`` block."""
    tree = ast.parse(path.read_text())
    main = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    skipped = {id(n) for block in main for n in ast.walk(block)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.append(".".join(p for p in (base, node.module or "") if p))
    return names


def test_nothing_below_the_top_imports_train_or_cli_even_lazily() -> None:
    """The trainer and the command line sit on top: no other module of dimdiff imports them, not even
    inside a function (the quality bench takes its trainer as an argument)."""
    root = Path(dimdiff.__file__).parent
    top = ("dimdiff.train", "dimdiff.cli")
    offenders = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if module.startswith(top) or module == "dimdiff.__main__":
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        bad = [m for m in _imported_modules(path, package) if m in top or m.startswith(tuple(t + "." for t in top))]
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_dimdiff_cli_bench_once_wired(tmp_path: Path) -> None:
    import dimdiff.cli

    subcommands = next(a for a in dimdiff.cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "bench" in subcommands.choices, "`dimdiff bench` must be a subcommand of dimdiff.cli"
    bench = next(a for a in subcommands.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(bench.choices) == {"sampling", "training", "quality", "oracle"}
    argv = ["bench", "sampling", "--steps", "3", "--batch", "2", "--repeats", "1", "--no-peer", "--methods", "ddim",
            "--out", str(tmp_path)]  # fmt: skip
    assert dimdiff.cli.main([*argv, *TINY_OVERRIDES]) == 0
    assert (tmp_path / "sampling.json").is_file()


def test_quality_seeds_scores_each_seed_once_and_summarises(tmp_path: Path) -> None:
    """benchmarks/quality_seeds.py (the README's multi-seed quality protocol): trains and scores a seed, appends
    one row per score, skips what is done on a rerun, and its summary names samples and training steps."""
    import importlib.util

    path = Path(__file__).parent.parent / "benchmarks" / "quality_seeds.py"
    spec = importlib.util.spec_from_file_location("quality_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--method", "ssd-ddpm", "--seeds", "0", "--evals", "ddpm:2", "--n", "16", "--train-steps", "2",
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "model.base_channels=4",
            "model.attention_resolutions=[]"]  # fmt: skip
    assert module.main(args) == 0
    rows = (tmp_path / "out" / "ssd-ddpm.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["step"] == 2
    assert module.main(args) == 0  # done: nothing trained or scored again
    assert len((tmp_path / "out" / "ssd-ddpm.jsonl").read_text().splitlines()) == 1
    table = module.summary(["ssd-ddpm"], tmp_path / "out")
    assert "| ssd-ddpm | ddpm | 2 | 16 | 2 |" in table
