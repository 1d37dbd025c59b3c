"""Where a run's figures go: metrics.jsonl (the record of truth), W&B, and curves.png at the end.

    records = RunRecords(cfg, run_dir, is_main=dist.is_main, resume_step=step, environment=env)
    records.log({"step": 100, "epoch": 0.5, "train/loss": 1.2})   # metrics.jsonl + W&B
    records.summary({"final/top1": 0.91})
    records.finish(plot=True)

Only rank 0 writes; on other ranks every call is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.metrics import MetricsLog, read_metrics
from pipeline.plots import plot_curves
from pipeline.tracking import Tracker


class RunRecords:
    def __init__(self, cfg: Config, run_dir: Path, *, is_main: bool, resume_step: int,
                 environment: dict[str, Any]) -> None:
        self.run_dir, self.is_main = run_dir, is_main
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=is_main)
        self.metrics.truncate_after(resume_step)  # a killed run may have logged past its checkpoint
        self.tracker = Tracker(cfg.wandb, enabled=is_main, run_dir=run_dir, run_name=run_dir.name,
                               experiment=cfg.name, config=cfg.to_dict(), environment=environment)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        self.tracker.log(record)

    def summary(self, values: dict[str, Any]) -> None:
        self.tracker.summary(values)

    def finish(self, plot: bool = True) -> None:
        """Draw curves.png from metrics.jsonl (rank 0) and close the W&B run."""
        if plot and self.is_main and self.metrics.path.exists():
            records = read_metrics(self.metrics.path)
            if records:
                plot_curves(records, self.run_dir / "curves.png", title=self.run_dir.name)
        self.tracker.finish()
