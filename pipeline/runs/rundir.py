"""The run directory (runs/<run-name>/) and the per-rank console/file logging.

    run = open_run_dir(cfg, dist.is_main)   # every rank; rank 0 creates it and locks it, all check they share it
    ...                                     # the rest of start-up
    save_run_config(cfg.to_dict(), run, dist.is_main, resumed)   # config.yaml once start-up succeeded
    discard_failed_start(run)               # instead, when start-up failed: a directory made for it goes
    supersede(run.path)                     # a run that starts over: its earlier files move aside, kept

A directory that start-up made and that start-up failed in (bad input found after the directory was
opened: a model that cannot take the crop, a class count that does not match the data) is removed
again, so a failed command leaves nothing behind. A directory that existed before (an earlier
session's checkpoints) is never removed, and its config.yaml, written when the run started, is
kept when the run continues (changes go to config-changes.jsonl). Rank 0 holds an exclusive lock
on runs/<name>/.lock while it runs, so a second training process cannot write into the same run at
the same time. A run that starts over in its directory (checkpoint.resume=never, or
checkpoint.on_unreadable=restart when none of its checkpoints loads) first moves the earlier files
into runs/<name>/superseded-<date>-<time>/: nothing a user trusted is overwritten.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import Config
from pipeline.errors import RunDirError
from pipeline.files import atomic_write_text, fsync_dir
from pipeline.runs.changes import CHANGES_FILE

log = logging.getLogger(__name__)

RUN_NAME_STAMP = "%Y%m%d-%H%M%S"
FAILURE_PREFIX = ".failed-rank"  # runs/<name>/.failed-rank<k>.json: rank k met bad input (training/failures.py)
LOCK_FILE = ".lock"
LOG_FILE = "train.log"
SUPERSEDED_PREFIX = "superseded-"


def default_run_name(experiment: str) -> str:
    return f"{experiment}-{datetime.datetime.now().strftime(RUN_NAME_STAMP)}"


def is_default_run_name(name: str, experiment: str) -> bool:
    """Is `name` what default_run_name(experiment) gives, at some time?"""
    return re.fullmatch(re.escape(experiment) + r"-\d{8}-\d{6}", name) is not None


class RunLock:
    """An exclusive flock on runs/<name>/.lock, held by rank 0 for the life of its process.

    The kernel releases it when the process ends, however it ends (SIGKILL included), so a stale
    lock file is harmless. On a file system without flock (some Lustre mounts) there is no lock,
    and a warning says so.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder(run_dir)
            os.close(self.fd)
            self.fd = None
            raise RunDirError(f"run directory {run_dir}: another training process is using it ({holder}); wait "
                              "for it to end, or give this run another logging.run_name") from None
        except OSError as exc:
            log.warning("%s: no file lock on this file system (%s): nothing stops a second process from "
                        "training into this run at the same time", self.path, exc.strerror or exc)
            return
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def release(self) -> None:
        """Give the lock up before the process ends (tests; the trainer keeps it to the end)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def holder(run_dir: Path) -> str:
        try:
            return (run_dir / LOCK_FILE).read_text().strip() or "pid unknown"
        except OSError:
            return "pid unknown"

    @staticmethod
    def in_use(run_dir: Path) -> str | None:
        """Who holds the run's lock right now ("pid N on HOST"), or None when nobody does."""
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None  # never locked: no training process has opened it since locks exist
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two probes do not block each other
        except BlockingIOError:
            return RunLock.holder(run_dir)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            return None  # no locks on this file system: nothing can be said
        finally:
            os.close(fd)
        return None


@dataclass(frozen=True)
class RunDir:
    """The run directory as opened by this process."""

    path: Path
    created: bool  # rank 0 made it in this session (other ranks: False)
    lock: RunLock | None  # rank 0's lock, kept while the process lives


def resolve_run_dir(runs_dir: str, run_name: str) -> Path:
    """runs_dir/run_name, refusing names that would land outside runs_dir."""
    runs = Path(runs_dir).expanduser().resolve()
    path = (runs / run_name).resolve()
    if path.parent != runs or not run_name or Path(run_name).is_absolute():
        raise RunDirError(f"logging.run_name: {run_name!r} must be a plain directory name inside {runs}")
    return path


def prepare_run_dir(path: Path) -> None:
    """Create the directory and prove it is writable before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"run directory {path}: not writable ({exc.strerror or exc})") from None


# How long a rank looks for the check file rank 0 wrote before deciding that it does not share
# rank 0's run directory (s): allowance for a network file system's attribute caches.
SHARED_CHECK_WAIT_S = 3.0
SHARED_CHECK_PREFIX = ".shared-check-"


def open_run_dir(cfg: Config, is_main: bool) -> RunDir:
    """The run's directory, agreed by all ranks; rank 0 creates it and locks it.

    Rank 0 writes the checkpoints and every rank loads the one rank 0 picks on resume, so all ranks
    must see one directory: rank 0 leaves a random token in it, and a rank that cannot read the
    token back at its own resolution of logging.runs_dir (a node with a local runs/, say) makes
    every rank stop with a RunDirError naming it, before any work.
    """
    from pipeline import distributed  # here, not at the top: compare and the launcher read run dirs without torch

    name = distributed.broadcast_object(cfg.logging.run_name or (default_run_name(cfg.name) if is_main else None))
    created: tuple[str, str, str] | str = ""  # rank 0: (run directory, token, host), or what went wrong
    new_dir, lock = False, None
    if is_main:
        try:
            run_dir = resolve_run_dir(cfg.logging.runs_dir, name)
            new_dir = not run_dir.exists()
            prepare_run_dir(run_dir)
            lock = RunLock(run_dir)
            token = secrets.token_hex(16)
            (run_dir / f"{SHARED_CHECK_PREFIX}{token}").write_text(token)
            created = (str(run_dir), token, socket.gethostname())
        except RunDirError as exc:
            created = str(exc)
    # The other ranks look at the directory only now, after rank 0 created it: a lookup that found
    # nothing earlier could be cached by a network file system and hide the directory.
    created = distributed.broadcast_object(created)
    if isinstance(created, str):
        raise RunDirError(created)
    main_dir, token, main_host = created
    seen = distributed.gather_objects(_look_for_token(cfg.logging.runs_dir, name, token) + (socket.gethostname(),))
    problem = None
    if is_main:
        (Path(main_dir) / f"{SHARED_CHECK_PREFIX}{token}").unlink(missing_ok=True)
        problem = _unshared_message(main_dir, main_host, seen)
    problem = distributed.broadcast_object(problem)
    run = RunDir(Path(main_dir), created=new_dir, lock=lock)
    if problem:
        discard_failed_start(run)
        raise RunDirError(problem)
    return run


def save_run_config(config: dict, run: RunDir, is_main: bool, resumed: bool) -> None:
    """config.yaml (`config`: the run's config as plain data, as asked for: a time budget's plan goes to
    the summary and the checkpoints), written once start-up succeeded, when the run starts.

    A continued run keeps the config.yaml it started with; what changed since is appended to
    config-changes.jsonl (pipeline/runs/changes.py). A run that starts over in an existing directory
    (no checkpoint yet, or checkpoint.resume=never) starts its record over too. Failure records of an
    earlier session's ranks go.
    """
    if not is_main:
        return
    for stale in run.path.glob(f"{FAILURE_PREFIX}*.json"):  # an earlier session's ranks' (training/failures.py)
        stale.unlink(missing_ok=True)
    path = run.path / "config.yaml"
    if resumed and path.is_file():
        return
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))  # as Config.to_yaml writes it
    (run.path / CHANGES_FILE).unlink(missing_ok=True)


def supersede(run_dir: Path) -> Path | None:
    """Move the files of the run's earlier start into run_dir/superseded-<date>-<time>/ (None: there were none).

    Everything moves but the lock (held now), train.log (one log for every session of the directory,
    and open now) and earlier superseded folders: checkpoints, config.yaml, metrics.jsonl, summaries,
    W&B's files (the next start is a new W&B run). Renames within one directory: nothing is copied."""
    kept = {LOCK_FILE, LOG_FILE}
    earlier = sorted(p for p in run_dir.iterdir()
                     if p.name not in kept and not p.name.startswith((SUPERSEDED_PREFIX, SHARED_CHECK_PREFIX)))
    if not earlier:
        return None
    stamp = datetime.datetime.now().strftime(RUN_NAME_STAMP)
    target, n = run_dir / f"{SUPERSEDED_PREFIX}{stamp}", 1
    while target.exists():  # two restarts within a second
        n += 1
        target = run_dir / f"{SUPERSEDED_PREFIX}{stamp}-{n}"
    target.mkdir()
    for path in earlier:
        path.rename(target / path.name)
    fsync_dir(target)
    fsync_dir(run_dir)
    log.warning("run %s starts over: the files of its earlier start (%s) moved into %s; nothing was deleted",
                run_dir.name, ", ".join(p.name for p in earlier), target)
    return target


def discard_failed_start(run: RunDir) -> None:
    """After a failed start-up: remove the run directory if this session made it (rank 0; else nothing).

    Everything in a directory this session created was written by it (its lock kept others out),
    so the whole directory goes; one that existed before keeps every file.
    """
    if not run.created:
        return
    for handler in list(logging.getLogger().handlers):  # train.log is about to go
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run.path:
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(run.path, ignore_errors=True)


def _look_for_token(runs_dir: str, name: str, token: str) -> tuple[str, str]:
    """(what this rank finds: ok | missing | different | an error, the run directory it looked at)."""
    try:
        run_dir = resolve_run_dir(runs_dir, name)
    except RunDirError as exc:
        return str(exc), runs_dir
    check = run_dir / f"{SHARED_CHECK_PREFIX}{token}"
    deadline = time.monotonic() + SHARED_CHECK_WAIT_S
    while True:
        try:
            if check.read_text() == token:
                return "ok", str(run_dir)
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return ("different" if run_dir.is_dir() else "missing"), str(run_dir)
        time.sleep(0.1)


def _unshared_message(main_dir: str, main_host: str, seen: list[tuple[str, str, str]]) -> str | None:
    """The RunDirError for the ranks that do not see rank 0's run directory; None if all do."""
    what = {"missing": "finds no such directory", "different": "finds a different directory"}
    bad = [f"rank {rank} on {host} {what[state]} at {path}" if state in what else f"rank {rank} on {host}: {state}"
           for rank, (state, path, host) in enumerate(seen) if state != "ok"]
    if not bad:
        return None
    shown = "; ".join(bad[:4]) + (f"; and {len(bad) - 4} more rank(s)" if len(bad) > 4 else "")
    return (f"run directory {main_dir} (rank 0 on {main_host}): {shown}. logging.runs_dir must be one shared "
            "file-system path, the same on every node, so that every rank reads the checkpoints rank 0 writes")


def setup_logging(rank: int, log_file: Path | None = None) -> None:
    """Rank 0 logs INFO to stderr (and log_file); other ranks log warnings and errors only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter(("" if rank == 0 else f"[rank {rank}] ") + "%(asctime)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    if log_file is not None and rank == 0:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    for noisy in ("wandb", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
