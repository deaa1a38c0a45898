"""Why training stopped or could not start; the CLI prints these as one-line errors."""

from __future__ import annotations

__all__ = ["RunFolderBusy", "TrainingError"]


class TrainingError(RuntimeError):
    """Training stopped (a non-finite or diverging loss, say), or could not start; checkpoints are intact."""


class RunFolderBusy(TrainingError):
    """Another training run holds the run folder's lock."""
