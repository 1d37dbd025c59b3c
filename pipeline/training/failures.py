"""When one rank cannot go on, every rank stops soon, and what the user reads first is that rank's error.

    report_failure(exc, run_dir, dist)        # the rank that met it: prints its line, leaves a record, tells the agent
    peer = peer_failure(exc, run_dir, dist)   # a rank whose collective then broke: the record of the rank that failed
    peer_gone(exc, dist)                      # a collective broke because another process is gone (killed, crashed)

A user error (a corrupt image, a missing shard) is often met by one rank alone: the others are
waiting for it in a collective. That rank prints its one-line error first, writes
runs/<name>/.failed-rank<k>.json, and asks ./launch.sh's agent to stop the job
(pipeline/entry.py `tell_the_agent`: no restart, however many --max-restarts). When it exits, the
other ranks' pending collectives fail (gloo: at once; NCCL: when the agent's SIGTERM and shutdown
timeout end them); a rank that sees its collective fail while another rank's record exists stops
quietly with that rank's ending instead of a traceback of its own: the user reads one error, the
right one. Rank 0 removes old records when a session starts.

A process that dies without a word (SIGKILL, the OOM killer, a segfault, a crash) leaves its peers'
collectives failing ("Connection reset by peer"): forty lines of gloo traceback per rank about the
consequence, not the cause. Those peers fold it away: the traceback goes to
runs/<name>/rank<k>-error.log (`fold_peer_error`) and the rank stops as crashed; under ./launch.sh
it prints nothing (the launcher names the process that died and how, pipeline/tools/launch.py),
without it one line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from pipeline.constants import LAUNCHER_ENV, RANK_ERROR_LOG
from pipeline.distributed import DistInfo
from pipeline.entry import LAUNCHER_STOP, print_user_error, tell_the_agent
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


# How gloo and NCCL say that the other end of a collective is gone.
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
             "remote process exited", "NCCL communicator was aborted")


def peer_gone(exc: BaseException, dist: DistInfo) -> bool:
    """Did `exc` happen because another process of the job is gone? (Only with several processes: the launcher
    said it is stopping the job because another worker ended, or a collective failed for want of its peer.)"""
    if not dist.distributed or not isinstance(exc, Exception) or isinstance(exc, UserError):
        return False
    return LAUNCHER_STOP.is_set() or isinstance(exc, torch.distributed.DistError) or any(
        text in str(exc) for text in PEER_GONE)


def fold_peer_error(exc: BaseException, run_dir: Path, dist: DistInfo) -> None:
    """The traceback of a collective that broke because a peer is gone, to runs/<name>/rank<k>-error.log; under
    ./launch.sh nothing on the console (the launcher names the process that died), else one line."""
    path = run_dir / RANK_ERROR_LOG.format(rank=dist.rank)
    try:
        atomic_write_text(path, "".join(traceback.format_exception(exc)))
        where = f"its traceback: {path}"
    except OSError as err:
        where = f"its traceback could not be written to {path}: {err.strerror or err}"
    if not os.environ.get(LAUNCHER_ENV):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"rank {dist.rank}: stopping: a collective operation failed because another process of the job is gone "
              f"({type(exc).__name__}: {first[:200]}); {where}", file=sys.stderr, flush=True)


def failure_ending(exc: BaseException, run_dir: Path, dist: DistInfo) -> tuple[EndReason, bool]:
    """How an exception that escaped the training loop ends the run, and whether it goes on up.

    A user error: this rank reports it first (and stops the job); it goes on up (exit 2). A collective
    that broke because another rank failed: that rank's ending, and it stops here (no traceback). A
    collective that broke because a process died: a crash, its traceback folded into a file. Anything
    else: a crash, with its traceback.
    """
    report_failure(exc, run_dir, dist)
    peer = peer_failure(exc, run_dir, dist)
    if peer is not None:
        return EndReason(peer.get("end", EndReason.BAD_INPUT.value)), False
    if peer_gone(exc, dist):
        fold_peer_error(exc, run_dir, dist)
        return EndReason.CRASHED, False
    return crash_ending(exc), True
