"""A run's summary.json, read back (tests/unit/test_records.py, tests/e2e/test_tracking.py).
"""

from __future__ import annotations

import json
from pathlib import Path


def summary_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())

