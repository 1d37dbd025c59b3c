"""train.time_budget: the run fits its schedule to the wall clock.

    plan = plan_from(resume)                          # a continued run keeps its first session's plan
    plan = plan or plan_budget(cfg, parts, dist, run_dir)   # measure, put the run back as it was, plan
    cfg = plan.apply(cfg)                             # train.epochs, train.max_steps, the schedule scaled

After start-up (and after compilation: the first steps compile), the run measures what it costs:
a training step (the median of timed steps after warm-up steps), one evaluation and one checkpoint
write, all of it real work on the real model (the steps as one timed block covering a whole epoch
when epochs are short, so what an epoch boundary costs is in the figure). Then it puts the model, optimizer, EMA, scaler and
random state back to what they were before the measurement and the loader back to its first batch,
so the measured steps leave no trace in what is trained: the run trains exactly what a run without a
budget, given the planned values, trains. The plan fixes the total number of optimizer steps such
that the time already spent (process start, start-up, measurement), the training steps, every
evaluation and checkpoint due on the way, the final evaluation and closing the run end inside the
budget, with `SAFETY` of it in reserve for the noise.

What runs over the planned total (Li, Yumer and Ramanan, "Budgeted Training: Rethinking Deep Neural
Network Training Under Resource Constraints", ICLR 2020: a schedule that decays to zero at the
budget beats a truncated longer one): cosine, linear, poly and onecycle shapes are functions of
step / total steps; the epoch positions of the schedule (schedule.warmup_epochs, schedule.milestones)
are scaled by planned steps / (train.epochs x steps per epoch), i.e. read as fractions of the run
that train.epochs describes; progressive resizing follows step / total steps (DaliLoader.set_total_steps).
The EMA's warm-up counts updates and needs nothing.

The plan is made once, by the run's first session, and kept in every checkpoint (and recorded in
metrics.jsonl and W&B as plan/*): a continued run follows it, so kill -9 and resume stays exact.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline import distributed
from pipeline.config import Config, duration_seconds
from pipeline.data.progressive import ProgressiveResize
from pipeline.distributed import DistInfo
from pipeline.errors import ConfigError
from pipeline.runs.clock import process_age
from pipeline.training.checkpoint import ResumePoint, atomic_save, rng_state, set_rng_state
from pipeline.training.components import build_training_step, rebuild_train_loader
from pipeline.training.schedule import build_scheduler
from pipeline.training.step import evaluate

log = logging.getLogger("pipeline")

SAFETY = 0.03  # share of the budget kept in reserve for timing noise
# Measurement: untimed steps (compilation, allocator, cudnn autotune), then a timed block of at least
# TIMED_STEPS steps, a whole epoch when it has fewer than MAX_TIMED_STEPS (so the epoch boundary is in
# it). On this 2-core CPU a 60-step block (4.5 s) read 72-80 ms for the quickstart's step: longer is steadier.
WARMUP_STEPS, TIMED_STEPS, MAX_TIMED_STEPS = 3, 12, 200
FINISH_S = 3.0  # closing the run after the final checkpoint: summary, curves.png, W&B (s, estimated)


@dataclass(frozen=True)
class Costs:
    """What the run measured of itself (seconds)."""

    spent: float  # process age when the measurement ended: start-up and measurement, already gone
    step: float  # one training step at the final input size (the mean over the timed block)
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


def mean_step(costs: Costs, grow: ProgressiveResize | None) -> float:
    """The mean step over a run: progressive resizing's side depends on the fraction of the run only,
    so the mean is the same for any length (averaged over 10,000 points of the run)."""
    if grow is None:
        return costs.step
    sides = [grow.side_at((i + 0.5) / 10_000) for i in range(10_000)]
    return sum(costs.step_at(s, grow.start_side, grow.end_side) for s in sides) / len(sides)


@dataclass(frozen=True)
class BudgetPlan:
    budget_s: float
    total_steps: int  # optimizer steps in all
    epochs: int  # ceil(total_steps / steps_per_epoch): the last one may be partial
    steps_per_epoch: int
    nominal_epochs: int  # train.epochs: the run the schedule's epoch positions describe
    predicted_s: float  # when the run should end (s after the process started)
    step_s: float  # a step at the final size
    evaluation_s: float
    checkpoint_s: float
    spent_s: float
    mean_step_s: float = 0.0  # the mean step over the run (progressive resizing: smaller early steps)
    compile_s: float = 0.0  # compilations still ahead (progressive resizing's sizes between start and final)

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
                f"{self.evaluation_s:.1f} s "
                f"an evaluation, {self.checkpoint_s:.2f} s a checkpoint, {self.spent_s:.1f} s spent before "
                f"training; predicted end at {self.predicted_s:.0f} s")


def plan_from(resume: ResumePoint | None) -> BudgetPlan | None:
    """The plan a continued run's first session made (None for a fresh run, or a run without a budget)."""
    saved = resume.ckpt.get("plan") if resume is not None else None
    return BudgetPlan(**saved) if saved else None


def record_plan(plan: BudgetPlan | None, records: Any, first_session: bool) -> None:
    """The plan, fixed once: in the summary and W&B every session, in metrics.jsonl once (at step 0)."""
    if plan is not None:
        records.summary(plan.record())
        if first_session:
            records.log({"step": 0, "epoch": 0, **plan.record()})


def run_cost(steps: int, costs: Costs, steps_per_epoch: int, eval_every: int, checkpoint_every: int,
             checkpoint_every_steps: int, step_s: float | None = None, ahead_s: float = 0.0) -> float:
    """Seconds from the end of the measurement to the end of a run of `steps` optimizer steps
    (`step_s`: the mean step, default costs.step; `ahead_s`: fixed costs still ahead, compilations)."""
    epochs = math.ceil(steps / steps_per_epoch)
    evaluations = (epochs // eval_every if eval_every > 0 else 0) + (0 if eval_every and epochs % eval_every == 0
                                                                      else 1)
    checkpoints = epochs // checkpoint_every + (0 if epochs % checkpoint_every == 0 else 1)
    if checkpoint_every_steps:
        checkpoints += steps // checkpoint_every_steps
    step_s = costs.step if step_s is None else step_s
    return steps * step_s + evaluations * costs.evaluation + checkpoints * costs.checkpoint + costs.finish + ahead_s


def make_plan(budget_s: float, costs: Costs, steps_per_epoch: int, nominal_epochs: int, eval_every: int,
              checkpoint_every: int, checkpoint_every_steps: int = 0,
              grow: ProgressiveResize | None = None) -> BudgetPlan:
    """The most steps whose run ends inside the budget (less SAFETY); ConfigError if not even one fits.
    `grow`: progressive resizing, whose smaller early steps cost less and whose sizes between the two
    measured ones each compile once during the run."""
    available = budget_s * (1 - SAFETY) - costs.spent
    step_s = mean_step(costs, grow)
    ahead_s = costs.compile * max(len(grow.sides()) - 2, 0) if grow is not None else 0.0

    def cost(steps: int) -> float:
        return run_cost(steps, costs, steps_per_epoch, eval_every, checkpoint_every, checkpoint_every_steps,
                        step_s, ahead_s)

    if cost(1) > available:
        raise ConfigError(f"train.time_budget: {budget_s:.0f} s leaves no time to train: {costs.spent:.1f} s went to "
                          f"start-up and measuring, and one step with its evaluation and checkpoint needs "
                          f"{cost(1):.1f} s more (e.g. train.time_budget={math.ceil((costs.spent + cost(1)) * 2)}s)")
    low, high = 1, max(2, int(available / step_s) + 1)  # cost is increasing in steps: bisect the last fit
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if cost(mid) <= available else (low, mid)
    return BudgetPlan(budget_s=budget_s, total_steps=low, epochs=math.ceil(low / steps_per_epoch),
                      steps_per_epoch=steps_per_epoch, nominal_epochs=nominal_epochs,
                      predicted_s=round(costs.spent + cost(low), 3), step_s=costs.step, evaluation_s=costs.evaluation,
                      checkpoint_s=costs.checkpoint, spent_s=costs.spent, mean_step_s=step_s, compile_s=ahead_s)


def time_block(step: Callable[[], None], sync: Callable[[], None], timed_steps: int,
               clock: Callable[[], float]) -> tuple[float, float]:
    """(the first warm-up step, the mean of a timed block after WARMUP_STEPS warm-up steps), seconds."""
    t0 = clock()
    step()
    sync()
    first = clock() - t0
    for _ in range(WARMUP_STEPS - 1):
        step()
    sync()
    t0 = clock()
    for _ in range(timed_steps):
        step()
    sync()
    return first, (clock() - t0) / timed_steps


def measure_costs(step: Callable[[], None], evaluate: Callable[[], None], checkpoint: Callable[[], None],
                  sync: Callable[[], None], timed_steps: int = TIMED_STEPS,
                  clock: Callable[[], float] = time.perf_counter, age: Callable[[], float] = process_age,
                  resize: Callable[[str], None] | None = None) -> Costs:
    """Time `timed_steps` calls of `step` as one block (after WARMUP_STEPS untimed ones), one `evaluate`
    and one `checkpoint`. A block, not the median of single steps: over a whole epoch it includes what
    an epoch boundary costs (the loader's reset, its prefetch refilling), as the run will pay it.
    `resize` (progressive resizing): called with "start", then "final", before a block at each size."""
    step_start, compile_s = None, 0.0
    if resize is not None:
        resize("start")
        first_start, step_start = time_block(step, sync, timed_steps, clock)
        resize("final")
    first, stepping = time_block(step, sync, timed_steps, clock)
    if resize is not None:
        compile_s = max(first - stepping, first_start - step_start, 0.0)
    t0 = clock()
    evaluate()
    evaluation = clock() - t0
    t0 = clock()
    checkpoint()
    written = clock() - t0
    return Costs(spent=age(), step=stepping, evaluation=evaluation, checkpoint=written, step_start=step_start,
                 compile=compile_s)


class Snapshot:
    """The run's trainable state and random state, copied before the measurement and put back after it."""

    def __init__(self, parts: Any, device: torch.device) -> None:
        self.parts, self.device = parts, device
        self.state = copy.deepcopy({
            "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(), "scaler": parts.precision.scaler.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None})
        self.rng = rng_state(device)

    def restore(self) -> None:
        parts, state = self.parts, self.state
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if parts.precision.scaler.is_enabled():
            parts.precision.scaler.load_state_dict(state["scaler"])
        if parts.ema is not None:
            parts.ema.load_state_dict(state["ema"])
        for param in parts.model.parameters():
            param.grad = None
        set_rng_state(self.rng, self.device)


def plan_budget(cfg: Config, parts: Any, dist: DistInfo, run_dir: Path, training_step: Callable) -> BudgetPlan:
    """Measure on the real run, put its state back as it was, plan (the caller rewinds the loader).

    `training_step(images, labels, global_step)` is the step the run trains with. Rank 0's plan is
    every rank's.
    """
    budget_s = duration_seconds(cfg.train.time_budget)
    snapshot = Snapshot(parts, dist.device)
    batches = iter(_forever(parts.train_loader))
    counter = iter(range(10**9))
    probe = run_dir / ".budget-probe.pt"

    def write_probe() -> None:
        if dist.is_main:
            atomic_save({"model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                         "ema": parts.ema.state_dict() if parts.ema is not None else None}, probe)
            probe.unlink(missing_ok=True)
        distributed.barrier()

    timed = min(max(TIMED_STEPS, parts.steps_per_epoch), MAX_TIMED_STEPS)
    grow = ProgressiveResize.from_config(cfg.data.train)
    log.info("train.time_budget %s: measuring %d training steps (after %d warm-up steps)%s, an evaluation and a "
             "checkpoint", cfg.train.time_budget, timed, WARMUP_STEPS,
             f" at {grow.start_side} and at {grow.end_side} px" if grow else "")

    def resize(which: str) -> None:  # the loader's side follows step / total: ~0 gives the start, >= 1 the final
        parts.train_loader.set_total_steps(10**15 if which == "start" else 1)

    costs = measure_costs(step=lambda: training_step(*next(batches), next(counter)),
                          evaluate=lambda: _evaluate(parts, cfg), checkpoint=write_probe,
                          sync=lambda: distributed.synchronize(dist.device), timed_steps=timed,
                          resize=resize if grow is not None else None)
    snapshot.restore()
    plan: BudgetPlan | str | None = None
    if dist.is_main:
        try:
            plan = make_plan(budget_s, costs, parts.steps_per_epoch, cfg.train.epochs, cfg.eval.every,
                             cfg.checkpoint.every_epochs, cfg.checkpoint.every_steps, grow)
        except ConfigError as exc:
            plan = str(exc)
    plan = distributed.broadcast_object(plan)
    if isinstance(plan, str):
        raise ConfigError(plan)
    log.info("plan: %s", plan.describe())
    return plan


def _forever(loader: Any):
    while True:
        yield from loader


def _evaluate(parts: Any, cfg: Config) -> None:
    parts.sync_buffers()
    for model in parts.eval_models(cfg.eval.weights).values():
        evaluate(model, parts.eval_loader, parts.precision, cfg.eval.tta == "flip")


def budget_run(cfg: Config, parts: Any, dist: DistInfo, run_dir: Path, data: Any,
               resume: ResumePoint | None) -> tuple[Config, BudgetPlan]:
    """A fresh run with train.time_budget: plan it on `parts`, then set `parts` to the plan (schedule,
    a training loader at its first batch). Returns the planned config and the plan."""
    if resume is not None:  # a budget accepted into a run that started without one
        raise ConfigError(f"train.time_budget: a run's plan is made by its first session, and {run_dir.name} started "
                          "without a budget; start a new run with it (./launch.sh --new ..., or another "
                          "logging.run_name)")
    plan = plan_budget(cfg, parts, dist, run_dir, build_training_step(parts, cfg.train))
    planned = plan.apply(cfg)
    parts.scheduler = build_scheduler(planned.schedule, parts.optimizer, planned.train.epochs, parts.steps_per_epoch,
                                      planned.train.max_steps)
    rebuild_train_loader(planned, dist, data, parts)
    return planned, plan
