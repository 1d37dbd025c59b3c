"""The skeleton every command-line entry point shares.

    exit_now(run_entry(argv, body))   # body(cfg, dist) -> exit status

Arguments `[CONFIG.yaml] [key=value ...]` become a validated config, the process joins the
process group torchrun describes (none for a single process), the world size is checked against
the config, `body` runs, and the group is torn down whatever happens. A `UserError` (bad config,
data, checkpoint, launch) prints one line (train.log gets it too once the run has one) and exits 2,
or 74 for a file that cannot be written (a full disk); anything else is a bug and keeps its
traceback. A stop signal during start-up (`Interrupted`) exits 75. `exit_now` ends a process that returned normally without Python's module teardown.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Callable

from pipeline.config import Config, load_config_args
from pipeline.constants import LAUNCHER_ENV, LAUNCHER_STOP_SIGNAL
from pipeline.errors import ExitCode, Interrupted, UserError

if TYPE_CHECKING:
    from pipeline.distributed import DistInfo


def print_user_error(exc: UserError, prefix: str = "error") -> None:
    """The error's one line on stderr, and in the run's log file when there is one (train.log)."""
    rank, world = os.environ.get("RANK"), int(os.environ.get("WORLD_SIZE", "1"))
    where = f" (rank {rank})" if world > 1 and rank is not None else ""
    line = f"{prefix}{where}: {exc}"
    print(line, file=sys.stderr)
    record = logging.makeLogRecord({"name": "pipeline", "levelno": logging.ERROR, "levelname": "ERROR", "msg": line})
    for handler in logging.getLogger().handlers:  # the console has it already: the files only
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_entry(argv: list[str], body: Callable[[Config, DistInfo], int]) -> int:
    """config -> init_distributed -> check the world size -> body(cfg, dist) -> destroy the group."""
    try:
        cfg = load_config_args(argv)
    except UserError as exc:
        print_user_error(exc, "config error")
        return int(ExitCode.BAD_INPUT)

    from pipeline import (
        distributed,  # after the config check: bad input fails fast, before torch loads
    )

    try:
        dist = distributed.init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
        cfg.check_world_size(dist.world_size)
        return int(body(cfg, dist))
    except UserError as exc:
        if not getattr(exc, "reported", False):  # a rank of several reports its own first (training/failures.py)
            print_user_error(exc)
        return int(exc.exit_code)
    except Interrupted as exc:  # a stop signal during start-up: nothing new to checkpoint
        if not LAUNCHER_STOP.is_set():  # else the launcher tells why it stopped the job (another worker ended)
            print(f"{exc.message}; nothing new to checkpoint (exit status {int(ExitCode.PREEMPTED)}): the same "
                  "command continues", file=sys.stderr)
        return int(ExitCode.PREEMPTED)
    finally:
        distributed.destroy()


# Set in a worker when ./launch.sh's agent says it is stopping the job because another worker ended
# (LAUNCHER_STOP_SIGNAL, sent right before torchrun's own SIGTERM to each worker still running): that
# SIGTERM is then no stop request of the user's, to announce or to pass back to the agent, and a
# collective that fails now failed because a peer is gone (pipeline/training/failures.py).
LAUNCHER_STOP = threading.Event()


def listen_for_the_launcher() -> None:
    """Install the handler of LAUNCHER_STOP_SIGNAL (train_dist.py, first thing)."""
    signal.signal(LAUNCHER_STOP_SIGNAL, lambda signum, frame: LAUNCHER_STOP.set())


def tell_the_agent() -> None:
    """Under ./launch.sh's torchrun agent (pipeline/tools/launch.py): ask it to stop the whole job.

    A worker that was asked to stop (a signal) or cannot go on (bad input) calls this once: the
    agent then signals every worker and does not restart any (--max-restarts is for crashes). Not
    when the agent is stopping the job already (LAUNCHER_STOP): its SIGTERM is not to be echoed."""
    if os.environ.get(LAUNCHER_ENV) and "TORCHELASTIC_RUN_ID" in os.environ and not LAUNCHER_STOP.is_set():
        try:
            os.kill(os.getppid(), signal.SIGTERM)
        except OSError:
            pass  # the agent is gone already


def exit_now(code: int) -> None:
    """Exit with `code` once every exit handler has run, skipping the interpreter's teardown.

    With torch, dynamo and DALI loaded, tearing down the modules takes seconds of CPU after the
    run's last line (BENCHMARKS.md, "Figures behind code comments"): every torchrun worker (and
    every test run) paid it. Nothing of ours relies on
    it: files are closed and W&B is finished by then, and exit handlers (atexit, weakref.finalize,
    W&B's, torch's) still run here. Only for a normal return; an exception keeps Python's exit
    and its traceback.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to lose
            pass
    os._exit(code)
