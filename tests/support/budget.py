"""A simulated clock and run for train.time_budget: the planning tested without a run (tests/unit/test_budget_plan.py,
test_budget_measure.py).
"""

from __future__ import annotations

from pipeline.training.budget import (
    Cadence,
    Costs,
    make_plan,
)
from pipeline.training.budget_run import RunBudget
from pipeline.training.state import Counters


class Records:
    def __init__(self):
        self.rows, self.values = [], {}

    def log(self, row):
        self.rows.append(row)

    def summary(self, values):
        self.values.update(values)


class WallLike:
    """A clock the simulation moves: tick and charge cost nothing by themselves."""

    slow = False

    def __init__(self, now):
        self.seconds = now

    def now(self):
        return self.seconds

    def tick(self, global_step):
        pass

    def charge(self, kind):
        return 0.0


def simulate(budget_s, spe, step_s, evaluation_s=1.0, checkpoint_s=0.2, eval_every=1, slow_at=None, slowdown=2.0,
             loop_pace=1.0, mid_epoch_points=True, start_s=5.0, speed=None):
    """A run as the trainer drives it, on a clock that moves by the work's costs: steps take `loop_pace` times what
    was measured, and everything `slowdown` times longer once `slow_at` budget seconds have passed (or `speed(t)`
    times longer at budget second t). Returns the end / budget, the budget and the records."""
    measured = Costs(spent=start_s, step=step_s, evaluation=evaluation_s, checkpoint=checkpoint_s)
    cadence = Cadence(spe, 10, eval_every, 1)
    plan = make_plan(budget_s, measured, spe, 10, eval_every, 1)
    clock = WallLike(start_s)
    budget = RunBudget(budget_s, cadence, None, measured, [plan], clock)
    records, c, total = Records(), Counters(), plan.total_steps

    def spend(seconds):
        if speed is not None:
            clock.seconds += seconds * speed(clock.seconds)
            return
        slowed = slow_at is not None and clock.seconds >= slow_at
        clock.seconds += seconds * (slowdown if slowed else 1.0)

    budget.start(records, first_session=True, is_main=True)
    while c.epoch < budget.plan.epochs:
        while c.step_in_epoch < spe:
            spend(step_s * loop_pace)
            c.step_in_epoch, c.global_step = c.step_in_epoch + 1, c.global_step + 1
            if mid_epoch_points or c.step_in_epoch == spe:
                total = budget.after_step(c, total)
            if c.global_step >= total:
                break
        c.epoch, c.step_in_epoch = c.epoch + 1, 0
        last = c.epoch >= budget.plan.epochs
        if last or (eval_every and c.epoch % eval_every == 0):
            with budget.timed("evaluation"):
                spend(evaluation_s)
        budget.before_save(c)
        spend(checkpoint_s)
        budget.after_save(c)
    spend(measured.finish)
    return clock.seconds / budget_s, budget, records

