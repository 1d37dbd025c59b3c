"""metrics.jsonl, the run's record of truth: one JSON object per logging step and per evaluation.

    log = MetricsLog(run_dir / "metrics.jsonl", enabled=is_main, clock=clock)   # rank 0 writes
    records = read_metrics(run_dir / "metrics.jsonl")

Without torch: `python -m pipeline.tools.compare` reads runs and loads no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import RunDirError
from pipeline.files import atomic_write_text, storage_errors


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl; a partial last line (a run killed mid-write) is dropped, any other bad line is an error."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RunDirError(f"{path}:{number}: not a JSON record") from None
    return records


class Clock(Protocol):
    def wall_seconds(self) -> float: ...


class MetricsLog:
    """metrics.jsonl: one JSON object per logging step and per evaluation (rank 0 writes).

    Each record gets `time`, the run clock's seconds, which continue from the checkpoint on resume.
    """

    def __init__(self, path: Path, enabled: bool, clock: Clock) -> None:
        self.path, self.enabled, self.clock = path, enabled, clock

    def truncate_after(self, step: int) -> None:
        """On resume: drop records a killed run wrote after the checkpoint it resumes from."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        # Whole or not at all: a kill (or a full disk) during the rewrite must not lose the run's history.
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(self.clock.wall_seconds(), 3), **record}
        with storage_errors(self.path), open(self.path, "a") as fh:  # a line cut by a kill is dropped on reading
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path) if self.enabled and self.path.exists() else []
