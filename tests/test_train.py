import json
from pathlib import Path

import pytest
import torch

from dimdiff import checkpoint as ckpt
from dimdiff.config import ConfigError, ProcessKind, config_from_dict, replace_section
from dimdiff.train.loop import TrainingError, train

TINY = {
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
              "dropout": 0.1},
    "data": {"name": "digits", "resolution": 8, "hflip": True},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 2, "checkpoint_every": 3, "sample_n": 4, "log_every": 1,
              "threads": 1},
    "sample": {"steps": 3},
}  # fmt: skip


def tiny(tmp_path, **train):
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["train"].update(out_dir=str(tmp_path / "run"), **train)
    return config_from_dict(raw)


def test_smoke_training_lowers_the_loss(tmp_path):
    result = train(tiny(tmp_path, steps=80, checkpoint_every=80, lr=3e-3), progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.8 * first
    assert result.grid.is_file() and result.loss_plot.is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 80 and {"loss", "lr", "grad_norm", "steps_per_s"} <= set(records[-1])


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    whole = train(tiny(tmp_path / "a", steps=8, checkpoint_every=4, grad_accum=2), progress=False)
    train(tiny(tmp_path / "b", steps=4, checkpoint_every=4, grad_accum=2), progress=False)
    resumed = train(tiny(tmp_path / "b", steps=8, checkpoint_every=4, grad_accum=2), resume="auto", progress=False)
    assert resumed.step == 8 and len(resumed.losses) == 4
    assert resumed.losses == whole.losses[4:]  # bit for bit
    for name in ("model.safetensors", "ema.safetensors"):
        from safetensors.torch import load_file

        a = load_file(str(whole.checkpoint / name))
        b = load_file(str(resumed.checkpoint / name))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_complete_weights_only_and_pruned(tmp_path):
    (tmp_path / "run" / "checkpoints" / ".tmp-crashed").mkdir(parents=True)
    result = train(tiny(tmp_path, steps=9, keep_last=2), progress=False)
    found = ckpt.list_checkpoints(tmp_path / "run")
    assert [p.name for p in found] == ["step_00000006", "step_00000009"]
    state = torch.load(found[-1] / "state.pt", weights_only=True)
    assert state["step"] == 9 and "optimizer" in state
    info = ckpt.read_checkpoint_info(tmp_path / "run")
    assert info.path == result.checkpoint and info.step == 9 and info.data_shape == (1, 8, 8)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from dimdiff.nets.denoiser import Denoiser

    real = Denoiser.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss, parts = real(self, *args, **kwargs)
        return (loss * float("nan"), parts) if calls["n"] == 5 else (loss, parts)

    monkeypatch.setattr(Denoiser, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan, not finite, at step 5; .*step_00000003"):
        train(tiny(tmp_path, steps=10), progress=False)
    found = ckpt.list_checkpoints(tmp_path / "run")
    assert [p.name for p in found] == ["step_00000003"]
    ckpt.read_checkpoint_info(found[0])  # still readable


def test_resume_refuses_another_architecture(tmp_path):
    train(tiny(tmp_path, steps=3), progress=False)
    other = config_from_dict({**TINY, "model": {**TINY["model"], "base_channels": 16},
                              "train": {**TINY["train"], "out_dir": str(tmp_path / "run"), "steps": 6}})  # fmt: skip
    with pytest.raises(ckpt.CheckpointError, match="model.base_channels: checkpoint 8, config 16"):
        train(other, resume="auto", progress=False)


def test_loading_weights_of_another_architecture_is_a_clear_error(tmp_path):
    from dimdiff.build import build_head, build_net, build_process

    result = train(tiny(tmp_path, steps=3), progress=False)
    wider_config = config_from_dict({"model": {**TINY["model"], "base_channels": 16}})
    process = build_process(wider_config.process, (1, 8, 8))
    wider = build_net(wider_config.model, process, build_head(wider_config))
    with pytest.raises(ckpt.CheckpointError, match="does not fit this model") as info:
        ckpt.load_state_dict_strict(wider, result.checkpoint / "model.safetensors")
    assert "shape mismatch" in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"train": {"precision": "bf16"}},
        {"train": {"channels_last": True}},
        {"process": {"parameterization": "v", "schedule": "cosine"}, "train": {"loss_weighting": "min_snr"}},
        {"process": {"parameterization": "x0"}, "train": {"complexity_lambda": 0.1}},
    ],
    ids=["bf16", "channels_last", "v_cosine_min_snr", "x0_complexity"],
)
def test_training_options_run_and_give_finite_losses(tmp_path, overrides):
    raw = {k: dict(v) for k, v in TINY.items()}
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    raw["train"].update(out_dir=str(tmp_path / "run"), steps=2, batch_size=8)
    result = train(config_from_dict(raw), progress=False)
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))


def test_fp16_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(tiny(tmp_path, steps=1, precision="fp16", device="cpu"), progress=False)


def test_a_fresh_run_never_overwrites_an_existing_one(tmp_path):
    train(tiny(tmp_path, steps=6), progress=False)
    before = sorted(p.name for p in ckpt.list_checkpoints(tmp_path / "run"))
    with pytest.raises(ckpt.CheckpointError, match="already holds checkpoints up to step_00000006: pass --resume auto"):
        train(tiny(tmp_path, steps=3, lr=1e-3), progress=False)
    with pytest.raises(ckpt.CheckpointError, match="holds later checkpoints"):
        train(tiny(tmp_path, steps=9), resume=str(tmp_path / "run" / "checkpoints" / "step_00000003"), progress=False)
    assert sorted(p.name for p in ckpt.list_checkpoints(tmp_path / "run")) == before
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6


def test_resume_refuses_another_batch_layout(tmp_path):
    train(tiny(tmp_path, steps=3), progress=False)
    with pytest.raises(ckpt.CheckpointError, match="micro_batch: checkpoint 16, config 8"):
        train(tiny(tmp_path, steps=6, batch_size=8), resume="auto", progress=False)


def test_resume_is_exact_on_a_folder_dataset_with_dropout(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i:02d}.png")

    def config(name, steps):
        raw = {k: dict(v) for k, v in TINY.items()}
        raw["data"] = {"name": "folder", "path": str(folder), "resolution": 8, "channels": 1}
        raw["train"].update(out_dir=str(tmp_path / name), steps=steps, checkpoint_every=3, batch_size=8)
        return config_from_dict(raw)

    whole = train(config("a", 8), progress=False)
    train(config("b", 3), progress=False)
    resumed = train(config("b", 8), resume="auto", progress=False)
    assert resumed.losses == whole.losses[3:]


def _dvdp(tmp_path, **train_overrides):
    raw = {k: dict(v) for k, v in TINY.items()}
    raw["process"] = {"kind": "dvdp", "parameterization": "v", "turning_points": [0.3, 0.6],
                      "window_widths": [0.2, 0.2]}  # fmt: skip
    raw["data"].update(resolution=16)
    raw["model"].update(attention_resolutions=[8])
    raw["train"].update(out_dir=str(tmp_path / "run"), **train_overrides)
    return config_from_dict(raw)


def test_dvdp_trains_resumes_exactly_and_samples_at_full_resolution(tmp_path):
    from dimdiff.generate import generate, load_model

    whole = train(_dvdp(tmp_path / "a", steps=8, checkpoint_every=4), progress=False)
    train(_dvdp(tmp_path / "b", steps=4, checkpoint_every=4), progress=False)
    resumed = train(_dvdp(tmp_path / "b", steps=8, checkpoint_every=4), resume="auto", progress=False)
    assert resumed.losses == whole.losses[4:] and all(torch.isfinite(torch.tensor(whole.losses)))
    model = load_model(whole.checkpoint)
    assert type(model.process).__name__ == "DimensionVaryingProcess" and model.process.shape_at(1.0) == (1, 4, 4)
    images = generate(model, 3, seed=0)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1.0


VARIANTS = {
    "stage-embedding": ({"stage_embedding": True}, {}),
    "per-stage-nets": ({"per_stage_nets": True}, {}),
    "subspace": ({}, {"kind": ProcessKind.SUBSPACE, "turning_points": (0.3, 0.6)}),
    "orthonormal-units": ({"pixel_units": False}, {}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_staged_variants_train_resume_exactly_and_sample(tmp_path, variant):
    """A shared U-Net told the stage, one U-Net per stage, a shared one in orthonormal coordinates
    (not pixel units), and subspace diffusion (whose s_perp is estimated from the data at the
    start, saved with the checkpoint and reused on resume)."""
    import dataclasses

    from dimdiff.generate import generate, load_model
    from dimdiff.nets.staged import StagedNet

    model_keys, process_keys = VARIANTS[variant]

    def config(where, **train_overrides):
        base = _dvdp(where, **train_overrides)
        return dataclasses.replace(base, model=dataclasses.replace(base.model, **model_keys),
                                   process=replace_section(base.process, **process_keys))  # fmt: skip

    whole = train(config(tmp_path / "a", steps=6, checkpoint_every=3), progress=False)
    train(config(tmp_path / "b", steps=3, checkpoint_every=3), progress=False)
    resumed = train(config(tmp_path / "b", steps=6, checkpoint_every=3), resume="auto", progress=False)
    assert resumed.losses == whole.losses[3:] and all(torch.isfinite(torch.tensor(whole.losses)))
    model = load_model(whole.checkpoint)
    assert isinstance(model.denoiser.net, StagedNet)
    assert model.denoiser.pixel_units == model_keys.get("pixel_units", True)
    if variant == "per-stage-nets":
        assert len(model.denoiser.net.nets) == 3
    if variant == "subspace":
        std = model.info.config.process.options.complement_std
        assert len(std) == 2 and 0 < std[0] < 1 and model.process.complement_std == std
    images = generate(model, 2, seed=0)
    assert images.shape == (2, 1, 16, 16) and images.abs().max() <= 1.0 + 1e-6  # components recombined in fp32
    if variant == "per-stage-nets":  # saved before model.pixel_units existed: its nets ran in orthonormal units
        _as_saved_before_pixel_units(Path(whole.checkpoint))
        assert load_model(whole.checkpoint).denoiser.pixel_units is False


def _as_saved_before_pixel_units(folder: Path) -> None:
    """Rewrite a checkpoint as dimdiff wrote it before model.pixel_units (and manifests) existed."""
    from safetensors.torch import load_file, save_file

    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["model"]["pixel_units"], meta["manifest"]
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "manifest.json").unlink()
    for name in ("model.safetensors", "ema.safetensors"):
        tensors = load_file(str(folder / name))
        save_file(tensors, str(folder / name), metadata={"format": meta["format"], "dimdiff_config": json.dumps(meta)})


def test_subspace_samples_with_the_langevin_corrector(tmp_path):
    import dataclasses

    from dimdiff.generate import generate, load_model

    base = _dvdp(tmp_path, steps=2, checkpoint_every=2)
    process = replace_section(base.process, kind=ProcessKind.SUBSPACE, turning_points=(0.3, 0.6))
    result = train(dataclasses.replace(base, process=process), progress=False)
    model = load_model(result.checkpoint)
    calls = []
    model.denoiser.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    sample = dataclasses.replace(model.info.config.sample, steps=6, corrector_steps=2)
    images = generate(model, 2, seed=0, sample=sample)
    assert images.shape == (2, 1, 16, 16)
    assert calls.count((2, 1, 8, 8)) == 2 + 2 and calls.count((2, 1, 16, 16)) == 2 + 2  # steps + corrector


def test_resuming_another_kind_of_run_as_subspace_names_the_differences(tmp_path):
    import dataclasses

    base = _dvdp(tmp_path, steps=2, checkpoint_every=2)
    train(base, progress=False)
    process = replace_section(base.process, kind=ProcessKind.SUBSPACE, turning_points=(0.3, 0.6))
    with pytest.raises(ckpt.CheckpointError, match="made with another setup") as info:
        train(dataclasses.replace(base, process=process), resume="auto", progress=False)
    assert "process.kind: checkpoint 'dvdp', config 'subspace'" in str(info.value)


def test_resuming_a_finished_run_only_redraws_its_pictures(tmp_path):
    done = train(tiny(tmp_path, steps=3), progress=False)
    again = train(tiny(tmp_path, steps=3), resume="auto", progress=False)
    assert again.step == 3 and again.losses == [] and again.checkpoint == done.checkpoint and again.grid.is_file()


def test_a_scaled_step_whose_gradients_overflow_is_skipped_not_fatal(tmp_path):
    """With fp16 loss scaling (here a CPU GradScaler), an inf gradient skips that update and the
    EMA update, lowers the scale, and training goes on; without scaling it stops the run."""
    from dimdiff.build import build_denoiser
    from dimdiff.train.distributed import DistInfo
    from dimdiff.train.loop import _build, _train_step

    run, _ = _build(tiny(tmp_path, steps=5), torch.device("cpu"), DistInfo(), None, None)
    run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    denoiser = build_denoiser(run.config, run.net, run.process)
    batches = iter(run.stream)
    _train_step(run, run.net, denoiser, batches)
    before = [p.detach().clone() for p in run.net.parameters()]
    hook = next(run.net.parameters()).register_hook(lambda g: torch.full_like(g, float("inf")))
    loss, _, grad_norm = _train_step(run, run.net, denoiser, batches)
    hook.remove()
    assert run.step == 2 and run.ema.num_updates == 1 and run.scaler.get_scale() < 2.0**8
    assert torch.isfinite(torch.tensor(loss)) and not torch.isfinite(torch.tensor(grad_norm))
    assert all(torch.equal(a, b) for a, b in zip(before, run.net.parameters(), strict=True))
    _train_step(run, run.net, denoiser, batches)
    assert run.step == 3 and run.ema.num_updates == 2


def test_non_finite_gradients_without_scaling_stop_the_run(tmp_path, monkeypatch):
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: real(*a, **k) * float("inf"))
    message = r"gradient norm is inf \(loss .*\), not finite, at step 1; .*no checkpoint"
    with pytest.raises(TrainingError, match=message):
        train(tiny(tmp_path, steps=3), progress=False)
