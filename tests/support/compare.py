"""Reading the table pipeline.tools.compare prints (tests/unit/test_compare.py, tests/e2e/test_compare_runs.py).
"""

from __future__ import annotations

import re


def text_table(stdout: str) -> list[dict[str, str]]:
    """The aligned table back into rows of {header: cell} (columns are separated by 2+ spaces)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    assert set(lines[1].replace(" ", "")) == {"-"}, lines[1]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]
    assert all(len(row) == len(header) for row in rows), stdout
    return [dict(zip(header, row)) for row in rows]

