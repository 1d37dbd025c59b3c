"""Where a run is, beside its trainable state: the counters and the random state, saved in every checkpoint.

    counters = Counters()                       # a fresh run; CheckpointManager.restore returns the saved ones
    state = rng_state(dist.device)              # torch (CPU and this rank's GPU) and Python's `random`
    set_rng_state(state, dist.device)

The trainable state itself (model, optimizer, scheduler, gradient scaler, EMA) is one dict from
the run's components (pipeline/training/components.py `Components.state_dict`): a checkpoint
saves it beside these, and a time budget's measurement puts it back with them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.training.time_to_accuracy import tta_summary


@dataclass
class Counters:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps completed in the current epoch
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = -1  # 1-based epoch of best_top1
    final: dict[str, float] = field(default_factory=dict)  # latest evaluation
    # Run clocks (pipeline/runs/clock.py RunClock), continued across resumes:
    wall_seconds: float = 0.0  # run time when written (s, all sessions): metrics.jsonl `time` continues from it
    train_seconds: float = 0.0  # seconds in the training loop so far (evaluation and checkpoints excluded)
    tta: dict[str, dict[str, float]] = field(default_factory=dict)  # "92.6" -> train_seconds, wall_seconds, epoch
    # The epoch's training is done and its evaluation is not: a stop interrupted it, and a resumed run
    # redoes it before training on (so metrics.jsonl and W&B hold each evaluation once).
    eval_pending: bool = False

    @property
    def epoch_closed(self) -> bool:
        """At an epoch's end with its evaluation recorded: the metrics row of this step is complete."""
        return self.step_in_epoch == 0 and not self.eval_pending

    @property
    def position(self) -> tuple[int, bool]:
        return self.global_step, self.eval_pending

    def result_summary(self) -> dict[str, float]:
        """final/*, best/* and tta/* figures for the run's summary (empty before the first evaluation)."""
        if not self.final:
            return {}
        return {"final/top1": self.final["val/top1"], "final/top5": self.final["val/top5"],
                "final/loss": self.final["val/loss"], "final/epoch": self.final["epoch"],
                "best/top1": self.best_top1, "best/epoch": self.best_epoch, **tta_summary(self.tta)}


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random state: torch's CPU generator, Python's `random`, and on a GPU the device's."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what `rng_state` returned (a GPU's state only on a GPU, and only when it was saved)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
