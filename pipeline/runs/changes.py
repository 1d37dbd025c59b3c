"""Config changes when a run continues: which keys may change, which stop the start, and the record.

    changes = config_changes(saved, current)         # [Change(key, old, new, kind)], saved = the checkpoint's config
    refuse_unaccepted(changes, accepted, run_name)   # ConfigError: each key old -> new, and the ways forward
    unaccepted(changes, accepted)                    # the refused ones alone (launch.sh: its way forward)
    append_changes(run_dir, changes, step, epoch)    # runs/<name>/config-changes.jsonl, one line per key
    note_world_size(records.log, 2, 1, 64, step, epoch)   # another process count: a log line, a metrics record
    config = effective_config(run_dir)               # config.yaml with every recorded change applied

A run's config.yaml is what it started with and is never rewritten once the run has trained; a
session that continues it with other values leaves the original in place and appends what changed,
at which global step, to config-changes.jsonl (and to W&B's config, pipeline/runs/tracking.py).

Two kinds of key, declared on each field of the schema (`on_resume`, pipeline/config/schema.py;
pipeline/config/resume.py lists them):
- free: keys that change nothing trained (where logs and W&B go, checkpoint cadence, how fast the
  loader runs, evaluation cadence and batch, compilation, when to stop early). They change freely,
  and the change is recorded.
- experiment: every other key, new keys included (the model, the data and its augmentation, the
  optimizer, the schedule, the seed, the global batch, precision, train.epochs). A continued run
  with one of these changed does not start; the message names each key, old -> new, and the ways
  forward: a new run, or `checkpoint.accept_changes=[key,...]` to continue this one with them.
  (Some of them may not change at all: pipeline/training/checkpoint.py `MUST_MATCH`.)

train.epochs, accepted: the schedule is recomputed for the new length from the current step on.
Schedules defined over the whole run (cosine, poly, onecycle, a linear warm-up's end) move to the
new curve's value at this step, so the learning rate can jump; multistep milestones are epochs
and stay where they were (extending a finished multistep run continues at its last rate).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from pipeline.config import FREE_KEYS, NOT_COMPARED_KEYS
from pipeline.errors import ConfigError
from pipeline.files import storage_errors

log = logging.getLogger(__name__)

CHANGES_FILE = "config-changes.jsonl"


def is_free(key: str) -> bool:
    """The key changes nothing trained: the schema declares it (or its section) free (FREE_KEYS: keys, and
    sections ending in "."); a key a saved config holds and the schema no longer does follows its section."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in FREE_KEYS)


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    kind: str  # "free" | "experiment"

    def describe(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) or value is None else str(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def schema_defaults() -> dict[str, Any]:
    """Every config key's default, flattened."""
    from pipeline.config import Config

    return flatten(Config().to_dict())


def with_later_keys(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A saved config (flattened) completed with the defaults of the keys `current` has and it lacks: keys added
    to the schema after it was written, whose default keeps the behaviour the run had, so a run started before
    them continues unchanged (and one given another value is a change)."""
    defaults = schema_defaults()
    return {**{k: defaults[k] for k in current if k not in saved and k in defaults}, **saved}


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """Every key whose value differs between `saved` (what the run trained with) and `current`."""
    new = flatten(current)
    old = with_later_keys(flatten(saved), new)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in NOT_COMPARED_KEYS or _same(old.get(key), new.get(key)):
            continue
        changes.append(Change(key, old.get(key), new.get(key), "free" if is_free(key) else "experiment"))
    return changes


def unaccepted(changes: list[Change], accepted: list[str]) -> list[Change]:
    """The changes of experiment keys that `accepted` (checkpoint.accept_changes) does not accept."""
    return [c for c in changes if c.kind == "experiment" and c.key not in accepted and "all" not in accepted]


def refuse_unaccepted(changes: list[Change], accepted: list[str], run_name: str) -> None:
    """ConfigError unless every experiment key that changed is in `accepted` (checkpoint.accept_changes)."""
    refused = unaccepted(changes, accepted)
    if not refused:
        return
    keys = ",".join(c.key for c in refused)
    epochs = (" Accepting train.epochs recomputes the learning-rate schedule for the new length from this step "
              "(cosine, poly and onecycle move to the new curve; multistep milestones stay)."
              if any(c.key == "train.epochs" for c in refused) else "")
    raise ConfigError(
        f"run {run_name} was trained with other values: {'; '.join(c.describe() for c in refused)}. "
        f"Continuing it would mix two experiments in one record. Either start a new run (./launch.sh --new ..., "
        f"or another logging.run_name), or continue this one with the new values and record the change: "
        f"checkpoint.accept_changes=[{keys}] (config.yaml keeps the original; {CHANGES_FILE} gets each "
        f"change and its step).{epochs}")


def append_changes(run_dir: Path, changes: list[Change], step: int, epoch: int) -> None:
    """Append one line per change: {"step", "epoch", "key", "old", "new", "kind", "time"}."""
    if not changes:
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with storage_errors(run_dir / CHANGES_FILE), open(run_dir / CHANGES_FILE, "a") as fh:
        for change in changes:
            fh.write(json.dumps({"step": step, "epoch": epoch, **asdict(change), "time": stamp}) + "\n")


def note_changes(run_dir: Path, changes: Iterable[Change], step: int, epoch: int) -> None:
    """Log and record the changes a continued run accepted or that change nothing trained."""
    changes = list(changes)
    for change in changes:
        if change.kind == "experiment":
            log.warning("continuing with %s from global step %d (accepted by checkpoint.accept_changes)",
                        change.describe(), step)
        else:
            log.info("continuing with %s (changes nothing trained)", change.describe())
    append_changes(run_dir, changes, step, epoch)


def note_world_size(log_record: Callable[[dict[str, Any]], None], before: int, now: int, global_batch: int, step: int,
                    epoch: float) -> None:
    """A run continued on another number of processes than the one that wrote its checkpoint: one log line,
    and `dist/world_size` in metrics.jsonl (and W&B) from this session's first step (`step` + 1) on."""
    log.warning("continuing with %d process(es); the checkpoint was written by %d: the global batch stays %d "
                "(%d per process, was %d)", now, before, global_batch, global_batch // now, global_batch // before)
    log_record({"step": step + 1, "epoch": epoch, "dist/world_size": now})


def read_changes(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded changes, oldest first ([] when none; a line cut off by a kill is skipped)."""
    try:
        lines = (run_dir / CHANGES_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def original_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml as written when the run started ({} when absent or unreadable)."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def effective_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml with every recorded change applied: the values the run trains with now."""
    flat = flatten(original_config(run_dir))
    for change in read_changes(run_dir):
        flat[change["key"]] = change["new"]
    return unflatten(flat)


def recorded_config(run_dir: Path, current: dict[str, Any]) -> dict[str, Any]:
    """What W&B's config shows: the config the run started with, and `config_changes` when any were made."""
    config = original_config(run_dir) or current
    changes = read_changes(run_dir)
    return {**config, "config_changes": changes} if changes else config
