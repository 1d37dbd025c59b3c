"""The evaluation at an epoch's end: when it is due, running it (a stop signal may cut it short), recording it.

    evaluation = EpochEvaluation(cfg, parts, timed=budget.timed)        # timed("evaluation"): a context manager
    if evaluation.due(counters.epoch):
        metrics = evaluation.run(should_stop=lambda: stop.requested)   # None: interrupted, redo it on resume
        evaluation.record(metrics, counters, records, clock)            # metrics.jsonl, W&B, the log line
        evaluation.target_reached({**metrics, "epoch": counters.epoch})  # train.target_accuracy before the end

The evaluation that may end the run (the last epoch's; every one when train.target_accuracy may stop
it early) also counts each class's predictions (confusion.py): the one that does end it leaves
per_class.csv, confusion.csv and confusion.png in the run directory and W&B (pipeline/runs/per_class.py).
eval.only asks for them too (`run(per_class=True)`; pipeline/training/eval_only.py writes them beside eval.json).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

from pipeline.config import Config
from pipeline.runs.clock import RunClock
from pipeline.runs.per_class import PerClassReport
from pipeline.runs.records import RunRecords
from pipeline.training.state import Counters
from pipeline.training.components import Components
from pipeline.training.confusion import ClassCounts
from pipeline.training.ema import name_evaluations
from pipeline.training.step import evaluate, evaluation_notes
from pipeline.training.time_to_accuracy import reaches, record_crossings

log = logging.getLogger("pipeline")


class EpochEvaluation:
    def __init__(self, cfg: Config, parts: Components,
                 timed: Callable[[str], ContextManager[None]] = lambda kind: nullcontext()) -> None:
        self.cfg, self.parts = cfg, parts
        self.class_report: PerClassReport | None = None  # the latest evaluation's per-class counts, when counted
        self.timed = timed  # a time budget measures every evaluation (pipeline/training/budget_run.py)

    def due(self, epochs_done: int) -> bool:
        every = self.cfg.eval.every
        return epochs_done == self.cfg.train.epochs or (every > 0 and epochs_done % every == 0)

    def may_end_the_run(self, epoch: int) -> bool:
        return epoch >= self.cfg.train.epochs or self.cfg.train.target_accuracy > 0

    def run(self, should_stop: Callable[[], bool] | None = None, epoch: int | None = None,
            per_class: bool = False) -> dict[str, float] | None:
        """val/* for the headline weights of eval.weights; val_ema/* and val_raw/* when both are evaluated.
        None when `should_stop` cut it short (on any rank). The headline weights' per-class counts go to
        `class_report` when `per_class` or when this evaluation (after `epoch`) may end the run."""
        if epoch is not None:  # a long evaluation (50,000 ImageNet images) is not a hang
            log.info("epoch %d/%d: evaluating (%d batches per process)", epoch, self.cfg.train.epochs,
                     len(self.parts.eval_loader))
        results = {}
        with self.timed("evaluation"):
            self.parts.sync_buffers()
            count = per_class or (epoch is not None and self.may_end_the_run(epoch))
            counts = ClassCounts(self.parts.num_classes, self.parts.precision.device) if count else None
            self.class_report = None
            for name, model in self.parts.eval_models(self.cfg.eval.weights).items():
                result = evaluate(model, self.parts.eval_loader, self.parts.precision, self.cfg.eval.tta == "flip",
                                  should_stop, class_counts=counts if not results else None)  # the headline's
                if result is None:
                    return None
                if counts is not None and not results:
                    classes = self.parts.classes or [str(i) for i in range(self.parts.num_classes)]
                    self.class_report = PerClassReport(*counts.total(), classes)
                results[name] = result
        return name_evaluations(results)

    def target_reached(self, evaluation: dict[str, Any]) -> bool:
        """Did `evaluation` (metrics and "epoch", or {} before any) reach train.target_accuracy before the last epoch?"""
        target = self.cfg.train.target_accuracy
        return (target > 0 and "val/top1" in evaluation and evaluation["epoch"] < self.cfg.train.epochs
                and reaches(evaluation["val/top1"], target))

    def record(self, metrics: dict[str, float], c: Counters, records: RunRecords, clock: RunClock) -> None:
        """The counters' final/best figures and time to accuracy; metrics.jsonl and W&B; the log line."""
        c.final = {**metrics, "epoch": c.epoch}
        if metrics["val/top1"] > c.best_top1:
            c.best_top1, c.best_epoch = metrics["val/top1"], c.epoch
        crossed = record_crossings(c.tta, self.cfg.train.tta_thresholds, metrics["val/top1"], epoch=c.epoch,
                                   train_seconds=c.train_seconds, wall_seconds=clock.wall_seconds())
        records.log({"step": c.global_step, "epoch": c.epoch, **metrics, **crossed})
        ends = c.epoch >= self.cfg.train.epochs or self.target_reached({**metrics, "epoch": c.epoch})
        if ends and self.class_report is not None:
            records.per_class(self.class_report, step=c.global_step)
        notes = evaluation_notes(metrics)  # the raw weights' top-1; the top-1 without flip (eval.tta=flip)
        log.info("epoch %d/%d: val top-1 %.2f%%, top-5 %.2f%%, loss %.4f (best %.2f%% at epoch %d)%s",
                 c.epoch, self.cfg.train.epochs, 100 * metrics["val/top1"], 100 * metrics["val/top5"],
                 metrics["val/loss"], 100 * c.best_top1, c.best_epoch, notes)

    def announce_target(self, c: Counters) -> None:
        log.info("stopping at epoch %d of %d: top-1 %.2f%% reached train.target_accuracy %.2f%%", c.epoch,
                 self.cfg.train.epochs, 100 * c.final["val/top1"], 100 * self.cfg.train.target_accuracy)
