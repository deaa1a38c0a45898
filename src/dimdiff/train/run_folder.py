"""A run folder (``train.out_dir``): the lock that lets one training run write it, and which checkpoint a
run starts from.

The folder holds ``config.json``, ``metrics.jsonl``, ``samples/``, ``loss.png`` and the checkpoints
``step_XXXXXXXX/`` (`dimdiff.checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dimdiff import checkpoint as ckpt
from dimdiff.train.errors import RunFolderBusy

__all__ = ["LOCK_FILE", "resume_path", "run_lock"]


def resume_path(resume: str | None, out_dir: Path) -> Path | None:
    """The checkpoint to start from; never one that would make this run overwrite or prune
    checkpoints of a different (or later) run already in ``out_dir``."""
    found = ckpt.list_checkpoints(out_dir)
    if resume is None:
        if found:
            raise ckpt.CheckpointError(
                f"{out_dir} already holds checkpoints up to {found[-1].name}: pass --resume auto to continue "
                f"that run, or choose another train.out_dir"
            )
        return None
    if resume == "auto":
        return found[-1] if found else None
    start = ckpt.find_checkpoint(resume)
    newer = [p for p in found if ckpt.read_checkpoint_info(p).step > ckpt.read_checkpoint_info(start).step]
    if newer:
        raise ckpt.CheckpointError(
            f"cannot resume from {start} into {out_dir}: it holds later checkpoints ({newer[-1].name}) that this "
            f"run would overwrite; resume from the newest (--resume auto) or choose another train.out_dir"
        )
    return start


LOCK_FILE = ".lock"  # in the run folder; holds the PID and host of the run that holds (or last held) the lock


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block: one training run per folder at a time.

    An OS-level advisory lock on ``out_dir/.lock`` (flock on POSIX, a byte-range lock on Windows), so
    the operating system releases it when the process ends in any way (a ``kill -9`` never leaves a
    stale lock). The file also names the holder's PID and host, for the message a second run gets.
    Reading a run (sampling, evaluation, ``dimdiff info``) never takes the lock. Network file systems
    that do not support flock give no protection."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise RunFolderBusy(f"{out_dir} is in use by another training run ({_holder(path)}): wait for it to "
                                f"finish or stop it, or choose another train.out_dir")  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        if sys.platform == "win32":  # pragma: no cover
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows
        return False
    return True


def _holder(path: Path) -> str:
    """``PID n on host h, since ...`` from a lock file, as far as it can be read."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"PID {int(info['pid'])} on host {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: its lock file is being written"
