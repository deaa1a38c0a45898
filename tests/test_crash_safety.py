"""Crash safety: a real `dimdiff train` process killed with SIGKILL at random moments (during start-up,
training steps, checkpoint writes and pruning, log writes), then resumed with `--resume auto`, ends with
exactly the weights and the per-step losses of an uninterrupted run, and every checkpoint left in the
folder is complete. The number of kills is bounded (6, and 45 s); the seed fixes the moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dimdiff import checkpoint as ckpt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

STEPS = 24
OVERRIDES = [
    "model.base_channels=4", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
    "data.resolution=8", "train.batch_size=8", "train.warmup_steps=2", f"train.steps={STEPS}",
    "train.checkpoint_every=2", "train.keep_last=2", "train.log_every=1", "train.sample_n=2", "train.threads=1",
    "sample.steps=2",
]  # fmt: skip
MAX_KILLS, MAX_SECONDS = 6, 45.0
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits16_tiny.toml"


def _command(out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dimdiff.cli", "train", "--config", str(CONFIG), *OVERRIDES,
            f"train.out_dir={out_dir}", "--resume", "auto", "--no-progress"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _losses(out_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records if "loss" in r]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_random_kills_then_resume_give_the_uninterrupted_run_bit_for_bit(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), env=_env(), check=True, capture_output=True)
    rng, killed, started = random.Random(0), tmp_path / "killed", time.monotonic()
    kills = 0
    while kills < MAX_KILLS and time.monotonic() - started < MAX_SECONDS:
        proc = subprocess.Popen(_command(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(1.5, 6.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break  # it finished before the kill came
        for path in ckpt.list_checkpoints(killed):  # whatever the moment, every checkpoint left is whole
            ckpt.read_checkpoint_info(path)
            assert {"model.safetensors", "ema.safetensors", "state.pt"} <= {p.name for p in path.iterdir()}
    done = subprocess.run(_command(killed), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert kills >= 3, f"only {kills} kills landed before the run finished: lengthen the run"
    print(f"{kills} SIGKILLs, then a bit-exact finish")
    assert _losses(killed) == _losses(reference) and len(_losses(reference)) == STEPS
    final = ckpt.list_checkpoints(killed)[-1]
    assert final.name == ckpt.list_checkpoints(reference)[-1].name
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(final / name)), load_file(str(ckpt.list_checkpoints(reference)[-1] / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    assert not list((killed / "checkpoints").glob(".tmp-*")), "temporary folders of killed writers were left"
