"""The training loop and its bookkeeping.

    trainer = Trainer(cfg, init_distributed(cfg.dist.backend))   # run dir, components, resume
    exit_code = trainer.fit()

`fit()` reads as a table of contents: per epoch `train_epoch()` -> `evaluate()` -> save, until
`train.epochs` or, when set, until the headline top-1 reaches `train.target_accuracy`; then
`finish()` records how the run ended, whatever the ending (a crash too): the summary, `end/reason`
and the exit code in W&B and summary.json (pipeline/runs/records.py). What a run is made of comes from
`build_components` (pipeline/training/components.py); the step and the evaluation are the free functions of
pipeline/training/step.py; checkpoints belong to `CheckpointManager`; time to accuracy is
pipeline/training/time_to_accuracy.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from pipeline.config import Config
from pipeline.distributed import DistInfo
from pipeline.errors import EndReason, ExitCode
from pipeline.runs.clock import RunClock
from pipeline.runs.envinfo import describe, environment
from pipeline.runs.progress import Progress
from pipeline.runs.records import RunRecords
from pipeline.runs.changes import note_changes, note_world_size
from pipeline.runs.rundir import discard_failed_start, open_run_dir, save_run_config, setup_logging
from pipeline.training.budget_measure import start_budget
from pipeline.training.budget_run import restored_budget
from pipeline.training.checkpoint import CheckpointManager
from pipeline.training.components import (build_components, build_training_step, load_data, resolve_num_classes,
                                          resolved_settings)
from pipeline.training.evaluation import EpochEvaluation
from pipeline.training.failures import failure_ending
from pipeline.training.meters import ThroughputMeter
from pipeline.training.preemption import StopAgreement, StopRequest
from pipeline.training.recipe import describe_recipe
from pipeline.training.schedule import total_steps
from pipeline.training.state import Counters
from pipeline.training.summary import (announce_continue, final_summary, report_done_before, report_final,
                                      report_nonfinite)

log = logging.getLogger("pipeline")

class NonFiniteLossError(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo) -> None:
        started = time.perf_counter()  # the run clock counts start-up (pipeline/runs/clock.py RunClock)
        self.stop = StopRequest().install(at_once=True)  # a signal during start-up ends it now (Interrupted)
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
            self.stop.uninstall()
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
        resume = self.checkpoints.find_resume()  # refuses unaccepted changes of experiment keys
        self.budget = restored_budget(cfg, resume)  # train.time_budget: the plans a continued run recorded
        self.cfg = cfg = self.budget.planned_config(cfg)
        self.parts = build_components(cfg, dist, resume, data=data)  # a budget sets its schedule before restore()
        self.cfg, self.budget = cfg, _ = start_budget(cfg, self.parts, dist, self.run_dir, data, self.budget, resume)
        self.counters = self.checkpoints.restore(resume, self.parts) if resume else Counters()
        self.checkpoints.budget, self.checkpoints.epochs = self.budget, cfg.train.epochs
        self.clock = RunClock(self.counters, dist.device, started)
        self.evaluation = EpochEvaluation(cfg, self.parts, timed=self.budget.timed)
        # True once train.target_accuracy is reached before the last epoch (here: before a resume):
        # the run then ends early with exit 0.
        self.stopped_at_target = self.evaluation.target_reached(self.counters.final)
        # A run whose earlier session finished: this one trains nothing, and says so (fit).
        self.done_before = resume is not None and (self.counters.epoch >= cfg.train.epochs or self.stopped_at_target)
        self.total_steps = total_steps(cfg.train.epochs, self.parts.steps_per_epoch, cfg.train.max_steps)
        self.stop_agreed = StopAgreement(self.stop, dist.world_size)
        self.training_step = build_training_step(self.parts, cfg.train)
        self.meter = ThroughputMeter(self.parts.local_batch, cfg.logging.perf_warmup_steps, dist.device)
        self.progress = Progress(cfg.logging.progress, enabled=dist.is_main)
        self.stop.defer()  # from here a signal waits for a checkpoint (W&B starts below: not to be cut short)
        save_run_config(self.checkpoints.config, self.run, dist.is_main, resumed=resume is not None)  # as asked
        if resume is not None and dist.is_main:  # config.yaml keeps the original; what changed is appended
            note_changes(self.run_dir, resume.changes, self.counters.global_step, self.counters.epoch)
        resolved = resolved_settings(cfg, dist, self.parts, env) if dist.is_main else {}
        if resolved:
            log.info("%s", describe_recipe(resolved))  # the schedule and every augmentation option, on and off
        self.records = RunRecords(cfg, self.run_dir, is_main=dist.is_main, counters=self.counters, clock=self.clock,
                                  environment=env, resolved=resolved)
        self.budget.start(self.records, first_session=resume is None, is_main=dist.is_main)
        if resume is not None and resume.ckpt["world_size"] != dist.world_size and dist.is_main:
            step = self.counters.global_step
            note_world_size(self.records.log, resume.ckpt["world_size"], dist.world_size, cfg.train.global_batch_size,
                            step, round((step + 1) / self.parts.steps_per_epoch, 4))
        # Checkpoints stop the training clock and stamp the run time; W&B rows settle; a time budget times them.
        self.checkpoints.observers += [self.clock, self.records, self.budget]

    # ------------------------------------------------------------------------------- fit

    def fit(self) -> ExitCode:
        if self.done_before:
            report_done_before(self.counters, self.cfg, self.dist, self.run_dir, self.stopped_at_target)
        end, code = EndReason.CRASHED, ExitCode.ERROR  # unless the loop ends on its own
        try:
            end = self.run_epochs()
            code = end.exit_code
        except NonFiniteLossError as exc:
            report_nonfinite(exc, self.run_dir, self.cfg.optim.lr)
            end, code = EndReason.NONFINITE, ExitCode.NONFINITE
        except BaseException as exc:
            end, goes_up = failure_ending(exc, self.run_dir, self.dist)  # a peer's failure ends here, quietly
            code = end.exit_code  # bad_input (2), io_error (74) or crashed (1)
            if goes_up:
                raise
        finally:
            try:
                self.finish(end, code)
            finally:
                self.stop.uninstall()  # after finish: a second Ctrl-C while W&B closes still exits at once
        return code

    def run_epochs(self) -> EndReason:
        c = self.counters
        if self.stop_agreed.now():  # a signal at the end of start-up: the newest checkpoint is already the latest
            return self.preempted()
        while True:
            if c.eval_pending and not self.close_epoch():
                return self.preempted()
            if c.epoch >= self.cfg.train.epochs or self.stopped_at_target:
                break
            if not self.train_epoch():
                return self.preempted()
            c.epoch, c.step_in_epoch, c.eval_pending = c.epoch + 1, 0, True
        if self.stopped_at_target:
            self.evaluation.announce_target(c)
            return EndReason.TARGET_REACHED
        return EndReason.FINISHED

    def close_epoch(self) -> bool:
        """The finished epoch's evaluation (when due) and checkpoint; False when a stop request came first."""
        c, metrics = self.counters, None
        if self.evaluation.due(c.epoch):
            with self.stop.during("the evaluation"):  # a signal now stops the evaluation (its message says so)
                metrics = self.evaluation.run(should_stop=lambda: self.stop.requested, epoch=c.epoch)
            if metrics is None:  # interrupted: checkpointed as pending by preempted(), redone on resume
                return False
            self.evaluation.record(metrics, c, self.records, self.clock)
            self.stopped_at_target = self.evaluation.target_reached({**metrics, "epoch": c.epoch})
        c.eval_pending = False
        self.checkpoints.save_epoch(self.parts, c, new_best=metrics is not None and c.best_epoch == c.epoch,
                                    final=self.stopped_at_target or c.epoch >= self.cfg.train.epochs)
        return not self.stop_agreed.now()

    def preempted(self) -> EndReason:
        """A stop request: checkpoint where the run is (unless the newest checkpoint is already there)."""
        if not self.checkpoints.holds(self.counters):
            self.checkpoints.save_step(self.parts, self.counters)
        log.warning("preempted at step %d: checkpoint written to %s; exit status %d", self.counters.global_step,
                    self.run_dir, ExitCode.PREEMPTED)
        return EndReason.PREEMPTED

    # ---------------------------------------------------------------------------- train

    def train_epoch(self) -> bool:
        """Run the rest of the current epoch; False if a stop was requested (after a whole step)."""
        c, parts, steps = self.counters, self.parts, self.parts.steps_per_epoch
        parts.train_mode()
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
                self.total_steps = self.budget.after_step(c, self.total_steps)  # a re-plan may move the end
                every = self.cfg.checkpoint.every_steps
                if every and c.global_step % every == 0 and c.step_in_epoch < steps:
                    self.checkpoints.save_step(parts, c)
                if self.stop_agreed.after_step():
                    return False
                if c.global_step >= self.total_steps and c.step_in_epoch < steps:  # train.max_steps (or a time
                    break  # budget's plan) ends the run mid-epoch; at an epoch's end the loader closes it itself
        finally:
            self.clock.stop_training()
            self.progress.end_epoch()
        return not self.stop_agreed.now()

    def log_training(self) -> None:
        c, stats = self.counters, self.training_step.stats.read()
        if stats["max_bad_streak"] >= self.cfg.train.nonfinite_limit:
            raise NonFiniteLossError(
                f"the loss was NaN/inf for {stats['max_bad_streak']} consecutive steps "
                f"(train.nonfinite_limit = {self.cfg.train.nonfinite_limit}) at global step {c.global_step}")
        record: dict[str, Any] = {"step": c.global_step, "epoch": round(c.global_step / self.parts.steps_per_epoch, 4),
                                  "train/loss": stats["loss"], "train/lr": self.parts.optimizer.param_groups[0]["lr"]}
        record.update(self.meter.read() or {})
        record.update(self.training_step.pop_size_reports())  # progressive resizing: first step at a new size
        if self.dist.device.type == "cuda":
            record["perf/gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        self.records.log(record)
        self.progress.report(c.step_in_epoch, self.parts.steps_per_epoch, record, self.eta_seconds())

    def eta_seconds(self) -> float:
        ips = self.meter.mean_images_per_sec_per_device
        remaining = self.total_steps - self.counters.global_step
        return remaining * self.parts.local_batch / ips if ips == ips and ips > 0 else float("nan")

    # ----------------------------------------------------------------------------- finish

    def finish(self, end: EndReason, code: ExitCode) -> None:
        """The summary, why the run ended and its exit code (W&B and summary.json), whatever the ending."""
        try:
            summary = final_summary(self.counters, self.meter, self.dist, all_ranks=not end.raised)
            self.records.summary({**summary, **self.budget.ending(report=end.done and not self.done_before)})
            if not end.done:
                announce_continue(end, self.counters, self.dist, self.run_dir)
            elif not self.done_before:
                report_final(self.counters, self.cfg.train, self.dist, summary.get("perf/mean_images_per_sec", 0.0),
                             self.run_dir)
        finally:
            self.records.finish(end, code)
