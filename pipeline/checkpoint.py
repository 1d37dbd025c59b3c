"""Checkpoints: plain state_dicts and counters, written atomically, loaded strictly and safely.

A checkpoint is one file written by rank 0: model, optimizer, scheduler, scaler and EMA
state_dicts, the step/epoch counters, the best result so far, the resolved config as plain data,
and per-rank state (each rank's DALI pipeline position and RNG states) gathered from every rank.
Files are written to a temporary name, fsync'ed and renamed, so a crash never leaves a partial
`last.pt`; loading uses `torch.load(weights_only=True)`, so a checkpoint cannot run code.

Names in the run directory: `last.pt` (end of an epoch), `best.pt` (best top-1),
`step-00001234.pt` (every `checkpoint.every_steps`, the newest `keep_last` kept).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STEP_PATTERN = re.compile(r"^step-(\d{8,})\.pt$")
# Config keys that must match to resume: they change parameter shapes or what a step means.
MUST_MATCH = ("model", "train.global_batch_size", "data.source")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or belongs to a different run; the message names the file."""


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """Write `obj` to `path` so that readers see either the old file or the complete new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely; a truncated or corrupt file raises CheckpointError naming it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # truncated zip, bad pickle, disallowed global, ...
        raise CheckpointError(f"{path}: unreadable or corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of this project (format {ckpt.get('format_version') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...] = MUST_MATCH) -> list[str]:
    """`["model.name: 'a' in the checkpoint, 'b' now", ...]` for keys under `keys` that differ."""
    old, new = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(old) | set(new)):
        if any(key == k or key.startswith(k + ".") for k in keys) and old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} now")
    return diffs


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    diffs = config_differences(ckpt["config"], config)
    if diffs:
        raise CheckpointError(f"{path}: refusing to resume from a checkpoint of a different setup: " + "; ".join(diffs))


def step_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"step-{step:08d}.pt"


def resumable(run_dir: Path) -> list[Path]:
    """`last.pt` and the step checkpoints of a run directory (best.pt is a result, not a resume point)."""
    return sorted(p for p in run_dir.glob("*.pt") if p.name == "last.pt" or STEP_PATTERN.match(p.name))


def latest_good(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The loadable checkpoint with the highest global step; corrupt files are reported and skipped."""
    newest: tuple[Path, dict[str, Any]] | None = None
    for path in resumable(run_dir):
        try:
            ckpt = load(path)
        except CheckpointError as exc:
            log.warning("skipping a checkpoint: %s", exc)
            continue
        if newest is None or ckpt["counters"]["global_step"] > newest[1]["counters"]["global_step"]:
            newest = (path, ckpt)
    return newest


def prune_step_checkpoints(run_dir: Path, keep: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in run_dir.glob("step-*.pt") if (m := STEP_PATTERN.match(p.name)))
    for _, path in steps[:-keep]:
        path.unlink(missing_ok=True)
