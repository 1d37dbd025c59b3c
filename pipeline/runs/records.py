"""Where a run's figures go: metrics.jsonl (the record of truth), W&B, summary.json, resolved.json, curves.png.

    records = RunRecords(cfg, run_dir, is_main=dist.is_main, counters=counters, clock=clock,
                         environment=env, resolved=values)      # on resume: backfills W&B
    checkpoints.observers.append(records)                       # checkpoints settle W&B history
    records.log({"step": 100, "epoch": 0.5, "train/loss": 1.2})  # metrics.jsonl + W&B
    records.summary({"final/top1": 0.91})                       # W&B summary + summary.json
    records.finish(EndReason.FINISHED, ExitCode.OK)             # end/*, time/*, curves.png, W&B exit state

`runs/<name>/summary.json` holds, flat, every value passed to `summary()` plus `end/reason`,
`end/exit_code`, `end/global_step`, `end/epochs_done` (where the session stopped), `time/wall_seconds`
and `time/train_seconds` (the run clock's, pipeline/runs/clock.py); it is written at the
end of every run that ends on its own (finished, target reached, preempted, non-finite, crashed).
A resumed session starts from the previous summary.json without its `end/*` and `time/*` keys, so
a session killed before it could write one leaves no stale ending behind.
`runs/<name>/resolved.json` holds the `resolved/*` values (pipeline/runs/resolved.py) of the latest session.

Only rank 0 writes; on other ranks every call is a no-op.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from pipeline.config import Config
from pipeline.errors import EndReason, StorageError
from pipeline.files import atomic_write_text
from pipeline.runs.changes import recorded_config
from pipeline.runs.clock import RunClock, RunPosition
from pipeline.runs.metrics import MetricsLog
from pipeline.runs.per_class import CONFUSION_PLOT, PerClassReport, write_per_class
from pipeline.runs.plots import plot_curves
from pipeline.runs.tracking import Tracker, per_class_media

log = logging.getLogger(__name__)

SUMMARY_FILE, RESOLVED_FILE = "summary.json", "resolved.json"
SESSION_KEYS = ("end/", "time/")  # describe how a session ended: never carried into the next one


def write_json(path: Path, values: dict[str, Any]) -> None:
    """Write `values` to `path` through a temporary file and a rename: readers never see half a file."""
    atomic_write_text(path, json.dumps(values, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


class RunRecords:
    def __init__(self, cfg: Config, run_dir: Path, *, is_main: bool, counters: RunPosition, clock: RunClock,
                 environment: dict[str, Any], resolved: dict[str, Any]) -> None:
        self.run_dir, self.is_main, self.counters, self.clock = run_dir, is_main, counters, clock
        resumed = counters.global_step > 0
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=is_main, clock=clock)
        self.metrics.truncate_after(counters.global_step)  # a killed run may have logged past its checkpoint
        self.values: dict[str, Any] = {}  # everything summary() received: the W&B summary and summary.json
        if is_main:
            self.start_summary_file(resumed)
            write_json(run_dir / RESOLVED_FILE, resolved)
        self.tracker = Tracker(cfg.wandb, enabled=is_main, run_dir=run_dir, run_name=run_dir.name,
                               experiment=cfg.name, config=recorded_config(run_dir, cfg.to_dict()) if is_main else {},
                               environment=environment, resolved=resolved)
        self.tracker.backfill(self.metrics.read())
        self.tracker.settle(counters.global_step, epoch_closed=counters.epoch_closed)

    def start_summary_file(self, resumed: bool) -> None:
        """Carry a resumed run's summary.json over without its session keys; a fresh run starts with none."""
        path = self.run_dir / SUMMARY_FILE
        earlier = read_json(path) if resumed else {}
        self.values = {k: v for k, v in earlier.items() if not k.startswith(SESSION_KEYS)}
        if self.values:
            write_json(path, self.values)
        else:
            path.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------- records

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        self.tracker.log(record)

    def summary(self, values: dict[str, Any]) -> None:
        self.values.update(values)
        self.tracker.summary(values)

    def per_class(self, report: PerClassReport, folder: Path | None = None, step: int | None = None) -> None:
        """per_class.csv, confusion.csv, confusion.png into `folder` (default the run directory); W&B gets the
        table, the confusion chart and the picture with the history row of `step` (the final evaluation's), or
        in its summary when `step` is None (eval.only adds no history row)."""
        if not self.is_main:
            return
        folder = folder or self.run_dir
        write_per_class(folder, report)
        if self.tracker.run is None:
            return
        if step is None:
            self.tracker.summary(per_class_media(report, folder / CONFUSION_PLOT, chart=False))
        else:
            self.tracker.attach(step, per_class_media(report, folder / CONFUSION_PLOT))

    def log_best_weights(self) -> None:
        """The run's best checkpoint (best.pt, else last.pt) as a W&B model Artifact `<run>-weights`."""
        best = self.run_dir / "best.pt"
        path = best if best.is_file() else self.run_dir / "last.pt"
        if self.tracker.run is None or not path.is_file():
            return
        metadata = {k: self.values[k] for k in ("best/top1", "best/epoch", "final/top1", "final/top5") if k in self.values}
        self.tracker.log_model(path, f"{self.run_dir.name}-weights", ["best" if path == best else "latest"],
                               {"file": path.name, **metadata})

    # ------------------------------------------------- CheckpointManager observer (SaveObserver)

    def before_save(self, counters: RunPosition) -> None:
        pass  # the run clock, an observer before this one, stamps the counters

    def after_save(self, counters: RunPosition) -> None:
        self.tracker.settle(counters.global_step, epoch_closed=counters.epoch_closed)

    # ----------------------------------------------------------------------------- finish

    def finish(self, end: EndReason | None, exit_code: int, *, plot: bool = True) -> None:
        """Record why the run ended (W&B summary, summary.json), draw curves.png, close W&B with `exit_code`.

        `end` None (eval.only) closes W&B only.
        """
        try:
            if end is not None:
                self.summary(self.ending(end, exit_code))
                if self.is_main:
                    self.write_safely(lambda: write_json(self.run_dir / SUMMARY_FILE, self.values))
            if plot and self.is_main:
                self.write_safely(self.plot)
            if end in (EndReason.FINISHED, EndReason.TARGET_REACHED):
                self.log_best_weights()
        finally:
            self.tracker.finish(exit_code, preempting=end is EndReason.PREEMPTED,
                                final=end in (EndReason.FINISHED, EndReason.TARGET_REACHED))

    def ending(self, end: EndReason, exit_code: int) -> dict[str, Any]:
        return {"end/reason": end.value, "end/exit_code": int(exit_code), "end/global_step": self.counters.global_step,
                "end/epochs_done": self.counters.epoch,
                "time/wall_seconds": round(self.clock.wall_seconds(), 3),
                "time/train_seconds": round(self.counters.train_seconds, 3)}

    def plot(self) -> None:
        records = self.metrics.read()
        if records:
            plot_curves(records, self.run_dir / "curves.png", title=self.run_dir.name)

    @staticmethod
    def write_safely(write: Callable[[], None]) -> None:
        """A full disk or a vanished directory must not hide how the run ended (W&B still closes)."""
        try:
            write()
        except (OSError, StorageError) as exc:
            log.error("could not write to the run directory: %s", exc)
