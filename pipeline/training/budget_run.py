"""train.time_budget during the run: the clock it counts on, the pace it measures, the re-plans it makes.

    budget = restored_budget(cfg, resume)     # a continued run: its recorded plans; NoBudget without a budget
    cfg = budget.planned_config(cfg)          # the latest plan's length (re-plans change this config in place)
    budget.install(parts, cfg.schedule)       # the schedule and progressive resizing follow budget.position
    budget.start(records, first_session, is_main)         # a fresh run's budget: budget_measure.budget_run
    total = budget.after_step(counters, total)            # after every step: at a re-plan point, re-plans
    with budget.timed("evaluation"): ...      # evaluations; checkpoints are timed as a CheckpointManager observer
    records.summary(budget.ending(report=True))           # time/budget_*; the end line, printed at exit

**Clock.** Budget seconds count from the process's start (interpreter start-up and imports are part
of what a budget pays, pipeline/runs/clock.py `process_age`); a continued run adds the seconds its
earlier sessions had used when the checkpoint it resumes from was written (time between sessions
and work lost after the checkpoint are not counted). `train.debug_budget_clock` replaces the wall
with a simulated clock that advances by fixed costs per step, evaluation and checkpoint (and twice
those after a given step): the re-plans of a test run are then a function of its steps, so a run
killed and resumed re-plans exactly like one that was not.

**Pace.** Between two re-plan points the run measures its seconds per training step: the budget
seconds that passed, less the evaluations and checkpoints in between (each timed, and costed on
its own). Its ratio to the step the start-up measurement predicted for those steps (progressive
resizing: their sizes) is the window's pace. The steps ahead are planned at the last window's
pace, so a slowdown is believed at once (a late one leaves no time to wait for a second window);
the fixed costs ahead (evaluations, checkpoints, closing the run: the measured ones, scaled from
the pace they were measured at) at the median of the last `RECENT` windows', so one slow window
on a shared machine does not make the final evaluation look several times longer and end the
run early. Simulated (tests/unit/test_budget_plan.py, test_a_short_slow_spell_does_not_end_the_run_early):
a machine 3x slower for 15 s, then 12x slower for 20 s of a 2-minute run ended it at 0.77x its
budget with every cost at the last window's pace, at 0.97x with the fixed costs at the median;
the price: a quickstart whose speed halves 100 s in learns of its slower evaluation a window
later and ends at 1.07x instead of 1.04x, inside the 10% target.

**Re-plan points.** At an epoch's last step once at least half of `every_steps` steps passed since
the last point, and within an epoch every `every_steps` steps, where `every_steps` is about 5% of
the budget at the planned pace (`REPLAN_SHARE`, recorded with each plan). Epoch ends alone would
do for the quickstart (an epoch is ~5% of a 2-minute budget), but an ImageNet epoch can be a large
share of a budget: a simulated run whose epoch is half its budget and whose machine halves its
speed 60% in (in its last epoch) ends at 1.34x its budget re-planning at epoch ends only, at
0.98x with the step points (tests/unit/test_budget_plan.py,
test_long_epochs_need_re_plan_points_within_the_epoch). Short epochs are gathered into one
window so a fast GPU run does not re-plan (a broadcast, the arithmetic) every second. Points are a
function of the recorded state: every rank stops at the same ones, rank 0 decides, and a resumed
run meets them where an uninterrupted one would. A point is after the step and before a step
checkpoint there, so the checkpoint holds the new plan; at an epoch's last step it comes before
the epoch's evaluation, which is the last one if the new plan ends there.

**When to change the plan.** When the plan in force, at the pace measured now, is predicted to
end more than `REPLAN_TOLERANCE` of the budget away from its target (the budget less SAFETY): a
plan that still fits is not redrawn for noise. When even ending now (the final evaluation and
checkpoint, closing the run) overruns the budget, the run says so once, with the predicted
overrun, and ends at this step.

**Record.** Each new plan is a `plan/*` row of metrics.jsonl at the step it was made (`plan/at_step`),
the latest one is in summary.json and W&B's summary with `plan/count`, and the whole sequence
with the clock, the pace window and the measured costs is in every checkpoint (`budget`). A
continued run follows the recorded plans up to its checkpoint and re-plans only after it.
"""

from __future__ import annotations

import atexit
import logging
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from typing import Any, ContextManager, Iterator, Protocol

from pipeline import distributed
from pipeline.config import Config, duration_seconds
from pipeline.data.augment.progressive import ProgressiveResize
from pipeline.runs.clock import process_age
from pipeline.training.budget import FINISH_S, SAFETY, BudgetPlan, Cadence, Costs, plans_by, position, replan
from pipeline.training.checkpoint import ResumePoint
from pipeline.training.schedule import build_scheduler
from pipeline.training.state import Counters

log = logging.getLogger("pipeline")

REPLAN_TOLERANCE = 0.01  # re-plan when the plan in force is predicted to end this share of the budget off target
MIN_WINDOW_STEPS = 2  # fewer steps since the last point measure no pace
RECENT = 3  # windows whose median pace the fixed costs are planned at
WINDOW_SAMPLES = 64  # steps of a window whose predicted cost is averaged (progressive resizing)


# ------------------------------------------------------------------------------------ the clocks


class BudgetClock(Protocol):
    slow: bool  # a simulated clock past its slow-down step (kept in the checkpoint)

    def now(self) -> float: ...  # budget seconds used so far

    def tick(self, global_step: int | None) -> None: ...  # a training step was done (None: a measuring step)

    def charge(self, kind: str) -> float: ...  # an evaluation, a checkpoint or closing starts: seconds charged now


class WallClock:
    """Budget seconds on the wall: this process's age, plus what earlier sessions had used at the checkpoint."""

    def __init__(self, carried: float = 0.0) -> None:
        self.origin = time.perf_counter() - process_age() - carried
        self.slow = False

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def tick(self, global_step: int | None) -> None:
        pass

    def charge(self, kind: str) -> float:
        return 0.0


class SimulatedClock:
    """train.debug_budget_clock: seconds advance by fixed costs, all of them twice as long once the run has done
    more than `slow_after` optimizer steps (0: never); the costs of the work itself are not counted. Closing the
    run costs what the plan assumes (FINISH_S)."""

    def __init__(self, step_s: float, evaluation_s: float, checkpoint_s: float, slow_after: int,
                 carried: float = 0.0) -> None:
        self.costs = {"step": step_s, "evaluation": evaluation_s, "checkpoint": checkpoint_s, "finish": FINISH_S}
        self.slow_after, self.seconds, self.slow = slow_after, carried, False

    def now(self) -> float:
        return self.seconds

    def tick(self, global_step: int | None) -> None:
        if global_step is not None:
            self.slow = bool(self.slow_after) and global_step > self.slow_after
        self.seconds += self.costs["step"] * (2 if self.slow else 1)

    def charge(self, kind: str) -> float:
        cost = self.costs[kind] * (2 if self.slow else 1)
        self.seconds += cost
        return cost


def build_clock(train_cfg: Any, carried: float = 0.0, slow: bool = False) -> BudgetClock:
    if not train_cfg.debug_budget_clock:
        return WallClock(carried)
    step_s, evaluation_s, checkpoint_s, slow_after = train_cfg.debug_budget_clock
    clock = SimulatedClock(step_s, evaluation_s, checkpoint_s, int(slow_after), carried)
    clock.slow = slow
    return clock


# ------------------------------------------------------------------------------------ the budget


class Schedulable(Protocol):
    """What install() sets: pipeline/training/components.py `Components`."""

    optimizer: Any
    scheduler: Any
    train_loader: Any


class RunBudget:
    """The plans of a budgeted run, the pace since the last re-plan point, and the costs measured so far."""

    def __init__(self, budget_s: float, cadence: Cadence, grow: ProgressiveResize | None, costs: Costs,
                 plans: list[BudgetPlan], clock: BudgetClock, state: dict[str, Any] | None = None) -> None:
        self.budget_s, self.cadence, self.grow, self.costs, self.clock = budget_s, cadence, grow, costs, clock
        self.plans = plans
        state = state or {}
        # The pace window: from optimizer step `window_step` at budget second `window_time`, less the seconds
        # of evaluations, checkpoints and start-up (`window_excluded`) since.
        self.window_step, self.window_time, self.window_excluded = state.get(
            "window", (plans[-1].at_step, costs.spent, 0.0))
        self.paused_at = state.get("elapsed_s", costs.spent)  # when training last stopped (the plan; a checkpoint)
        # The pace: seconds per step / the start-up measurement's prediction, in the last RECENT windows; steps
        # are planned at the last window's, fixed costs (evaluations, checkpoints, closing) at their median.
        self.recent: list[float] = state.get("recent", [])
        self.factor, self.fixed_factor = state.get("factor", 1.0), state.get("fixed_factor", 1.0)
        self.measured: dict[str, list[float]] = state.get("measured", {})  # kind -> [seconds, fixed_factor then]
        self.warned = state.get("warned", False)  # the "cannot be kept" warning, said once
        self.save_started, self.save_charged = 0.0, 0.0
        self.run_cfg: Config | None = None  # the planned config a re-plan changes (planned_config)
        self.records: Any = None  # metrics.jsonl, summary, W&B (start)
        self.is_main = True

    # ------------------------------------------------------------------------------ where the run is

    @property
    def plan(self) -> BudgetPlan:
        return self.plans[-1]

    def position(self, step: int) -> float:
        """Where optimizer step `step` is on the schedule (the first plan's steps)."""
        return position(self.plans, step)

    def loader_position(self, epoch: int, global_step: int) -> float:
        """The same for a training batch, under the plans made by its epoch's start: a batch's size never
        depends on when DALI prepared it, nor on whether the run was resumed."""
        return position(plans_by(self.plans, epoch * self.cadence.steps_per_epoch), global_step)

    def planned_config(self, cfg: Config) -> Config:
        """`cfg` with the latest plan's length and the first plan's schedule (its axis). A re-plan changes the
        length of this config in place: whoever holds it (the trainer, its evaluation) follows."""
        out = self.plans[0].apply(cfg)
        out.train.epochs, out.train.max_steps = self.plan.epochs, self.plan.total_steps
        self.run_cfg = out
        return out

    def install(self, parts: Schedulable, schedule: Any) -> None:
        """The learning-rate schedule (`schedule`: the planned config's, over the first plan) and progressive
        resizing of `parts` follow `position`. Before a checkpoint's scheduler state is loaded: a new scheduler
        starts at step 0."""
        first = self.plans[0]
        parts.scheduler = build_scheduler(schedule, parts.optimizer, first.epochs, self.cadence.steps_per_epoch,
                                          first.total_steps, position=self.position)
        if hasattr(parts.train_loader, "set_total_steps"):
            parts.train_loader.set_total_steps(first.total_steps, position=self.loader_position)

    # ------------------------------------------------------------------------------ what the run tells it

    def start(self, records: Any, first_session: bool, is_main: bool) -> None:
        """Training starts (or resumes): the plans in the summary and W&B every session, the first plan's
        metrics.jsonl row once; what start-up took since the plan or the checkpoint is no step's."""
        self.records, self.is_main = records, is_main
        records.summary({**self.plan.record(), "plan/count": len(self.plans)})
        if first_session:
            records.log({"step": 0, "epoch": 0, **self.plans[0].record()})
        self.window_excluded += self.clock.now() - self.paused_at

    def after_step(self, c: Counters, total_steps: int) -> int:
        """After every optimizer step: the clock counts it; at a re-plan point, a re-plan. Returns the run's
        total steps (a new plan's)."""
        self.clock.tick(c.global_step)
        if c.global_step >= self.plan.total_steps:
            return total_steps  # the run's end is reached: nothing left to plan
        at_epoch_end = c.step_in_epoch == self.cadence.steps_per_epoch
        window = c.global_step - self.window_step
        if window < max(self.plan.every_steps // 2 if at_epoch_end else self.plan.every_steps, MIN_WINDOW_STEPS):
            return total_steps
        new = self.replan(c)
        return new.total_steps if new is not None else total_steps

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """An evaluation: measured, and kept out of the steps' pace."""
        started = self.clock.now()
        self.clock.charge(kind)
        yield
        seconds = self.clock.now() - started
        self.window_excluded += seconds
        self.measured[kind] = [seconds, self.fixed_factor]

    def before_save(self, counters: Counters) -> None:  # CheckpointManager observer
        self.save_started, self.save_charged = self.clock.now(), self.clock.charge("checkpoint")
        if self.save_charged:  # a simulated write is done at once: in the checkpoint it is about to write
            self.window_excluded += self.save_charged
            self.measured["checkpoint"] = [self.save_charged, self.fixed_factor]

    def after_save(self, counters: Counters) -> None:
        if self.save_charged:
            return
        seconds = self.clock.now() - self.save_started
        self.window_excluded += seconds
        self.measured["checkpoint"] = [seconds, self.fixed_factor]

    # ------------------------------------------------------------------------------ re-planning

    def replan(self, c: Counters) -> BudgetPlan | None:
        """Every rank at the same point: rank 0 measures the pace and decides; a new plan is every rank's, moves
        the run's end (the planned config's train.epochs and train.max_steps) and is recorded (metrics.jsonl,
        the summary, W&B). The pace window starts again here."""
        now = self.clock.now()
        new = distributed.broadcast_object(self.decide(c.global_step, now) if self.is_main else None)
        self.window_step, self.window_time, self.window_excluded = c.global_step, now, 0.0
        if new is None:
            return None
        before = self.plan
        self.plans.append(new)
        if self.run_cfg is not None:
            self.run_cfg.train.epochs, self.run_cfg.train.max_steps = new.epochs, new.total_steps
        log.info("plan: %s", new.describe_change(before))
        self.records.log({"step": c.global_step, "epoch": round(c.global_step / self.cadence.steps_per_epoch, 4),
                          **new.record()})
        self.records.summary({**new.record(), "plan/count": len(self.plans)})
        return new

    def decide(self, step: int, now: float) -> BudgetPlan | None:
        """The plan from here at the pace of the window just ended, or None to keep the plan in force."""
        steps, seconds = step - self.window_step, now - self.window_time - self.window_excluded
        if steps <= 0 or seconds <= 0:
            return None
        self.recent = (self.recent + [seconds / steps / self.predicted_step(self.window_step, step)])[-RECENT:]
        self.factor, self.fixed_factor = self.recent[-1], statistics.median(self.recent)
        axis = self.plans[0].total_steps
        found = replan(self.plan, self.budget_s, self.costs_now(now), self.cadence, step,
                       min(self.position(step) / axis, 1.0), self.grow)
        if found.overrun_s > 0:
            if not self.warned:
                self.warned = True
                log.warning("train.time_budget %.0f s cannot be kept: at step %d, %.0f s in, the final evaluation, "
                            "checkpoint and closing the run need %.1f s and %.1f s are left; ending at this step, "
                            "about %.0f s over", self.budget_s, step, now, found.plan.predicted_s - now,
                            self.budget_s - now, found.overrun_s)
            return found.plan if self.plan.total_steps != step else None
        target = self.budget_s * (1 - SAFETY)
        if (abs(found.current_predicted_s - target) <= REPLAN_TOLERANCE * self.budget_s
                or found.plan.total_steps == self.plan.total_steps):
            return None
        return found.plan

    def predicted_step(self, start: int, end: int) -> float:
        """The start-up measurement's mean step over optimizer steps start+1..end (their sizes)."""
        if self.grow is None:
            return self.costs.step
        n = min(end - start, WINDOW_SAMPLES)
        axis = self.plans[0].total_steps
        steps = [start + 1 + (end - start - 1) * i // max(n - 1, 1) for i in range(n)]
        grow = self.grow
        return sum(self.costs.step_at(grow.side_at(min(self.position(g) / axis, 1.0)), grow.start_side,
                                      grow.end_side) for g in steps) / n

    def costs_now(self, now: float) -> Costs:
        """Every cost at the pace measured now; evaluations and checkpoints measured during the run, scaled
        from the pace they were measured at."""
        costs = self.costs.slowed(self.factor, self.fixed_factor, spent=now)
        measured = {kind: seconds * self.fixed_factor / then for kind, (seconds, then) in self.measured.items()}
        return Costs(spent=costs.spent, step=costs.step, evaluation=measured.get("evaluation", costs.evaluation),
                     checkpoint=measured.get("checkpoint", costs.checkpoint), finish=costs.finish,
                     step_start=costs.step_start, compile=costs.compile)

    # ------------------------------------------------------------------------------ state and reports

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint (written between before_save and after_save)."""
        return {"plans": [asdict(p) for p in self.plans], "costs": asdict(self.costs),
                "elapsed_s": self.clock.now(), "window": [self.window_step, self.window_time, self.window_excluded],
                "recent": self.recent, "factor": self.factor, "fixed_factor": self.fixed_factor,
                "measured": self.measured, "warned": self.warned,
                "slow": self.clock.slow}

    def ending(self, report: bool) -> dict[str, float]:
        """time/budget_* for the summary: the budget, the budget seconds used (as the budget counts them: from
        the process start, earlier sessions included), their ratio. The run is closing: what follows is charged.
        `report`: rank 0 says at exit, after everything else, when the run ended against its budget."""
        self.clock.charge("finish")
        used = self.clock.now()
        if report and self.is_main:
            atexit.register(self.report_end)
        return {"time/budget_s": self.budget_s, "time/budget_used_s": round(used, 1),
                "time/budget_ratio": round(used / self.budget_s, 4), "plan/count": len(self.plans)}

    def report_end(self) -> None:
        """The run's last line about its budget: when it ended against it, and what the last plan predicted."""
        used = self.clock.now()
        line = (f"train.time_budget: ended at {minutes(used)} of {minutes(self.budget_s)} "
                f"({100 * used / self.budget_s:.0f}%); the last of {len(self.plans)} plan(s) predicted "
                f"{minutes(self.plan.predicted_s)}")
        if used > self.budget_s:
            log.warning("%s: %s over", line, minutes(used - self.budget_s))
        else:
            log.info("%s", line)


class NoBudget:
    """A run without train.time_budget: every hook of RunBudget, doing nothing."""

    plans: tuple[BudgetPlan, ...] = ()

    def planned_config(self, cfg: Config) -> Config:
        return cfg

    def install(self, parts: Schedulable, schedule: Any) -> None:
        pass

    def start(self, records: Any, first_session: bool, is_main: bool) -> None:
        pass

    def after_step(self, c: Counters, total_steps: int) -> int:
        return total_steps

    def timed(self, kind: str) -> ContextManager[None]:
        return nullcontext()

    def before_save(self, counters: Counters) -> None:
        pass

    def after_save(self, counters: Counters) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def ending(self, report: bool) -> dict[str, float]:
        return {}


def minutes(seconds: float) -> str:
    """118.4 -> '1 min 58 s'; 42 -> '42 s'."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def restored_budget(cfg: Config, resume: ResumePoint | None) -> RunBudget | NoBudget:
    """The budget a continued run recorded in its checkpoint (NoBudget: a fresh run, or a run without a budget).
    A checkpoint written before re-planning holds one plan under `plan` (its run time stands for the
    budget seconds used)."""
    if resume is None:
        return NoBudget()
    saved = resume.ckpt.get("budget")
    if saved is None:
        plan = resume.ckpt.get("plan")
        if not plan:
            return NoBudget()
        counters = resume.ckpt["counters"]
        saved = {"plans": [plan], "costs": None, "elapsed_s": counters["wall_seconds"],
                 "window": [counters["global_step"], counters["wall_seconds"], 0.0]}
    plans = [BudgetPlan(**p) for p in saved["plans"]]
    first = plans[0]
    costs = Costs(**saved["costs"]) if saved.get("costs") else Costs(
        spent=first.spent_s, step=first.step_s, evaluation=first.evaluation_s, checkpoint=first.checkpoint_s)
    cadence = Cadence(first.steps_per_epoch, first.nominal_epochs, cfg.eval.every, cfg.checkpoint.every_epochs,
                      cfg.checkpoint.every_steps)
    budget_s = duration_seconds(cfg.train.time_budget) if cfg.train.time_budget != "off" else first.budget_s
    clock = build_clock(cfg.train, carried=saved["elapsed_s"], slow=saved.get("slow", False))
    state = {k: v for k, v in saved.items() if k not in ("plans", "costs")}
    return RunBudget(budget_s, cadence, ProgressiveResize.from_config(cfg.data.train), costs, plans, clock, state)
