"""Read what W&B actually wrote: the records of a run's offline .wandb files.

The reader lives in the library (pipeline/runs/wandb_files.py), where the trainer uses it on resume to
learn what earlier sessions delivered; the tests use the same reader to check logged metrics
without mocking wandb.

W&B's writer is its own process (wandb-core): `run.finish()` and even the training process's exit
can return before it has flushed the transaction log. `offline_run` here waits until the latest
session's log is complete (its exit record is there), or has stopped growing (a killed session has
none), before reading it.
"""

import time
from pathlib import Path

from pipeline.runs.wandb_files import offline_run as read_offline_run
from pipeline.runs.wandb_files import read_records, read_session, session_logs

__all__ = ["offline_run", "read_records", "read_session", "session_logs"]


def offline_run(run_dir: Path, timeout: float = 60.0, quiet_s: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    last_size, quiet_since = -1, time.monotonic()
    while True:
        logs = session_logs(run_dir)
        if logs:
            out = read_offline_run(run_dir)
            if out["exit_code"] is not None and out["run"] is not None:
                return out
        size = sum(p.stat().st_size for p in logs)
        if size != last_size:
            last_size, quiet_since = size, time.monotonic()
        elif logs and time.monotonic() - quiet_since > quiet_s or time.monotonic() > deadline:
            return read_offline_run(run_dir)
        time.sleep(0.1)
