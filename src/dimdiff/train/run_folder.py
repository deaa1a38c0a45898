"""A run folder (``train.out_dir``): the lock that lets one training run write it, and which checkpoint a
run starts from.

The folder holds ``config.json``, ``metrics.jsonl``, ``samples/``, ``loss.png`` and the checkpoints
``step_XXXXXXXX/`` (`dimdiff.checkpoint`). A run that starts (holding the lock) removes the
``.tmp-*``/``.trash-*`` folders a killed run left in ``checkpoints/``. ``--resume auto`` starts from the
newest intact checkpoint: newer damaged ones are renamed ``damaged-step_*`` (kept for the user, never read
or overwritten) with a warning; an explicitly named checkpoint that is damaged is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dimdiff import checkpoint as ckpt
from dimdiff.train.errors import RunFolderBusy

__all__ = ["LOCK_FILE", "other_folders", "resume_path", "run_lock", "set_aside"]

DAMAGED_PREFIX = "damaged-"
_OTHER_FOLDERS = {
    ckpt.TMP_PREFIX: "an unfinished write of a run that was killed; removed when the next run starts",
    ckpt.TRASH_PREFIX: "a checkpoint being deleted when a run was killed; removed when the next run starts",
    ".old-": "a checkpoint being replaced when a run was killed; removed when the next run starts",
    DAMAGED_PREFIX: "a damaged checkpoint that --resume auto set aside; kept for you to inspect or delete",
}


def resume_path(resume: str | None, out_dir: Path, *, main: bool = True,
                echo: Callable[[str], Any] = print) -> Path | None:  # fmt: skip
    """The checkpoint to start from; never one that would make this run overwrite or prune
    checkpoints of a different (or later) run already in ``out_dir``, never a damaged one. The main
    process (``main``) also tidies the folder for the run: leftovers removed, damaged checkpoints set aside."""
    found = ckpt.list_checkpoints(out_dir)
    if resume is None and found:
        raise ckpt.CheckpointError(
            f"{out_dir} already holds checkpoints up to {found[-1].name}: pass --resume auto to continue "
            f"that run, or choose another train.out_dir"
        )
    if main:
        cleaned = ckpt.clean_leftovers(out_dir)
        if cleaned:
            echo(f"removed {len(cleaned)} unfinished checkpoint write(s) of an earlier run: {', '.join(cleaned)}")
    if resume is None:
        return None
    if resume == "auto":
        return _newest_intact(found, out_dir, main, echo) if found else None
    start = ckpt.find_checkpoint(resume)
    problems = ckpt.verify_checkpoint(start)
    if problems:
        raise ckpt.CheckpointError(f"cannot resume from {start}: it is damaged:\n  " + "\n  ".join(problems))
    step = ckpt.read_checkpoint_info(start).step
    newer = [p for p in found if int(p.name.split("_")[-1]) > step]
    if newer:
        raise ckpt.CheckpointError(
            f"cannot resume from {start} into {out_dir}: it holds later checkpoints ({newer[-1].name}) that this "
            f"run would overwrite; resume from the newest (--resume auto) or choose another train.out_dir"
        )
    return start


def _newest_intact(found: list[Path], out_dir: Path, main: bool, echo: Callable[[str], Any]) -> Path:
    """The newest checkpoint that `ckpt.verify_checkpoint` finds intact; the damaged newer ones are set aside."""
    damaged: list[tuple[Path, list[str]]] = []
    for path in reversed(found):
        problems = ckpt.verify_checkpoint(path)
        if not problems:
            break
        damaged.append((path, problems))
    else:
        listing = "\n".join(f"  {p.name}: " + "\n    ".join(problems) for p, problems in damaged)
        raise ckpt.CheckpointError(
            f"cannot resume: no checkpoint in {out_dir / 'checkpoints'} is intact:\n{listing}\n"
            f"move the damaged folders elsewhere to start this run afresh, or choose another train.out_dir"
        )
    for bad, problems in damaged if main else []:  # the other processes only pick the same start
        where = set_aside(bad)
        echo(f"warning: checkpoint {bad.name} is damaged, set aside as {where.name}; resuming from {path.name}:\n  "
             + "\n  ".join(problems))  # fmt: skip
    return path


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder to ``damaged-<name>`` (``-2``, ``-3``, ... if taken), out of the
    ``step_*`` names, so that a run resumed from an older checkpoint neither reads nor overwrites it."""
    target, n = path.with_name(f"{DAMAGED_PREFIX}{path.name}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{DAMAGED_PREFIX}{path.name}-{n}")
    path.rename(target)
    return target


def other_folders(out_dir: Path) -> list[tuple[Path, str]]:
    """The folders in ``out_dir/checkpoints`` that are not checkpoints, each with what it is."""
    steps = set(ckpt.list_checkpoints(out_dir))
    found = sorted(p for p in (out_dir / "checkpoints").iterdir() if p.is_dir() and p not in steps)
    return [(p, next((what for prefix, what in _OTHER_FOLDERS.items() if p.name.startswith(prefix)),
                     "not made by dimdiff")) for p in found]  # fmt: skip


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
