"""train.time_budget, the plan: how many optimizer steps fit in what is left of the budget, as pure functions.

    plan = make_plan(budget_s, costs, steps_per_epoch, train.epochs, eval.every, checkpoint.every_epochs)
    later = replan(plan, budget_s, costs_now, cadence, start=step,
                   progress=position(plans, step) / plans[0].total_steps)
    position(plans, step)                 # where optimizer step `step` is on the first plan's schedule

The run measures its costs after start-up (pipeline/training/budget_measure.py) and makes the first plan:
the most optimizer steps such that the time already spent (process start, start-up, measurement),
the training steps, every evaluation and checkpoint due on the way, the final evaluation and
closing the run end inside the budget, `SAFETY` of it in reserve. During the run
(pipeline/training/budget_run.py) it re-plans from the pace it measures, at every epoch's end and
every `every_steps` steps within an epoch: the same search, from the current step, with the
measured recent seconds per step and the latest measured evaluation and checkpoint costs.

What runs over the planned total (Li, Yumer and Ramanan, "Budgeted Training: Rethinking Deep Neural
Network Training Under Resource Constraints", ICLR 2020: a schedule that decays to zero at the
budget beats a truncated longer one): the first plan fixes the schedule's axis. cosine, linear,
poly and onecycle shapes are functions of step / total steps over it; its epoch positions
(schedule.warmup_epochs, schedule.milestones) are scaled by planned steps / (train.epochs x steps
per epoch), read as fractions of the run that train.epochs describes.

A re-plan changes the length, not what has been trained: **the rest of the schedule is stretched or
compressed from the current point** (`position`). At step s0 the run is at position p0 of the first
plan's axis [0, T0]; the new plan's remaining steps s0..T map linearly onto p0..T0. The learning
rate is then continuous at every re-plan (the curve's value at s0 is the same under both plans) and
the schedule still reaches its end exactly at the budget, which is what Li et al. find matters:
their budget-aware schedules are functions of the fraction of the budget used, and this map is
that fraction, re-estimated. Recomputing the curve for the new total instead (what an accepted
train.epochs change does, pipeline/runs/changes.py) would jump the learning rate at every re-plan,
and a run that re-plans every epoch would train on a saw-tooth. Without a re-plan the map is the
identity, so such a run trains bit for bit what a run given the planned values trains.

Progressive resizing follows the same position (its side is a function of position / T0), and its
smaller early steps are costed at their own measured speed (`mean_step`). The EMA's warm-up counts
updates, not steps of a total: it needs nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

from pipeline.config import Config
from pipeline.data.augment.progressive import ProgressiveResize
from pipeline.errors import ConfigError

SAFETY = 0.03  # share of the budget kept in reserve for timing noise
REPLAN_SHARE = 0.05  # a re-plan point about every this share of the budget (pipeline/training/budget_run.py)
FINISH_S = 3.0  # closing the run after the final checkpoint: summary, curves.png, W&B (s, estimated)
PROGRESS_POINTS = 10_000  # points of the run averaged over for progressive resizing's mean step


@dataclass(frozen=True)
class Costs:
    """What the run measured of itself (seconds)."""

    spent: float  # budget seconds gone when the costs were taken (start-up, measurement, training so far)
    step: float  # one training step at the final input size
    evaluation: float
    checkpoint: float
    finish: float = FINISH_S
    step_start: float | None = None  # progressive resizing: one step at the start size
    compile: float = 0.0  # progressive resizing: compiling one more input size (first step - steady step)

    def step_at(self, side: int, start: int, final: int) -> float:
        """A step at `side` px: linear in the pixel count between the two measured sizes."""
        if self.step_start is None or final == start:
            return self.step
        weight = (side * side - start * start) / (final * final - start * start)
        return self.step_start + weight * (self.step - self.step_start)

    def slowed(self, step_factor: float, fixed_factor: float, spent: float) -> "Costs":
        """The costs at `spent` with every step `step_factor` and every fixed cost (evaluation, checkpoint,
        closing, compiling) `fixed_factor` times the measured one."""
        step_start = None if self.step_start is None else self.step_start * step_factor
        return replace(self, spent=spent, step=self.step * step_factor, evaluation=self.evaluation * fixed_factor,
                       checkpoint=self.checkpoint * fixed_factor, finish=self.finish * fixed_factor,
                       step_start=step_start, compile=self.compile * fixed_factor)


@dataclass(frozen=True)
class Cadence:
    """The run's shape, as far as the plan's arithmetic needs it."""

    steps_per_epoch: int
    nominal_epochs: int  # train.epochs: the run the schedule's epoch positions describe
    eval_every: int  # eval.every (0: at the end only)
    checkpoint_every: int  # checkpoint.every_epochs
    checkpoint_every_steps: int = 0  # checkpoint.every_steps


def mean_step(costs: Costs, grow: ProgressiveResize | None, start: float = 0.0) -> float:
    """The mean step over the run from progress `start` (0 to 1) to its end: progressive resizing's side
    depends on the fraction of the run only, so the mean is the same for any length."""
    if grow is None:
        return costs.step
    span = 1.0 - start
    sides = [grow.side_at(start + span * (i + 0.5) / PROGRESS_POINTS) for i in range(PROGRESS_POINTS)]
    return sum(costs.step_at(s, grow.start_side, grow.end_side) for s in sides) / len(sides)


def compilations_ahead(costs: Costs, grow: ProgressiveResize | None, start: float = 0.0) -> float:
    """Seconds of compilation still ahead from progress `start`: each size between the two measured ones
    that the rest of the run reaches, once."""
    if grow is None:
        return 0.0
    if start == 0.0:
        return costs.compile * max(len(grow.sides()) - 2, 0)
    ahead = {grow.side_at(start + (1.0 - start) * (i + 1) / 1000) for i in range(1000)}
    return costs.compile * len(ahead - {grow.start_side, grow.end_side, grow.side_at(start)})


@dataclass(frozen=True)
class BudgetPlan:
    budget_s: float
    total_steps: int  # optimizer steps in all
    epochs: int  # ceil(total_steps / steps_per_epoch): the last one may be partial
    steps_per_epoch: int
    nominal_epochs: int  # train.epochs: the run the schedule's epoch positions describe
    predicted_s: float  # when the run should end (budget seconds: from the process start)
    step_s: float  # a step at the final size (a re-plan: at the pace measured since the last one)
    evaluation_s: float
    checkpoint_s: float
    spent_s: float  # budget seconds gone when the plan was made
    mean_step_s: float = 0.0  # the mean step over the rest of the run (progressive resizing: smaller early steps)
    compile_s: float = 0.0  # compilations still ahead (progressive resizing's sizes between start and final)
    at_step: int = 0  # the optimizer steps done when the plan was made (0: the first plan)
    every_steps: int = 0  # a re-plan point every this many steps within an epoch (besides every epoch's end)

    @property
    def scale(self) -> float:
        """Planned steps per nominal step: how the schedule's epoch positions move."""
        return self.total_steps / (self.nominal_epochs * self.steps_per_epoch)

    def apply(self, cfg: Config) -> Config:
        """`cfg` with the planned length: train.epochs and train.max_steps, warm-up and milestones scaled."""
        out = cfg.model_copy(deep=True)
        out.train.epochs, out.train.max_steps = self.epochs, self.total_steps
        out.schedule.warmup_epochs = cfg.schedule.warmup_epochs * self.scale
        out.schedule.milestones = [m * self.scale for m in cfg.schedule.milestones]
        return out

    def record(self) -> dict[str, float]:
        """plan/* for metrics.jsonl and the W&B summary."""
        return {f"plan/{k}": v for k, v in asdict(self).items()}

    def describe(self) -> str:
        progressive = (f" ({self.mean_step_s * 1000:.1f} ms on average over the run's sizes, {self.compile_s:.0f} s "
                       f"of compilation ahead)" if self.mean_step_s and self.mean_step_s != self.step_s else "")
        return (f"train.time_budget {self.budget_s:.0f} s: {self.total_steps} steps ({self.epochs} epochs of "
                f"{self.steps_per_epoch}, the schedule scaled x{self.scale:.3g} from train.epochs "
                f"{self.nominal_epochs}); measured {self.step_s * 1000:.1f} ms a step{progressive}, "
                f"{self.evaluation_s:.1f} s an evaluation, {self.checkpoint_s:.2f} s a checkpoint, "
                f"{self.spent_s:.1f} s spent before training; predicted end at {self.predicted_s:.0f} s")

    def describe_change(self, before: "BudgetPlan") -> str:
        return (f"re-plan at step {self.at_step} ({self.spent_s:.0f} s of {self.budget_s:.0f} s): "
                f"{before.total_steps} -> {self.total_steps} steps ({self.epochs} epochs); measured "
                f"{self.step_s * 1000:.1f} ms a step (the plan before: {before.step_s * 1000:.1f}), "
                f"{self.evaluation_s:.1f} s an evaluation, {self.checkpoint_s:.2f} s a checkpoint; "
                f"predicted end at {self.predicted_s:.0f} s")


# --------------------------------------------------------------------------------- the arithmetic


def _multiples(first: int, last: int, every: int) -> int:
    """How many multiples of `every` lie in [first, last]."""
    return last // every - (first - 1) // every if last >= first else 0


def cost_ahead(start: int, end: int, costs: Costs, cadence: Cadence, step_s: float | None = None,
               ahead_s: float = 0.0) -> float:
    """Seconds from optimizer step `start` (an epoch's end there not yet closed) to the end of a run of `end`
    steps: the steps, the evaluations and checkpoints due at the epoch ends on the way (the last, partial or
    not, always has both), step checkpoints, closing the run; `step_s`: the mean step (default costs.step),
    `ahead_s`: fixed costs still ahead (compilations)."""
    per_epoch = cadence.steps_per_epoch
    first, last = max(1, math.ceil(start / per_epoch)), math.ceil(end / per_epoch)
    every = cadence.eval_every
    evaluations = (_multiples(first, last, every) if every > 0 else 0) + (0 if every and last % every == 0 else 1)
    checkpoints = (_multiples(first, last, cadence.checkpoint_every)
                   + (0 if last % cadence.checkpoint_every == 0 else 1))
    every_steps = cadence.checkpoint_every_steps
    if every_steps:  # the step checkpoints after `start`, but at an epoch's end (last.pt is written there)
        both = every_steps * per_epoch // math.gcd(every_steps, per_epoch)
        checkpoints += _multiples(start + 1, end, every_steps) - _multiples(start + 1, end, both)
    step_s = costs.step if step_s is None else step_s
    return ((end - start) * step_s + evaluations * costs.evaluation + checkpoints * costs.checkpoint + costs.finish
            + ahead_s)


def run_cost(steps: int, costs: Costs, steps_per_epoch: int, eval_every: int, checkpoint_every: int,
             checkpoint_every_steps: int, step_s: float | None = None, ahead_s: float = 0.0) -> float:
    """Seconds from the end of the measurement to the end of a run of `steps` optimizer steps."""
    cadence = Cadence(steps_per_epoch, 1, eval_every, checkpoint_every, checkpoint_every_steps)
    return cost_ahead(0, steps, costs, cadence, step_s, ahead_s)


def longest_fit(start: int, available: float, cost: Callable[[int], float], step_s: float) -> int | None:
    """The largest end >= start with cost(end) <= available (cost increases with end); None if not even start."""
    if cost(start) > available:
        return None
    low, high = start, start + max(2, int(available / max(step_s, 1e-9)) + 2)
    while cost(high) <= available:  # step_s under-estimated the mean: widen until the end no longer fits
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if cost(mid) <= available else (low, mid)
    return low


def every_steps_for(budget_s: float, step_s: float, share: float) -> int:
    """Steps between re-plan points within an epoch: about `share` of the budget at `step_s` a step."""
    return max(1, round(share * budget_s / max(step_s, 1e-9)))


def make_plan(budget_s: float, costs: Costs, steps_per_epoch: int, nominal_epochs: int, eval_every: int,
              checkpoint_every: int, checkpoint_every_steps: int = 0,
              grow: ProgressiveResize | None = None, replan_share: float = REPLAN_SHARE) -> BudgetPlan:
    """The first plan: the most steps whose run ends inside the budget (less SAFETY); ConfigError if not even
    one fits. `grow`: progressive resizing, whose smaller early steps cost less and whose sizes between the
    two measured ones each compile once during the run."""
    cadence = Cadence(steps_per_epoch, nominal_epochs, eval_every, checkpoint_every, checkpoint_every_steps)
    available = budget_s * (1 - SAFETY) - costs.spent
    step_s, ahead_s = mean_step(costs, grow), compilations_ahead(costs, grow)

    def cost(steps: int) -> float:
        return cost_ahead(0, steps, costs, cadence, step_s, ahead_s)

    fit = longest_fit(1, available, cost, step_s)
    if fit is None:
        raise ConfigError(f"train.time_budget: {budget_s:.0f} s leaves no time to train: {costs.spent:.1f} s went to "
                          f"start-up and measuring, and one step with its evaluation and checkpoint needs "
                          f"{cost(1):.1f} s more (e.g. train.time_budget={math.ceil((costs.spent + cost(1)) * 2)}s)")
    return BudgetPlan(budget_s=budget_s, total_steps=fit, epochs=math.ceil(fit / steps_per_epoch),
                      steps_per_epoch=steps_per_epoch, nominal_epochs=nominal_epochs,
                      predicted_s=round(costs.spent + cost(fit), 3), step_s=costs.step, evaluation_s=costs.evaluation,
                      checkpoint_s=costs.checkpoint, spent_s=costs.spent, mean_step_s=step_s, compile_s=ahead_s,
                      at_step=0, every_steps=every_steps_for(budget_s, step_s, replan_share))


@dataclass(frozen=True)
class Replan:
    """What the arithmetic says at a re-plan point: the best plan from here, and what the plan in force predicts."""

    plan: BudgetPlan  # total_steps == start when even ending now overruns (`overrun_s` > 0)
    current_predicted_s: float  # when the plan in force would end at the pace measured now
    overrun_s: float  # > 0: even ending now (the final evaluation, checkpoint and close) ends this late


def replan(current: BudgetPlan, budget_s: float, costs: Costs, cadence: Cadence, start: int, progress: float,
           grow: ProgressiveResize | None = None, replan_share: float = REPLAN_SHARE) -> Replan:
    """The longest run from optimizer step `start` (at `progress`, 0 to 1, of the schedule) that ends inside the
    budget with `costs` as measured now (costs.spent: the budget seconds gone); at least `start`, i.e. ending now."""
    available = budget_s * (1 - SAFETY) - costs.spent
    step_s, ahead_s = mean_step(costs, grow, progress), compilations_ahead(costs, grow, progress)

    def cost(end: int) -> float:
        return cost_ahead(start, end, costs, cadence, step_s, ahead_s)

    fit = longest_fit(start, available, cost, step_s)
    end = start if fit is None else fit
    overrun = 0.0 if fit is not None else costs.spent + cost(start) - budget_s
    plan = BudgetPlan(budget_s=budget_s, total_steps=end, epochs=math.ceil(end / cadence.steps_per_epoch),
                      steps_per_epoch=cadence.steps_per_epoch, nominal_epochs=cadence.nominal_epochs,
                      predicted_s=round(costs.spent + cost(end), 3), step_s=costs.step,
                      evaluation_s=costs.evaluation, checkpoint_s=costs.checkpoint, spent_s=round(costs.spent, 3),
                      mean_step_s=step_s, compile_s=ahead_s, at_step=start,
                      every_steps=every_steps_for(budget_s, step_s, replan_share))
    current_end = max(current.total_steps, start)
    return Replan(plan, current_predicted_s=costs.spent + cost(current_end), overrun_s=max(overrun, 0.0))


# ------------------------------------------------------------------------ the schedule's position


def position(plans: Sequence[BudgetPlan], step: int | float) -> float:
    """Where optimizer step `step` is on the first plan's schedule (0 .. plans[0].total_steps).

    The identity until the first re-plan; each re-plan at step s0 maps its remaining steps s0..T linearly
    onto the rest of the axis, from the position s0 had. Plans made after `step` do not matter.
    """
    axis = plans[0].total_steps
    start_step, start_pos, end = 0, None, axis  # the segment in force; start_pos None: the identity
    for plan in plans[1:]:
        if plan.at_step > step:
            break
        start_pos = _segment(plan.at_step, start_step, start_pos, end, axis)
        start_step, end = plan.at_step, plan.total_steps
    return _segment(step, start_step, start_pos, end, axis)


def _segment(step: int | float, start_step: int, start_pos: float | None, end: int, axis: int) -> float:
    if start_pos is None:
        return step
    if step <= start_step:
        return start_pos
    return start_pos + (axis - start_pos) * min((step - start_step) / max(end - start_step, 1), 1.0)


def plans_by(plans: Sequence[BudgetPlan], step: int) -> list[BudgetPlan]:
    """The plans made at or before optimizer step `step`."""
    return [p for p in plans if p.at_step <= step]
