"""Meters of the training loop: the losses of a logging window and throughput windows, with no per-step sync.

Losses stay on the device and are read only at logging boundaries. Throughput is images /
wall time between two synchronized window boundaries, excluding the first `warmup_steps` of every
epoch (DALI refill after a reset, cudnn autotuning, compilation) and everything outside the
training loop (evaluation, checkpointing). The data-wait share is the time the loop spent
blocked on the loader.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Iterator

import torch

from pipeline import distributed
from pipeline.distributed import synchronize


class StepStats:
    """The losses of the steps since the last logging boundary, kept on the device until it.

    `add` only keeps a reference to the step's (already detached) loss: no operator, no kernel.
    `read` stacks the window, copies it to the host once and computes the mean finite loss and
    the non-finite streaks there. Read at least every few thousand steps (the trainer reads every
    logging.log_every steps): the window holds one scalar tensor per step.
    """

    def __init__(self) -> None:
        self.window: list[torch.Tensor] = []
        self.bad_streak = 0  # non-finite losses in a row at the end of the last window read (this rank)

    def add(self, loss: torch.Tensor) -> None:
        self.window.append(loss)

    def read(self) -> dict[str, float]:
        """Mean finite loss over all ranks and the longest non-finite streak on any rank; then reset.

        The running streak carries over into the next window, so a streak that spans a logging
        boundary is still counted whole.
        """
        losses = torch.stack(self.window).double().cpu().tolist() if self.window else []  # one sync
        self.window = []
        total, finite_steps, streak = 0.0, 0, self.bad_streak
        longest = streak
        for loss in losses:
            if math.isfinite(loss):
                total, finite_steps, streak = total + loss, finite_steps + 1, 0
            else:
                streak += 1
                longest = max(longest, streak)
        self.bad_streak = streak
        sums = distributed.all_reduce_sum(torch.tensor([total, finite_steps], dtype=torch.float64))
        streaks = distributed.all_reduce_max(torch.tensor([longest, streak], dtype=torch.float64))
        return {
            "loss": (sums[0] / sums[1]).item() if sums[1] > 0 else float("nan"),
            "max_bad_streak": int(streaks[0]),
            "bad_streak": int(streaks[1]),
        }


class ThroughputMeter:
    """Images/sec and data-wait share per logging window; warm-up steps of each epoch excluded."""

    def __init__(self, batch_size: int, warmup_steps: int, device: torch.device) -> None:
        self.batch_size, self.warmup_steps, self.device = batch_size, warmup_steps, device
        self.total_images, self.total_seconds = 0, 0.0
        self.start_epoch()

    def start_epoch(self) -> None:
        self.epoch_steps = 0
        self.window_start: float | None = None
        self.images, self.wait = 0, 0.0
        if self.warmup_steps == 0:
            self._open_window()

    def _open_window(self) -> None:
        synchronize(self.device)
        self.window_start, self.images, self.wait = time.perf_counter(), 0, 0.0

    def timed(self, loader: Iterable) -> Iterator:
        """Iterate `loader`, charging the time blocked in it to the data-wait share."""
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            if self.window_start is not None:
                self.wait += time.perf_counter() - t0
            yield batch

    def step_done(self) -> None:
        self.epoch_steps += 1
        if self.window_start is not None:
            self.images += self.batch_size
        elif self.epoch_steps == self.warmup_steps:
            self._open_window()

    def read(self) -> dict[str, float] | None:
        """Close the window (synchronizing the device) and open the next; None while warming up."""
        if self.window_start is None or self.images == 0:
            return None
        synchronize(self.device)
        elapsed = time.perf_counter() - self.window_start
        local = torch.tensor([self.images / elapsed, self.wait / elapsed, 1.0], dtype=torch.float64)
        distributed.all_reduce_sum(local)
        ranks = local[2].item()
        self.total_images += self.images
        self.total_seconds += elapsed
        self._open_window()
        return {
            "perf/images_per_sec": local[0].item(),
            "perf/images_per_sec_per_device": local[0].item() / ranks,
            "perf/data_wait_frac": local[1].item() / ranks,
        }

    @property
    def mean_images_per_sec_per_device(self) -> float:
        return self.total_images / self.total_seconds if self.total_seconds else float("nan")
