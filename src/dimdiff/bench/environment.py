"""What a result file records about where and how it was made, so any figure can be traced
and re-run: machine (CPU model, threads, GPU), library versions, git commit, command line."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_model", "environment_record", "machine_summary"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment_record(seeds: dict[str, int] | None = None) -> dict[str, Any]:
    """A JSON-able description of this run's machine, software and command."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": gpu,
            "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "dimdiff": _version("dimdiff"),
            "numpy": _version("numpy"),
            "diffusers": _version("diffusers"),
        },
        "git_commit": _git_commit(),
        "seeds": seeds or {},
    }


def machine_summary(record: dict[str, Any]) -> str:
    """One line for tables: 'AMD EPYC ..., 2 threads, torch 2.13.0' (plus the GPU if any)."""
    m, v = record["machine"], record["versions"]
    where = m["gpu"] or f"{m['cpu']}, {m['torch_threads']} threads"
    return f"{where}, torch {v['torch']}"
