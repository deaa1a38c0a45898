"""Divergence guard: stop a run whose loss has run away, and say which checkpoint predates it.

A non-finite loss stops training at once (the trainer's own check). A finite loss can diverge too
(8.8e11 and samples all zero, say): a step counts as diverging when its loss exceeds ``factor`` times
the median of the last ``window`` non-diverging losses; ``patience`` diverging steps in a row stop the
run. The divergence began at the first of them, step b, whose loss was computed on the weights after
step b - 1: the last good checkpoint is the newest one saved at a step s with s + 1 < b (its weights gave
a loss that did not diverge). The guard judges only once it has ``min_history`` losses (the start of training and
the first steps after a resume, whose history is not saved, are never judged).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DivergenceGuard"]


@dataclass
class DivergenceGuard:
    factor: float  # a loss above factor x running median diverges (0 = the guard is off)
    patience: int  # diverging steps in a row that stop the run
    window: int = 200  # losses the running median is taken over
    min_history: int = 50  # losses needed before any step is judged
    history: deque[float] = field(default_factory=deque)
    streak: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of the current diverging run
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)  # (step, path) saved so far, oldest first

    def update(self, step: int, loss: float) -> bool:
        """Record the loss of ``step``; True when the run has diverged (``patience`` diverging steps in a row)."""
        if self.factor <= 0:
            return False
        if len(self.history) >= self.min_history and loss > self.factor * self.median:
            self.streak.append((step, loss))
            return len(self.streak) >= self.patience
        self.history.extend(loss_ for _, loss_ in self.streak)  # a short excursion: part of the history after all
        self.history.append(loss)
        self.streak.clear()
        while len(self.history) > self.window:
            self.history.popleft()
        return False

    @property
    def median(self) -> float:
        return statistics.median(self.history)

    def saved(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path))

    @property
    def began(self) -> int | None:
        """The step the current diverging streak began at (None: no streak)."""
        return self.streak[0][0] if self.streak else None

    def last_good(self, began: int | None, fallback: Path | None) -> Path | None:
        """The newest checkpoint whose weights gave a loss that did not diverge, for a divergence that began
        at step ``began`` (None: the newest checkpoint); ``fallback`` (the checkpoint training started from)
        when none was saved since."""
        good = [path for step, path in self.checkpoints if began is None or step + 1 < began]
        return good[-1] if good else fallback

    def message(self, last_good: Path | None) -> str:
        """Why the run stopped (on a rank whose own losses did not diverge: that another rank's did)."""
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint predates it"
        if not self.streak:
            return f"the loss of another process diverged; training stopped, {where}"
        (began, first), (step, loss) = self.streak[0], self.streak[-1]
        after = [path.name for s, path in self.checkpoints if s + 1 >= began]
        tainted = f"; {', '.join(after)} already hold the diverging model" if after else ""
        return (f"the loss diverged: above {self.factor:g} x its running median ({self.median:.4g}) for "
                f"{len(self.streak)} steps in a row from step {began} (loss {first:.4g}; {loss:.4g} at step {step}); "
                f"training stopped, {where}{tainted}")  # fmt: skip
