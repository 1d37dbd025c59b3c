"""The run's two clocks, kept in the checkpoint counters so both continue on resume.

- run time (`time` in metrics.jsonl, `time/wall_seconds` and `tta/*/wall_seconds` in the summary):
  the seconds earlier sessions had run when the checkpoint this one resumed from was written
  (Counters.wall_seconds) plus this process's own, from the trainer's start;
- training time (`time/train_seconds`, `tta/*/train_seconds`): seconds inside the training loop
  (data, steps, logging), the device synchronized when a loop ends; evaluation and checkpoint
  writing excluded. Work lost after a checkpoint is redone and counted once.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import torch

from pipeline.distributed import synchronize


class RunPosition(Protocol):
    """What the run records read of the checkpoint counters (pipeline/training/state.py `Counters`)."""

    epoch: int  # epochs completed
    global_step: int
    step_in_epoch: int
    wall_seconds: float  # run time when the counters were last saved (s)
    train_seconds: float  # seconds in the training loop so far
    eval_pending: bool  # the epoch's training is done, its evaluation is not (a stop interrupted it)

    @property
    def epoch_closed(self) -> bool: ...  # at an epoch's end with its evaluation recorded


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0.0 where it cannot be read).

    train.time_budget counts from here: interpreter start-up and imports are part of what a budget pays.
    """
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5), counted from the one after the command name
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class RunClock:
    """Run time and training time of a run, continued from the counters of a resumed one.

    Also a checkpoint observer (CheckpointManager.observers): a checkpoint pauses the training
    clock and stamps the run time into the counters it saves.
    """

    def __init__(self, counters: RunPosition, device: torch.device, started: float | None = None) -> None:
        self.counters, self.device = counters, device
        started = time.perf_counter() if started is None else started
        self.origin = started - counters.wall_seconds  # perf_counter() value at the run's "zero"
        self.segment_start: float | None = None  # set while the training loop runs
        self.paused = False  # by a checkpoint written inside the training loop

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.origin

    def start_training(self) -> None:
        """The training loop starts: its time counts as training until stop_training()."""
        self.segment_start = time.perf_counter()

    def stop_training(self) -> None:
        """The training loop ended; queued device work is training time, so the device is synchronized first."""
        if self.segment_start is not None:
            synchronize(self.device)
            self.counters.train_seconds += time.perf_counter() - self.segment_start
            self.segment_start = None

    def before_save(self, counters: RunPosition) -> None:
        self.paused = self.segment_start is not None
        self.stop_training()
        counters.wall_seconds = round(self.wall_seconds(), 3)

    def after_save(self, counters: RunPosition) -> None:
        if self.paused:
            self.start_training()
        self.paused = False
