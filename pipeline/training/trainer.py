"""The training loop and its bookkeeping.

    trainer = Trainer(cfg, init_distributed(cfg.dist.backend))   # run dir, components, resume
    exit_code = trainer.fit()

`fit()` reads as a table of contents: per epoch `train_epoch()` -> `evaluate()` -> save, until
`train.epochs` or, when set, until the headline top-1 reaches `train.target_accuracy`; then
`finish()` records how the run ended, whatever the ending (a crash too): the summary, `end/reason`
and the exit code in W&B and summary.json (pipeline/runs/records.py). What a run is made of comes from
`build_components` (pipeline/training/components.py); the step and the evaluation are the free functions of
pipeline/training/step.py; checkpoints belong to `CheckpointManager`; time to accuracy is pipeline/training/tta.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from pipeline import distributed
from pipeline.config import Config
from pipeline.distributed import DistInfo
from pipeline.errors import EndReason, ExitCode, crash_ending, crash_exit_code
from pipeline.runs.clock import RunClock
from pipeline.runs.envinfo import describe, environment
from pipeline.runs.progress import Progress
from pipeline.runs.records import RunRecords
from pipeline.runs.rundir import discard_failed_start, open_run_dir, save_run_config, setup_logging
from pipeline.training.checkpoint import CheckpointManager, Counters
from pipeline.training.components import (build_components, build_training_step, load_data, resolve_num_classes,
                                          resolved_settings)
from pipeline.training.ema import name_evaluations
from pipeline.training.meters import ThroughputMeter
from pipeline.training.preemption import StopAgreement, StopRequest
from pipeline.training.step import evaluate
from pipeline.training.summary import (announce_continue, evaluate_checkpoint, final_summary, report_done_before,
                                      report_final, report_nonfinite)
from pipeline.training.tta import reaches, record_crossings

log = logging.getLogger("pipeline")

class NonFiniteLossError(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo) -> None:
        started = time.perf_counter()  # the run clock counts start-up (pipeline/runs/clock.py RunClock)
        setup_logging(dist.rank)
        data = load_data(cfg.data)  # the data completes the config (model.num_classes: auto) ...
        self.cfg = cfg = resolve_num_classes(cfg, data)
        self.dist = dist
        self.run = open_run_dir(cfg, dist.is_main)  # ... before config.yaml, checkpoints and W&B record it
        self.run_dir = self.run.path
        try:
            self.start_up(data, started)
        except BaseException:
            discard_failed_start(self.run)  # bad input found now leaves no new run directory behind
            raise

    def start_up(self, data: Any, started: float) -> None:
        """Logging, checkpoints and resume, components, meters and run records; then config.yaml."""
        cfg, dist = self.cfg, self.dist
        setup_logging(dist.rank, self.run_dir / "train.log")
        env = environment()
        if dist.is_main:
            log.info("run directory: %s", self.run_dir)
            log.info("%d process(es) on %s; %s", dist.world_size, dist.device, describe(env))
        self.checkpoints = CheckpointManager(cfg.checkpoint, self.run_dir, dist, cfg.to_dict(), cfg.train.epochs)
        resume = self.checkpoints.find_resume()
        self.parts = build_components(cfg, dist, resume, data=data)
        self.counters = self.checkpoints.restore(resume, self.parts) if resume else Counters()
        self.clock = RunClock(self.counters, dist.device, started)
        # True once train.target_accuracy is reached before the last epoch (here: before a resume):
        # the run then ends early with exit 0.
        self.stopped_at_target = self.target_reached(self.counters.final)
        # A run whose earlier session finished: this one trains nothing, and says so (fit).
        self.done_before = resume is not None and (self.counters.epoch >= cfg.train.epochs or self.stopped_at_target)
        self.stop = StopRequest()
        self.stop_agreed = StopAgreement(self.stop, dist.world_size)
        self.training_step = build_training_step(self.parts, cfg.train)
        self.meter = ThroughputMeter(self.parts.local_batch, cfg.logging.perf_warmup_steps, dist.device)
        self.progress = Progress(cfg.logging.progress, enabled=dist.is_main)
        save_run_config(cfg, self.run, dist.is_main)
        self.records = RunRecords(cfg, self.run_dir, is_main=dist.is_main, counters=self.counters, clock=self.clock,
                                  environment=env,
                                  resolved=resolved_settings(cfg, dist, self.parts, env) if dist.is_main else {})
        # Checkpoints stop the training clock and stamp the run time; once written, W&B rows settle.
        self.checkpoints.observers += [self.clock, self.records]

    # ------------------------------------------------------------------------------- fit

    def fit(self) -> ExitCode:
        if self.cfg.eval.only:
            return self.evaluate_only()
        if self.done_before:
            report_done_before(self.counters, self.cfg, self.dist, self.run_dir, self.stopped_at_target)
        self.stop.install()
        end, code = EndReason.CRASHED, ExitCode.ERROR  # unless the loop ends on its own
        try:
            end = self.run_epochs()
            code = end.exit_code
        except NonFiniteLossError as exc:
            report_nonfinite(exc, self.run_dir, self.cfg.optim.lr)
            end, code = EndReason.NONFINITE, ExitCode.NONFINITE
        except BaseException as exc:
            code = (end := crash_ending(exc)).exit_code  # bad_input (2) or crashed (1); the exception goes on up
            raise
        finally:
            self.stop.uninstall()
            self.finish(end, code)
        return code

    def run_epochs(self) -> EndReason:
        c = self.counters
        while c.epoch < self.cfg.train.epochs and not self.stopped_at_target:
            if not self.train_epoch():
                self.checkpoints.save_step(self.parts, c)
                log.warning("preempted at step %d: checkpoint written to %s; exit status %d",
                            c.global_step, self.run_dir, ExitCode.PREEMPTED)
                return EndReason.PREEMPTED
            c.epoch, c.step_in_epoch = c.epoch + 1, 0
            metrics = self.evaluate() if self.eval_due(c.epoch) else None
            if metrics is not None:
                self.record_evaluation(metrics)
                self.stopped_at_target = self.target_reached({**metrics, "epoch": c.epoch})
            self.checkpoints.save_epoch(self.parts, c, new_best=metrics is not None and c.best_epoch == c.epoch,
                                        final=self.stopped_at_target)
        if self.stopped_at_target:
            if self.dist.is_main:
                log.info("stopping at epoch %d of %d: top-1 %.2f%% reached train.target_accuracy %.2f%%", c.epoch,
                         self.cfg.train.epochs, 100 * c.final["val/top1"], 100 * self.cfg.train.target_accuracy)
            return EndReason.TARGET_REACHED
        return EndReason.FINISHED

    def evaluate_only(self) -> ExitCode:
        """eval.only: evaluate the restored weights (eval.json), then close W&B with the exit code."""
        code = ExitCode.ERROR
        try:
            evaluate_checkpoint(self.evaluate, self.counters, self.cfg.checkpoint, self.run_dir, self.dist)
            code = ExitCode.OK
            return code
        except BaseException as exc:
            code = crash_exit_code(exc)
            raise
        finally:
            self.records.finish(None, code, plot=False)  # W&B's exit state only: the training run did not end

    def target_reached(self, evaluation: dict[str, float]) -> bool:
        """Did `evaluation` (metrics and "epoch", or {} before any) reach train.target_accuracy before the last epoch?"""
        target = self.cfg.train.target_accuracy
        return (target > 0 and "val/top1" in evaluation and evaluation["epoch"] < self.cfg.train.epochs
                and reaches(evaluation["val/top1"], target))

    def eval_due(self, epochs_done: int) -> bool:
        every = self.cfg.eval.every
        return epochs_done == self.cfg.train.epochs or (every > 0 and epochs_done % every == 0)

    # ---------------------------------------------------------------------------- train

    def train_epoch(self) -> bool:
        """Run the rest of the current epoch; False if a stop was requested (after a whole step)."""
        c, parts, steps = self.counters, self.parts, self.parts.steps_per_epoch
        parts.wrapped.train()
        self.meter.start_epoch()
        self.progress.start_epoch(c.epoch, self.cfg.train.epochs, steps, c.step_in_epoch)
        self.clock.start_training()  # evaluation and checkpoints stay outside the training seconds
        try:
            for images, labels in self.meter.timed(parts.train_loader):
                self.training_step(images, labels, c.global_step)
                self.meter.step_done()
                c.step_in_epoch += 1
                c.global_step += 1
                self.progress.advance()
                if c.global_step % self.cfg.logging.log_every == 0 or c.step_in_epoch == steps:
                    self.log_training()
                every = self.cfg.checkpoint.every_steps
                if every and c.global_step % every == 0 and c.step_in_epoch < steps:
                    self.checkpoints.save_step(parts, c)
                if self.stop_agreed(c.global_step):
                    return False
        finally:
            self.clock.stop_training()
            self.progress.end_epoch()
        return not distributed.any_rank(self.stop.requested)

    def log_training(self) -> None:
        c, stats = self.counters, self.training_step.stats.read()
        if stats["max_bad_streak"] >= self.cfg.train.nonfinite_limit:
            raise NonFiniteLossError(
                f"the loss was NaN/inf for {stats['max_bad_streak']} consecutive steps "
                f"(train.nonfinite_limit = {self.cfg.train.nonfinite_limit}) at global step {c.global_step}")
        record: dict[str, Any] = {"step": c.global_step, "epoch": round(c.global_step / self.parts.steps_per_epoch, 4),
                                  "train/loss": stats["loss"], "train/lr": self.parts.optimizer.param_groups[0]["lr"]}
        record.update(self.meter.read() or {})
        if self.dist.device.type == "cuda":
            record["perf/gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        self.records.log(record)
        self.progress.report(c.step_in_epoch, self.parts.steps_per_epoch, record, self.eta_seconds())

    def eta_seconds(self) -> float:
        ips = self.meter.mean_images_per_sec_per_device
        remaining = self.cfg.train.epochs * self.parts.steps_per_epoch - self.counters.global_step
        return remaining * self.parts.local_batch / ips if ips == ips and ips > 0 else float("nan")

    # ------------------------------------------------------------------------- evaluate

    def evaluate(self) -> dict[str, float]:
        """val/* for the headline weights of eval.weights; val_ema/* and val_raw/* when both are evaluated."""
        self.parts.sync_buffers()
        models = self.parts.eval_models(self.cfg.eval.weights)
        return name_evaluations({name: evaluate(model, self.parts.eval_loader, self.parts.precision)
                                 for name, model in models.items()})

    def record_evaluation(self, metrics: dict[str, float]) -> None:
        c = self.counters
        c.final = {**metrics, "epoch": c.epoch}
        if metrics["val/top1"] > c.best_top1:
            c.best_top1, c.best_epoch = metrics["val/top1"], c.epoch
        crossed = record_crossings(c.tta, self.cfg.train.tta_thresholds, metrics["val/top1"], epoch=c.epoch,
                                   train_seconds=c.train_seconds, wall_seconds=self.clock.wall_seconds())
        record = {"step": c.global_step, "epoch": c.epoch, **metrics, **crossed}
        self.records.log(record)
        raw = f", raw weights {100 * metrics['val_raw/top1']:.2f}%" if "val_raw/top1" in metrics else ""
        log.info("epoch %d/%d: val top-1 %.2f%%, top-5 %.2f%%, loss %.4f (best %.2f%% at epoch %d)%s",
                 c.epoch, self.cfg.train.epochs, 100 * metrics["val/top1"], 100 * metrics["val/top5"],
                 metrics["val/loss"], 100 * c.best_top1, c.best_epoch, raw)

    # ----------------------------------------------------------------------------- finish

    def finish(self, end: EndReason, code: ExitCode) -> None:
        """The summary, why the run ended and its exit code (W&B and summary.json), whatever the ending."""
        try:
            summary = final_summary(self.counters, self.meter, self.dist, all_ranks=not end.raised)
            self.records.summary(summary)
            if not end.done:
                announce_continue(end, self.counters, self.dist, self.run_dir)
            elif not self.done_before:
                report_final(self.counters, self.cfg.train, self.dist, summary.get("perf/mean_images_per_sec", 0.0),
                             self.run_dir)
        finally:
            self.records.finish(end, code)
