"""How a run ends on the console and in its summary: final/*, best/*, mean throughput.

    summary = final_summary(counters, meter, dist, all_ranks=True)   # records.summary(summary)
    report_final(counters, cfg.train, dist, summary.get("perf/mean_images_per_sec", 0.0), run_dir)
    announce_continue(end, counters, dist, run_dir)   # a resumable ending: the command that continues it
    report_done_before(counters, cfg, dist, run_dir, stopped_at_target)   # the same command after the end
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline import distributed
from pipeline.distributed import DistInfo
from pipeline.errors import EndReason
from pipeline.constants import LAUNCHER_ENV
from pipeline.runs.continuation import SKIP_BAD_IMAGES, direct_command, with_override
from pipeline.runs.rundir import default_run_name
from pipeline.training.state import Counters
from pipeline.training.meters import ThroughputMeter
from pipeline.training.time_to_accuracy import describe_tta

log = logging.getLogger("pipeline")


def final_summary(counters: Counters, meter: ThroughputMeter, dist: DistInfo, all_ranks: bool) -> dict[str, Any]:
    """final/*, best/* and mean throughput. `all_ranks` False after a crash: no collective (ranks may be
    gone), so only this rank's own throughput, and the total only when it is the only rank."""
    per_device = meter.mean_images_per_sec_per_device
    summary: dict[str, Any] = dict(counters.result_summary())
    if all_ranks:
        total = distributed.all_reduce_sum(torch.nan_to_num(torch.tensor([per_device], dtype=torch.float64))).item()
        if total > 0:  # 0 means no window was measured (epochs shorter than the warm-up): not a rate
            summary.update({"perf/mean_images_per_sec": total,
                            "perf/mean_images_per_sec_per_device": total / dist.world_size})
    elif per_device == per_device:  # measured
        summary["perf/mean_images_per_sec_per_device"] = per_device
        if dist.world_size == 1:
            summary["perf/mean_images_per_sec"] = per_device
    return summary


def report_final(c: Counters, train_cfg: Any, dist: DistInfo, total: float, run_dir: Path) -> None:
    """The console's last lines of a run that finished (or reached its target): results, speed, time to accuracy."""
    if not (dist.is_main and c.final):
        return
    speed = (f"{total:,.0f} img/s ({total / dist.world_size:,.0f} per device, warm-up and evaluation "
             "excluded)" if total > 0 else "throughput not measured (epochs shorter than "
             "logging.perf_warmup_steps)")
    log.info("done: final top-1 %.2f%% (epoch %d), best top-1 %.2f%% (epoch %d); %s",
             100 * c.final["val/top1"], c.final["epoch"], 100 * c.best_top1, c.best_epoch, speed)
    if train_cfg.tta_thresholds:  # levels of a recipe's own: none by default, where they would mean nothing
        log.info("time to accuracy: %s; %.1f s of training in all (evaluation and checkpoints excluded)",
                 describe_tta(c.tta, train_cfg.tta_thresholds), c.train_seconds)
    else:
        log.info("%.1f s of training (evaluation and checkpoints excluded)", c.train_seconds)
    log.info("run directory: %s", run_dir)


def report_nonfinite(exc: Exception, run_dir: Path, lr: float) -> None:
    """The non-finite stop's message. A resumed run keeps the checkpoint's optimizer and schedule state,
    learning rate included: a lower optim.lr takes effect only in a new run."""
    log.error("stopping: %s. Checkpoints in %s were not overwritten. Resuming replays the same batches at "
              "the same learning rate (a new optim.lr does not apply to a resumed run): if the streak is "
              "transient, resume with a higher train.nonfinite_limit; a lower learning rate needs a new run "
              "(e.g. optim.lr=%g)", exc, run_dir, lr / 2)


def report_done_before(c: Counters, cfg: Any, dist: DistInfo, run_dir: Path, stopped_at_target: bool) -> None:
    """The same command again after the run finished: nothing to train; say so, and how to start anew."""
    if not dist.is_main:
        return
    result = (f"final top-1 {100 * c.final['val/top1']:.2f}% (epoch {c.final['epoch']}), best "
              f"{100 * c.best_top1:.2f}% (epoch {c.best_epoch})" if c.final else "no evaluation")
    how = ("start a new run (./launch.sh --new with the same arguments)" if os.environ.get(LAUNCHER_ENV)
           else f"start a new run: {direct_command(default_run_name(cfg.name))}")
    ended = (f"reached train.target_accuracy at epoch {c.epoch} of {cfg.train.epochs}"
             if stopped_at_target else f"finished its {cfg.train.epochs} epochs")
    log.warning("run %s already %s (%s): nothing to train. To train this setup again, %s", run_dir.name, ended,
                result, how)


def announce_continue(end: EndReason, c: Counters, dist: DistInfo, run_dir: Path) -> None:
    """A resumable ending, run without launch.sh: rank 0 prints the command that continues it, last.

    It is printed at exit, after everything else (a crash's traceback included); under launch.sh
    the launcher prints it after torchrun's own report instead."""
    if not dist.is_main or os.environ.get(LAUNCHER_ENV):
        return
    name, command = run_dir.name, direct_command(run_dir.name)
    if end is EndReason.BAD_INPUT:  # the fix comes first: the same command would meet the same file
        skip = direct_command(name, with_override(list(sys.argv), SKIP_BAD_IMAGES))
        line = (f"run {name} stopped at step {c.global_step} on bad input (named above). Remove or replace the "
                f"file, then continue it from its latest checkpoint: {command}; or leave bad files out: {skip}")
    elif end is EndReason.IO_ERROR:  # the environment first: the same command alone meets the same full disk
        line = (f"run {name} stopped at step {c.global_step}: a file could not be written (named above; the "
                f"checkpoints written before it are kept). Free space on {run_dir.parent} (or raise the quota, or "
                f"move logging.runs_dir), then continue it from its latest checkpoint: {command}")
    else:
        why = {EndReason.PREEMPTED: f"stopped at step {c.global_step} (checkpoint written)",
               EndReason.NONFINITE: "stopped on a non-finite loss", EndReason.CRASHED: "crashed"}[end]
        line = f"run {name} {why}; to continue it from its latest checkpoint: {command}"
    atexit.register(print, line, file=sys.stderr, flush=True)
