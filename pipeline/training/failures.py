"""When one rank cannot go on, every rank stops soon, and what the user reads first is that rank's error.

    report_failure(exc, run_dir, dist)    # the rank that met it: prints its line, leaves a record, tells the agent
    peer = peer_failure(run_dir, dist)    # a rank whose collective then broke: the record of the rank that failed

A user error (a corrupt image, a missing shard) is often met by one rank alone: the others are
waiting for it in a collective. That rank prints its one-line error first, writes
runs/<name>/.failed-rank<k>.json, and asks ./launch.sh's agent to stop the job
(pipeline/entry.py `tell_the_agent`: no restart, however many --max-restarts). When it exits, the
other ranks' pending collectives fail (gloo: at once; NCCL: when the agent's SIGTERM and shutdown
timeout end them); a rank that sees its collective fail while another rank's record exists stops
quietly with that rank's ending instead of a traceback of its own: the user reads one error, the
right one. Rank 0 removes old records when a session starts.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.distributed import DistInfo
from pipeline.entry import print_user_error, tell_the_agent
from pipeline.errors import EndReason, UserError, crash_ending
from pipeline.files import atomic_write_text
from pipeline.runs.rundir import FAILURE_PREFIX as PREFIX

log = logging.getLogger("pipeline")

WAIT_S = 3.0  # how long a rank whose collective broke looks for the failing rank's record (shared file systems)


def report_failure(exc: BaseException, run_dir: Path, dist: DistInfo) -> None:
    """On the rank that met a user error in a run of several processes: say it first, record it, stop the job."""
    if not (dist.distributed and isinstance(exc, UserError)):
        return
    print_user_error(exc)
    exc.reported = True  # type: ignore[attr-defined]  # the entry point does not print it again
    record = {"rank": dist.rank, "error": type(exc).__name__, "message": str(exc), "user_error": True,
              "end": crash_ending(exc).value}
    try:
        atomic_write_text(run_dir / f"{PREFIX}{dist.rank}.json", json.dumps(record))
    except (OSError, UserError):  # a full disk: the other ranks then fail as they would without the record
        pass
    tell_the_agent()


def peer_failure(exc: BaseException, run_dir: Path, dist: DistInfo) -> dict[str, Any] | None:
    """Another rank's failure record when `exc` is this rank's collective failing because of it; else None."""
    if not dist.distributed or isinstance(exc, UserError) or not isinstance(exc, Exception):
        return None
    deadline = time.monotonic() + WAIT_S
    while True:
        for path in sorted(run_dir.glob(f"{PREFIX}*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if record.get("rank") != dist.rank:
                log.error("stopping: rank %d met bad input (its error is above)", record["rank"])
                return record
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def failure_ending(exc: BaseException, run_dir: Path, dist: DistInfo) -> tuple[EndReason, bool]:
    """How an exception that escaped the training loop ends the run, and whether it goes on up.

    A user error: this rank reports it first (and stops the job); it goes on up (exit 2). A collective
    that broke because another rank failed: that rank's ending, and it stops here (no traceback).
    Anything else: a crash, with its traceback.
    """
    report_failure(exc, run_dir, dist)
    peer = peer_failure(exc, run_dir, dist)
    if peer is not None:
        return EndReason(peer.get("end", EndReason.BAD_INPUT.value)), False
    return crash_ending(exc), True
