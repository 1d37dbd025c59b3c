"""Time to accuracy: how long a run took to first reach each headline top-1 level, across resumes.

    clock = RunClock(counters, device)      # pipeline/runs/clock.py: training time and run time
    new = record_crossings(counters.tta, cfg.train.tta_thresholds, metrics["val/top1"], epoch=counters.epoch,
                           train_seconds=counters.train_seconds, wall_seconds=clock.wall_seconds())
    records.log({**metrics, **new})         # tta/92.6/train_seconds, tta/92.6/wall_seconds, tta/92.6/epoch

For each threshold in `train.tta_thresholds` the first evaluation whose headline top-1 reaches it
records three figures, keyed by the threshold in percent with one decimal (0.926 -> "92.6"):

- `train_seconds`: seconds spent in the training loop up to the end of that epoch: data loading,
  forward, backward, optimizer and EMA steps, logging; evaluation and checkpoint writing excluded.
  The device is synchronized when an epoch's loop ends, so queued GPU work is counted.
- `wall_seconds`: seconds the run's processes had been running when that evaluation finished,
  from the trainer's start (after Python has imported torch) and including start-up, compilation,
  evaluation and checkpoints.
- `epoch`: the 1-based epoch of that evaluation.

Both clocks are the run clock (pipeline/runs/clock.py `RunClock`), kept in the checkpoint counters
(`train_seconds`, `wall_seconds`) and continued on resume, so a resumed run's figures include every
attempt's start-up but not the work lost after the checkpoint it resumed from (that work is done
again and counted once). Crossings already recorded are kept, never recomputed. A threshold is only
seen at evaluations (`eval.every`).
"""

from __future__ import annotations

from typing import Iterable

# Top-1 is a ratio of integers: 926/1000 is the same double as 0.926, but allow for a sum of
# floats that lands one ulp short.
TOLERANCE = 1e-9
FIELDS = ("train_seconds", "wall_seconds", "epoch")


def threshold_key(threshold: float) -> str:
    """0.926 -> "92.6": the threshold in percent with one decimal."""
    return f"{100 * threshold:.1f}"


def reaches(top1: float, level: float) -> bool:
    return top1 >= level - TOLERANCE


def record_crossings(reached: dict[str, dict[str, float]], thresholds: Iterable[float], top1: float, *,
                     epoch: int, train_seconds: float, wall_seconds: float) -> dict[str, float]:
    """Record in `reached` (in place) each threshold that `top1` reaches for the first time.

    Returns the new figures as flat metric keys (`tta/92.6/train_seconds`, ...); empty when no
    threshold was crossed for the first time.
    """
    new: dict[str, float] = {}
    for threshold in sorted(thresholds):
        key = threshold_key(threshold)
        if key in reached or not reaches(top1, threshold):
            continue
        reached[key] = {"train_seconds": round(train_seconds, 3), "wall_seconds": round(wall_seconds, 3),
                        "epoch": epoch}
        new.update({f"tta/{key}/{name}": value for name, value in reached[key].items()})
    return new


def tta_summary(reached: dict[str, dict[str, float]]) -> dict[str, float]:
    """Every recorded crossing as flat metric keys, for the run's summary."""
    return {f"tta/{key}/{name}": entry[name] for key, entry in sorted(reached.items()) for name in FIELDS}


def describe_tta(reached: dict[str, dict[str, float]], thresholds: Iterable[float]) -> str:
    """One line for the console: each threshold's epoch and times, or 'not reached'."""
    parts = []
    for threshold in sorted(thresholds):
        key = threshold_key(threshold)
        entry = reached.get(key)
        if entry is None:
            parts.append(f"{key}% not reached")
        else:
            parts.append(f"{key}% at epoch {entry['epoch']} after {entry['train_seconds']:.1f} s of training "
                         f"({entry['wall_seconds']:.1f} s wall)")
    return "; ".join(parts)

