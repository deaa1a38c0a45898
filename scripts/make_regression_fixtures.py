"""Write the bit-for-bit regression fixtures in tests/fixtures/regression/ (run once per format change).

For each case (a tiny model of each process kind and net arrangement) this trains 20 steps on 8 px
digits with one torch thread, keeps the step-10 checkpoint, and records:
    losses          the 20 training losses of the uninterrupted run (float64)
    ddim, ddpm      8 images sampled from the step-10 checkpoint's EMA weights (3 steps, seed 0)
Every later version of dimdiff must reproduce these numbers exactly from the same configs
(tests/test_regression.py), and must load and sample the stored checkpoint as the old code did.

    .venv/bin/python scripts/make_regression_fixtures.py [--out tests/fixtures/regression] [--cases a,b]

A case added later (a new process kind) is recorded alone with ``--cases``, by the commit that adds it;
each case folder names the commit that made it in its COMMIT file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from dimdiff.config import SamplerKind, config_from_dict
from dimdiff.generate import generate, load_model, sample_config_with
from dimdiff.train.loop import train

BASE = {
    "model": {"base_channels": 4, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4],
              "dropout": 0.1},
    "data": {"name": "digits", "resolution": 8, "hflip": True},
    "train": {"steps": 20, "batch_size": 8, "lr": 2e-3, "warmup_steps": 2, "checkpoint_every": 10, "keep_last": 2,
              "sample_n": 4, "log_every": 1},
    "sample": {"steps": 3},
}  # fmt: skip
DVDP = {"kind": "dvdp", "turning_points": [0.3, 0.6], "window_widths": [0.2, 0.2]}
CASES = {
    "gaussian": {"train": {"complexity_lambda": 0.1}},
    "gaussian_v_min_snr": {"process": {"parameterization": "v", "schedule": "cosine"},
                           "train": {"loss_weighting": "min_snr"}},
    "dvdp_shared_v": {"process": {**DVDP, "parameterization": "v"}, "train": {"loss_weighting": "min_snr"}},
    "dvdp_embedding_eps": {"process": DVDP, "model": {"stage_embedding": True}},
    "dvdp_per_stage_x0": {"process": {**DVDP, "parameterization": "x0"}, "model": {"per_stage_nets": True},
                          "train": {"complexity_lambda": 0.1}},
    "dvdp_orthonormal": {"process": {**DVDP, "parameterization": "v"}, "model": {"pixel_units": False}},
    "subspace_v": {"process": {"kind": "subspace", "turning_points": [0.3, 0.6], "window": "none",
                               "parameterization": "v"}},
    "ssd_x0": {"process": {"kind": "ssd", "levels": 2, "parameterization": "x0"},
               "train": {"loss_weighting": "min_snr"}},
}  # fmt: skip
SAMPLES = 8


def case_config(name: str, out_dir: Path) -> dict:
    raw = {section: dict(values) for section, values in BASE.items()}
    for section, values in CASES[name].items():
        raw.setdefault(section, {}).update(values)
    raw["train"]["out_dir"] = str(out_dir)
    return raw


def record(name: str, out: Path, work: Path) -> None:
    raw = case_config(name, work / name)
    result = train(config_from_dict(raw), progress=False)
    step10 = work / name / "checkpoints" / "step_00000010"
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(step10, folder / "checkpoint")
    model = load_model(folder / "checkpoint")
    tensors = {"losses": torch.tensor(result.losses, dtype=torch.float64)}
    for sampler in (SamplerKind.DDIM, SamplerKind.DDPM):
        sample = sample_config_with(model.info.config.sample, sampler=sampler, steps=3)
        tensors[sampler.value] = generate(model, SAMPLES, sample, seed=0, batch_size=SAMPLES)
    save_file(tensors, str(folder / "expected.safetensors"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (folder / "COMMIT").write_text(commit + "\n")
    (folder / "case.json").write_text(json.dumps(raw | {"train": {**raw["train"], "out_dir": None}}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/regression")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    bad = [n for n in names if n not in CASES]
    if bad:
        parser.error(f"--cases: expected names among {', '.join(CASES)}, got {', '.join(bad)}")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            record(name, out, Path(tmp))
            print(f"{name}: done")


if __name__ == "__main__":
    main()
