import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_two_gloo_processes_train_to_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dimdiff", "train", "--config", str(ROOT / "configs" / "digits16_tiny.toml"), "--no-progress",
           f"train.out_dir={out}", "train.steps=6", "train.batch_size=8", "train.checkpoint_every=3",
           "train.sample_n=2", "sample.steps=2", "model.base_channels=8", "model.dropout=0.1",
           "data.hflip=true", "train.device=cpu", "train.threads=1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    checksums = [r["rank_checksums"] for r in records if "rank_checksums" in r]
    assert len(checksums) == 1 and len(checksums[0]) == 2
    assert checksums[0][0] == checksums[0][1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    assert done.stdout.count("checkpoint:") == 1  # only rank 0 reports
