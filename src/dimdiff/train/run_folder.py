"""A run folder (``train.out_dir``): which checkpoint a run starts from.

The folder holds ``config.json``, ``metrics.jsonl``, ``samples/``, ``loss.png`` and the checkpoints
``step_XXXXXXXX/`` (`dimdiff.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

from dimdiff import checkpoint as ckpt

__all__ = ["resume_path"]


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
