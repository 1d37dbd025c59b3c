"""Progressive resizing: the training crop grows over the run, in a few fixed sizes, as FFCV does.

    grow = ProgressiveResize.from_config(cfg.data.train)   # None when data.train.progressive_start_crop = 0
    grow.side(step, total_steps)                          # the crop side of training step `step` (0-based)
    grow.sides()                                          # every size the run can take, smallest first

The side is a function of progress through the run only, `step / total_steps`, so whatever fixes
the number of steps (train.epochs x steps per epoch, or a time budget planned at start-up) drives
it through one number: the loader is built with the planned total (`build_loader(...,
total_epochs=)`, or `DaliLoader.set_total_steps(n)` before its first batch) and every batch's
side follows from its (epoch, step) position, so a resumed run sizes its batches exactly as an
uninterrupted one.

The schedule is FFCV's (ffcv-imagenet `get_resolution`): the start size until the ramp begins,
then a linear ramp to the final size, rounded to the nearest multiple of `multiple`
pixels, then the final size for the rest of the run. FFCV's ResNet-50 configs ramp from 160 to
192 px between epochs 65 and 76 of 88 (0.74 -> 0.86 of the run) and 11 -> 13 of 16 (0.69 ->
0.81): most of the run trains small and fast, the last part at full size. Here sizes are also
clipped into [start, final], so the final crop need not be a multiple (122 px).

Why only a few sizes: each new input size costs a compilation under `train.compile` (the model is
compiled with `dynamic=False` then, so each size gets its own specialised graph rather than one
dynamic-shape graph), and torch's dynamo keeps at most `recompile_limit` (8) graphs per function
before falling back to eager. MAX_PROGRESSIVE_SIZES (6, pipeline/constants.py) leaves room below
it; the config refuses a schedule with more sizes and names `data.train.progressive_multiple`.

The reference augmentation's resize range scales with the crop (min_side and max_side x side /
crop), so the crop covers the same share of the resized image at every size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class ProgressiveResize:
    """The crop side over the run: `start_side` -> `end_side` between two fractions of the run's steps."""

    start_side: int  # px, data.train.progressive_start_crop
    end_side: int  # px, data.train.crop
    ramp: tuple[float, float]  # fractions of the run's steps where growth starts and ends
    multiple: int  # sizes during the ramp are rounded to multiples of this (px)

    @classmethod
    def from_config(cls, aug: Any) -> "ProgressiveResize | None":
        if not aug.progressive_start_crop:
            return None
        return cls(aug.progressive_start_crop, aug.crop, tuple(aug.progressive_ramp), aug.progressive_multiple)

    def side_at(self, progress: float) -> int:
        """The crop side at `progress` (fraction of the run's steps done, 0 to 1)."""
        begin, end = self.ramp
        if progress <= begin:
            return self.start_side
        if progress >= end:
            return self.end_side
        size = float(np.interp(progress, [begin, end], [self.start_side, self.end_side]))
        nearest = math.floor(size / self.multiple + 0.5) * self.multiple  # halves round up
        return int(min(max(nearest, self.start_side), self.end_side))

    def side(self, step: float, total_steps: int) -> int:
        """The crop side of global step `step` (0-based) of a run of `total_steps` steps."""
        return self.side_at(step / max(total_steps, 1))

    def sides(self) -> tuple[int, ...]:
        """Every side the schedule can give, smallest first (start, the multiples between, final)."""
        between = range((self.start_side // self.multiple + 1) * self.multiple, self.end_side, self.multiple)
        return tuple(sorted({self.start_side, self.end_side, *between}))


def scaled_sides(sides: np.ndarray, side: int, final: int) -> np.ndarray:
    """Resized shorter sides drawn for the final crop, scaled for a crop of `side` px (never below it)."""
    if side == final:
        return sides
    return np.maximum(np.round(sides * (side / final)), side).astype(np.float32)


class SideSchedule:
    """The crop side of every batch of a training loader, from its (epoch, step) and the run's planned steps.

    Batch `step` of `epoch` is global step epoch x steps_per_epoch + step, as the trainer counts
    them. Without a planned total (`total_steps` None: a benchmark's loader) every batch is at the
    final size. `position(epoch, global_step)`, when set, says where a batch is on the run's
    `total_steps` instead of its global step (a time budget that re-plans; a function of the epoch
    too, so batches DALI prepared ahead and the batches of a resumed run get the same side).
    """

    def __init__(self, grow: ProgressiveResize | None, final: int, steps_per_epoch: int,
                 total_steps: int | None = None) -> None:
        self.grow, self.final, self.steps_per_epoch, self.total_steps = grow, final, steps_per_epoch, total_steps
        self.position: Callable[[int, int], float] | None = None

    def __call__(self, epoch: int, step: int) -> int:
        if self.grow is None or self.total_steps is None:
            return self.final
        global_step = epoch * self.steps_per_epoch + step
        where = self.position(epoch, global_step) if self.position is not None else global_step
        return self.grow.side(where, self.total_steps)
