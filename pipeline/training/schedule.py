"""Learning-rate schedules in closed form, stepped every iteration.

`lr_factor(step)` multiplies the peak learning rate. Epoch positions may be fractional
(`step / steps_per_epoch`). An optional linear warm-up replaces the first `warmup_epochs`: it
rises from `warmup_start_factor` times the schedule's value at the end of the warm-up to that
value; the schedule shapes below then run over the remaining steps.

- multistep: x gamma after each milestone epoch (the reference: x0.1 after epochs 150 and 225)
- cosine:    half-cosine from 1 to min_lr_factor
- onecycle:  torch's OneCycleLR shape (cosine up over pct_start, cosine down)
- poly:      (1 - progress)^power, as Caffe's lr_policy "poly" (SqueezeNet v1.0's solver: power 0.5)
- constant:  1
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable

import torch


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def shape_factor(cfg: Any, step: float, total_steps: int, steps_per_epoch: int, warmup_steps: int) -> float:
    """The schedule's multiplier at `step`, ignoring warm-up."""
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        epoch = step / steps_per_epoch
        return cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    span = max(total_steps - warmup_steps, 1)
    pct = min(max(step - warmup_steps, 0) / span, 1.0)
    if cfg.name == "cosine":
        return _cos(1.0, cfg.min_lr_factor, pct)
    if cfg.name == "poly":
        return (1.0 - pct) ** cfg.power
    if cfg.name == "onecycle":
        initial = 1.0 / cfg.div_factor
        final = initial / cfg.final_div_factor
        # torch.optim.lr_scheduler.OneCycleLR (anneal_strategy="cos", two phases) over `span` steps.
        up_end = cfg.pct_start * span - 1
        pos = max(step - warmup_steps, 0)
        if pos <= up_end:
            return _cos(initial, 1.0, pos / up_end if up_end > 0 else 1.0)
        return _cos(1.0, final, min((pos - up_end) / (span - 1 - up_end), 1.0))
    raise ValueError(f"schedule.name: unknown schedule {cfg.name!r}")


def lr_factor(cfg: Any, step: float, total_steps: int, steps_per_epoch: int) -> float:
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        target = shape_factor(cfg, warmup_steps, total_steps, steps_per_epoch, warmup_steps)
        ramp = cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * step / warmup_steps
        return target * ramp
    return shape_factor(cfg, step, total_steps, steps_per_epoch, warmup_steps)


def total_steps(epochs: int, steps_per_epoch: int, max_steps: int = 0) -> int:
    """The run's optimizer steps: epochs x steps_per_epoch, or train.max_steps when set and fewer."""
    return min(epochs * steps_per_epoch, max_steps) if max_steps else epochs * steps_per_epoch


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    max_steps: int = 0, position: Callable[[int], float] | None = None):
    """A LambdaLR stepped once per iteration over the run's `total_steps`; its state_dict is just the step
    counter. `position(step)`: where optimizer step `step` is on the schedule (a time budget's re-plans
    stretch or compress what remains, pipeline/training/budget.py); default the step itself."""
    total = total_steps(epochs, steps_per_epoch, max_steps)
    if position is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total, steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, position(step), total, steps_per_epoch)
    )
