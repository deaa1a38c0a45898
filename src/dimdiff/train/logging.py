"""JSON-lines metrics: one object per line, appended and flushed as training goes.

A run killed mid-write leaves at most a torn last line (no newline, not valid JSON): readers skip it,
and a resumed run drops it with a warning. Resuming at step s keeps the lines of steps <= s (written
after that checkpoint by a run that then stopped, the later ones are dropped); that truncation goes
through a temporary file renamed over the log, so a kill during it leaves the old log or the new one,
never an empty or half-written one. No other line is ever rewritten: a line that is not a JSON object
(edited by hand, say) is kept as it is, with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    def __init__(self, path: str | Path, resume_step: int | None = None,
                 warn: Callable[[str], None] = warnings.warn) -> None:  # fmt: skip
        """Open ``path`` for appending: empty for a new run; when resuming at ``resume_step``, cut to the
        records of steps <= resume_step."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            _replace(self.path, "")
        elif self.path.exists():
            kept = [line for line, record in _lines(self.path, warn) if record is None or _step(record) <= resume_step]
            _replace(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records (JSON objects) of a metrics file, skipping a torn last line and lines that are not objects."""
    return [record for _, record in _lines(Path(path), warn or (lambda message: None)) if record is not None]


def _lines(path: Path, warn: Callable[[str], None]) -> list[tuple[str, dict[str, Any] | None]]:
    """(line, its record or None where it is not a JSON object) for each non-empty line; a torn last line
    (the file does not end in a newline and the line does not parse) is left out, with a warning."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    out: list[tuple[str, dict[str, Any] | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if record is None and number == len(lines):  # no newline after it: a write cut short
            warn(f"{path}: dropped a torn last line ({len(line)} characters, written by a run that was stopped)")
            continue
        if not isinstance(record, dict):
            warn(f"{path}, line {number}: not a JSON object; kept as it is")
            record = None
        out.append((line, record))
    return out


def _step(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, int | float) else 0


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, synced, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
