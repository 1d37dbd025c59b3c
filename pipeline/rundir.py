"""The run directory (runs/<run-name>/) and the per-rank console/file logging."""

from __future__ import annotations

import datetime
import logging
import sys
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


def open_run_dir(cfg: Config, is_main: bool) -> Path:
    """The run's directory, agreed by all ranks; rank 0 creates it and writes the resolved config.yaml."""
    name = cfg.logging.run_name or (default_run_name(cfg.name) if is_main else None)
    run_dir = resolve_run_dir(cfg.logging.runs_dir, distributed.broadcast_object(name))
    if is_main:
        prepare_run_dir(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    distributed.barrier()
    return run_dir


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
