"""A run folder survives concurrent runs, kills during log rewrites, torn log lines and diverging losses:
one training run per folder (an OS lock that dies with its process), atomic and tolerant metrics.jsonl,
and a divergence guard that names the last checkpoint saved before the loss ran away."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import tiny

from dimdiff import checkpoint as ckpt
from dimdiff.train.divergence import DivergenceGuard
from dimdiff.train.errors import RunFolderBusy, TrainingError
from dimdiff.train.logging import MetricsLog, read_metrics
from dimdiff.train.loop import train
from dimdiff.train.run_folder import LOCK_FILE, run_lock

HOLD = """
import sys, time
from pathlib import Path
from dimdiff.train.run_folder import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(out_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock (as a training run does), until killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out_dir)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_trainer_on_a_held_folder_is_refused_naming_the_holder_and_writes_nothing(tmp_path, capsys):
    from dimdiff.cli import main

    config = tiny(tmp_path, steps=2)
    out_dir = Path(config.train.out_dir)
    holder = _holder(out_dir)
    try:
        with pytest.raises(RunFolderBusy, match=rf"in use by another training run \(PID {holder.pid} on host "
                                                rf"{socket.gethostname()}, since"):  # fmt: skip
            train(config, progress=False)
        tiny_toml = Path(__file__).resolve().parents[1] / "configs" / "digits16_tiny.toml"
        assert main(["train", "--config", str(tiny_toml), f"train.out_dir={out_dir}",
                     "--resume", "auto", "--no-progress"]) == 2  # fmt: skip
        assert f"PID {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out_dir.iterdir()) == [LOCK_FILE]  # no config.json, no metrics.jsonl
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = train(config, progress=False)  # the kill released the lock: no stale lock to clean up
    assert result.step == 2


def test_the_lock_is_held_for_the_whole_run_and_released_after_it_and_after_an_error(tmp_path):
    config = tiny(tmp_path, steps=1)
    out_dir = Path(config.train.out_dir)
    with run_lock(out_dir):  # this process's own lock: a run started inside it is refused too
        with pytest.raises(RunFolderBusy, match=f"PID {os.getpid()}"):
            train(config, progress=False)
    train(config, progress=False)
    with pytest.raises(ckpt.CheckpointError, match="pass --resume auto"):  # an error after the lock was taken
        train(config, progress=False)
    with run_lock(out_dir):  # released again
        pass


def test_sampling_reads_a_run_whose_folder_another_trainer_holds(tmp_path):
    from dimdiff.generate import generate, load_model

    result = train(tiny(tmp_path, steps=3), progress=False)
    holder = _holder(result.out_dir)
    try:
        images = generate(load_model(result.checkpoint), 2, seed=0)
        assert images.shape == (2, 1, 8, 8)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- metrics.jsonl
def _log(path: Path, steps: int, torn: str = "") -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, steps + 1)) + torn)


def test_resuming_cuts_the_log_to_the_step_keeping_the_lines_byte_for_byte(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _log(path, 200)
    path.write_text(path.read_text() + "not json, edited by hand\n")
    original = path.read_text().splitlines()
    warnings: list[str] = []
    MetricsLog(path, resume_step=150, warn=warnings.append)
    assert path.read_text().splitlines() == original[:150] + ["not json, edited by hand"]
    assert warnings == [f"{path}, line 201: not a JSON object; kept as it is"]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))


def test_a_kill_while_the_log_is_cut_leaves_the_whole_old_log(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _log(path, 200)
    before = path.read_text()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(path, resume_step=100)
    assert path.read_text() == before  # 200 lines, never 0


def test_a_torn_last_line_is_dropped_with_a_warning_and_readers_skip_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _log(path, 5, torn='{"step": 6, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    warnings: list[str] = []
    log = MetricsLog(path, resume_step=5, warn=warnings.append)
    assert len(warnings) == 1 and "dropped a torn last line (15 characters" in warnings[0]
    log.write({"step": 6, "loss": 0.1})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]


def test_resume_auto_after_a_kill_mid_line_continues_exactly(tmp_path, capsys):
    whole = train(tiny(tmp_path / "a", steps=6, checkpoint_every=3), progress=False)
    config = tiny(tmp_path / "b", steps=6, checkpoint_every=3)
    train(tiny(tmp_path / "b", steps=3, checkpoint_every=3), progress=False)
    metrics = Path(config.train.out_dir) / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 4, "loss": 0.12')  # killed while writing step 4
    resumed = train(config, resume="auto", progress=False)
    assert resumed.losses == whole.losses[3:]
    assert "dropped a torn last line" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(metrics) if "loss" in r] == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- divergence
def test_the_guard_stops_after_patience_diverging_steps_and_forgives_a_short_spike():
    guard = DivergenceGuard(factor=10.0, patience=3, min_history=5)
    losses = [1.0] * 10 + [50.0, 50.0] + [1.0] * 3 + [50.0, 60.0, 70.0]
    stops = [guard.update(step, loss) for step, loss in enumerate(losses, 1)]
    assert stops.index(True) == len(losses) - 1 and guard.began == 16
    assert guard.median == 1.0  # the two-step spike joined the history, the streak did not
    assert not DivergenceGuard(factor=0.0, patience=1).update(1, 1e30)  # off


def test_the_guard_names_the_last_checkpoint_whose_weights_did_not_diverge():
    guard = DivergenceGuard(factor=10.0, patience=2, min_history=2)
    for step in range(1, 8):
        guard.update(step, 1.0)
        if step % 3 == 0:
            guard.saved(step, Path(f"step_{step}"))
    guard.update(8, 100.0)  # the weights after step 7 give a diverging loss: step_6 holds the last good ones
    guard.saved(8, Path("step_8"))
    assert guard.update(9, 200.0)
    assert guard.last_good(guard.began, None) == Path("step_6")
    assert "step_8 already hold the diverging model" in guard.message(Path("step_6"))
    assert guard.last_good(guard.began, Path("start")) == Path("step_6") and guard.last_good(2, Path("s")) == Path("s")


def test_a_run_whose_finite_loss_runs_away_stops_and_names_the_checkpoint_before_it(tmp_path, monkeypatch):
    from dimdiff.nets.denoiser import Denoiser
    from dimdiff.train import loop

    monkeypatch.setattr(loop, "DivergenceGuard", functools.partial(DivergenceGuard, min_history=3))
    real, calls = Denoiser.loss, {"n": 0}

    def runaway(self, *args, **kwargs):
        calls["n"] += 1
        loss, parts = real(self, *args, **kwargs)
        return (loss * 1e6, parts) if calls["n"] >= 8 else (loss, parts)  # finite, but a million times larger

    monkeypatch.setattr(Denoiser, "loss", runaway)
    config = tiny(tmp_path, steps=20, checkpoint_every=3, divergence_patience=3, lr=1e-5)
    with pytest.raises(TrainingError, match=r"the loss diverged: above 20 x its running median .* for 3 steps in a "
                                            r"row from step 8 .*last good checkpoint is .*step_00000006"):  # fmt: skip
        train(config, progress=False)
    assert [p.name for p in ckpt.list_checkpoints(config.train.out_dir)] == ["step_00000003", "step_00000006",
                                                                             "step_00000009"]  # fmt: skip
