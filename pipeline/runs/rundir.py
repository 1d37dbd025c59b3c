"""The run directory (runs/<run-name>/) and the per-rank console/file logging.

    run_dir = open_run_dir(cfg, dist.is_main)   # every rank; rank 0 creates it, all check they share it
"""

from __future__ import annotations

import datetime
import logging
import secrets
import socket
import sys
import time
from pathlib import Path

from pipeline import distributed
from pipeline.config import Config, save_config
from pipeline.errors import RunDirError


def default_run_name(experiment: str) -> str:
    return f"{experiment}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


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


def open_run_dir(cfg: Config, is_main: bool) -> Path:
    """The run's directory, agreed by all ranks; rank 0 creates it and writes the resolved config.yaml.

    Rank 0 writes the checkpoints and every rank loads the one rank 0 picks on resume, so all ranks
    must see one directory: rank 0 leaves a random token in it, and a rank that cannot read the
    token back at its own resolution of logging.runs_dir (a node with a local runs/, say) makes
    every rank stop with a RunDirError naming it, before any work.
    """
    name = distributed.broadcast_object(cfg.logging.run_name or (default_run_name(cfg.name) if is_main else None))
    created: tuple[str, str, str] | str = ""  # rank 0: (run directory, token, host), or what went wrong
    if is_main:
        try:
            run_dir = resolve_run_dir(cfg.logging.runs_dir, name)
            prepare_run_dir(run_dir)
            save_config(cfg, run_dir / "config.yaml")
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
    if problem:
        raise RunDirError(problem)
    return Path(main_dir)


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
