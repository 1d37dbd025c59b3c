"""Reading metrics.jsonl, without torch: `python -m pipeline.compare` reads runs and loads no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import RunDirError


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
