"""train.time_budget at start-up: measure what the run costs, put the run back as it was, make the first plan.

    cfg, budget = start_budget(cfg, parts, dist, run_dir, data, restored_budget(cfg, resume), resume)

After start-up (and after compilation: the first steps compile), the run measures what it costs:
a training step (a timed block after warm-up steps), one evaluation and one checkpoint write, all
of it real work on the real model (the block a whole epoch when epochs are short, so what an epoch
boundary costs is in the figure). Then it puts the model, optimizer, EMA, scaler and random state
back to what they were before the measurement and the loader back to its first batch, so the
measured steps leave no trace in what is trained: the run trains exactly what a run without a
budget, given the planned values, trains. The plan: pipeline/training/budget.py; what keeps it
during the run: pipeline/training/budget_run.py.

**The measurement is bounded:** at most `MEASURE_SHARE` of the budget. The timed block stops at
60% of that bound (fewer steps, at least one), and an evaluation still running at 90% of it is
stopped and extrapolated from the batches it did (the evaluation loader is then rebuilt). A step,
an evaluation batch and a checkpoint write are not interrupted: one of each is measured whatever
the bound. When the steps alone show that not one step with its evaluation and checkpoint fits,
the run refuses then, in one line, without measuring the rest. A measurement cut short is less
exact; the run's re-plans correct the plan from the pace they measure.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline import distributed
from pipeline.config import Config, duration_seconds
from pipeline.data.augment.progressive import ProgressiveResize
from pipeline.distributed import DistInfo
from pipeline.errors import ConfigError
from pipeline.training.budget import Cadence, Costs, make_plan
from pipeline.training.budget_run import BudgetClock, NoBudget, RunBudget, build_clock
from pipeline.training.checkpoint import ResumePoint, atomic_save
from pipeline.training.components import build_training_step, rebuild_eval_loader, rebuild_train_loader
from pipeline.training.state import rng_state, set_rng_state
from pipeline.training.step import evaluate

log = logging.getLogger("pipeline")

# Measurement: untimed steps (compilation, allocator, cudnn autotune), then a timed block of at least
# TIMED_STEPS steps, a whole epoch when it has fewer than MAX_TIMED_STEPS (so the epoch boundary is in
# it): a longer block reads steadier (BENCHMARKS.md, time budget adherence on the CPU before re-planning).
WARMUP_STEPS, TIMED_STEPS, MAX_TIMED_STEPS = 3, 12, 200
MEASURE_SHARE = 0.10  # the measurement may take this share of the budget
STEPS_BY, EVALUATION_BY = 0.6, 0.9  # shares of that bound by which the steps, then the evaluation, stop


def time_block(step: Callable[[], None], sync: Callable[[], None], timed_steps: int, clock: Callable[[], float],
               deadline: float = math.inf) -> tuple[float, float]:
    """(the first warm-up step, the mean of a timed block after up to WARMUP_STEPS warm-up steps), seconds.
    Past `deadline` (a clock value) no more warm-up steps are run and the block ends after at least one step."""
    t0 = clock()
    step()
    sync()
    first = clock() - t0
    for _ in range(WARMUP_STEPS - 1):
        if clock() > deadline:
            break
        step()
    sync()
    t0, done = clock(), 0
    while done < timed_steps and (done == 0 or clock() <= deadline):
        step()
        done += 1
    sync()
    return first, (clock() - t0) / done


def measure_costs(step: Callable[[], None], evaluate: Callable[[float], float], checkpoint: Callable[[], None],
                  sync: Callable[[], None], clock: Callable[[], float], timed_steps: int = TIMED_STEPS,
                  resize: Callable[[str], None] | None = None, bound: float = math.inf,
                  check: Callable[[Costs], None] | None = None) -> Costs:
    """Time `timed_steps` calls of `step` as one block (after WARMUP_STEPS untimed ones), one evaluation
    (`evaluate(deadline)` runs it and returns its seconds) and one `checkpoint`, in about `bound` seconds
    of `clock` (budget seconds: Costs.spent is its value at the end). A block, not the median of single steps:
    over a whole epoch it includes what an epoch boundary costs (the loader's reset, its prefetch refilling),
    as the run will pay it. `resize` (progressive resizing): called with "start", then "final", before a
    block at each size. `check(costs)`, after the steps with nothing else costed yet, may refuse the budget."""
    started = clock()
    steps_by = started + STEPS_BY * bound
    step_start, compile_s = None, 0.0
    if resize is not None:
        resize("start")
        first_start, step_start = time_block(step, sync, timed_steps, clock, started + STEPS_BY * bound / 2)
        resize("final")
    first, stepping = time_block(step, sync, timed_steps, clock, steps_by)
    if resize is not None:
        compile_s = max(first - stepping, first_start - step_start, 0.0)
    if check is not None:
        check(Costs(spent=clock(), step=stepping, evaluation=0.0, checkpoint=0.0, step_start=step_start,
                    compile=compile_s))
    evaluation = evaluate(started + EVALUATION_BY * bound)
    t0 = clock()
    checkpoint()
    written = clock() - t0
    return Costs(spent=clock(), step=stepping, evaluation=evaluation, checkpoint=written, step_start=step_start,
                 compile=compile_s)


class Snapshot:
    """The run's trainable state (`Components.state_dict`, what a checkpoint saves) and random state, copied
    before the measurement and put back after it."""

    def __init__(self, parts: Any, device: torch.device) -> None:
        self.parts, self.device = parts, device
        self.state = copy.deepcopy(parts.state_dict())  # state_dict() shares the live tensors
        self.rng = rng_state(device)

    def restore(self) -> None:
        self.parts.load_state_dict(self.state)
        for param in self.parts.model.parameters():
            param.grad = None
        set_rng_state(self.rng, self.device)


def cadence_of(cfg: Config, steps_per_epoch: int) -> Cadence:
    return Cadence(steps_per_epoch, cfg.train.epochs, cfg.eval.every, cfg.checkpoint.every_epochs,
                   cfg.checkpoint.every_steps)


def measure_evaluation(parts: Any, cfg: Config, clock: BudgetClock, deadline: float) -> tuple[float, bool]:
    """(the seconds of one evaluation, whether it was cut short at `deadline`, after two batches at least, and
    extrapolated from the batches done). Cut short, the evaluation loader is left mid-pass: the caller
    rebuilds it."""
    started = clock.now()
    clock.charge("evaluation")
    parts.sync_buffers()
    models = list(parts.eval_models(cfg.eval.weights).values())
    for done_models, model in enumerate(models):
        model_started, done_at = clock.now(), []  # done_at[n]: when n batches were evaluated

        def counted():
            batches = iter(parts.eval_loader)
            while True:
                done_at.append(clock.now())
                batch = next(batches, None)
                if batch is None:
                    return
                yield batch

        result = evaluate(model, counted(), parts.precision, cfg.eval.tta == "flip",
                          should_stop=lambda: len(done_at) > 3 and clock.now() > deadline)
        if result is None:  # stopped (on some rank): the first batch as measured (it also starts the loader's
            done = len(done_at) - 1  # pipeline), every other one at the pace of those done after it
            first = done_at[1] - model_started
            rest = (done_at[done] - done_at[1]) / (done - 1) if done > 1 else first
            per_model = first + rest * (len(parts.eval_loader) - 1)
            return model_started - started + per_model * (len(models) - done_models), True
    return clock.now() - started, False


def plan_budget(cfg: Config, parts: Any, dist: DistInfo, run_dir: Path, data: Any, clock: BudgetClock,
                training_step: Callable) -> RunBudget:
    """Measure on the real run within the bound, put its state back as it was, make the first plan (the caller
    rewinds the training loader). `training_step(images, labels, global_step)` is the step the run trains with.
    Rank 0's plan (or refusal) is every rank's."""
    budget_s = duration_seconds(cfg.train.time_budget)
    cadence = cadence_of(cfg, parts.steps_per_epoch)
    grow = ProgressiveResize.from_config(cfg.data.train)
    snapshot = Snapshot(parts, dist.device)
    batches = iter(_forever(parts.train_loader))
    counter = iter(range(10**9))
    probe = run_dir / ".budget-probe.pt"

    def step() -> None:
        training_step(*next(batches), next(counter))
        clock.tick(None)

    def write_probe() -> None:
        clock.charge("checkpoint")
        if dist.is_main:  # the trainable state a checkpoint holds (the rest of it is small)
            atomic_save(parts.state_dict(), probe)
            probe.unlink(missing_ok=True)
        distributed.barrier()

    def plan_or_refusal(costs: Costs) -> Any:
        try:
            return make_plan(budget_s, costs, parts.steps_per_epoch, cfg.train.epochs, cfg.eval.every,
                             cfg.checkpoint.every_epochs, cfg.checkpoint.every_steps, grow)
        except ConfigError as exc:
            return str(exc)

    def check(costs: Costs) -> None:  # the steps alone: refuse now rather than after measuring the rest
        refusal = distributed.broadcast_object(plan_or_refusal(costs) if dist.is_main else None)
        if isinstance(refusal, str):
            raise ConfigError(refusal)

    cut_short = [False]

    def evaluation(deadline: float) -> float:
        seconds, cut_short[0] = measure_evaluation(parts, cfg, clock, deadline)
        return seconds

    def resize(which: str) -> None:  # the loader's side follows step / total: ~0 gives the start, >= 1 the final
        parts.train_loader.set_total_steps(10**15 if which == "start" else 1)

    timed = min(max(TIMED_STEPS, parts.steps_per_epoch), MAX_TIMED_STEPS)
    bound = MEASURE_SHARE * budget_s
    log.info("train.time_budget %s: measuring up to %d training steps (after %d warm-up steps)%s, an evaluation "
             "and a checkpoint, in at most %.0f s", cfg.train.time_budget, timed, WARMUP_STEPS,
             f" at {grow.start_side} and at {grow.end_side} px" if grow else "", bound)
    started = clock.now()
    costs = measure_costs(step=step, evaluate=evaluation, checkpoint=write_probe,
                          sync=lambda: distributed.synchronize(dist.device), clock=clock.now, timed_steps=timed,
                          resize=resize if grow is not None else None, bound=bound, check=check)
    snapshot.restore()
    if cut_short[0]:
        rebuild_eval_loader(cfg, dist, data, parts)
        log.info("train.time_budget: the evaluation was cut short at the measuring bound and extrapolated "
                 "(%.1f s)", costs.evaluation)
    plan = distributed.broadcast_object(plan_or_refusal(costs) if dist.is_main else None)
    if isinstance(plan, str):
        raise ConfigError(plan)
    log.info("plan: %s (measured in %.1f s)", plan.describe(), clock.now() - started)
    return RunBudget(budget_s, cadence, grow, costs, [plan], clock)


def _forever(loader: Any):
    while True:
        yield from loader


def start_budget(cfg: Config, parts: Any, dist: DistInfo, run_dir: Path, data: Any, budget: RunBudget | NoBudget,
                 resume: ResumePoint | None) -> tuple[Config, RunBudget | NoBudget]:
    """train.time_budget at start-up, before a checkpoint's state is loaded into `parts`: a continued run's
    recorded plans (`budget`) set its schedule; a fresh run is measured on `parts` and planned, then `parts`
    is set to the plan (the schedule over it, a training loader at its first batch). Returns the planned
    config and the run's budget (`budget` as given when there is nothing to plan)."""
    if budget.plans:
        budget.install(parts, cfg.schedule)
        return cfg, budget
    if cfg.train.time_budget == "off" or cfg.eval.only:
        return cfg, budget
    if resume is not None:  # a budget accepted into a run that started without one
        raise ConfigError(f"train.time_budget: a run's plan is made by its first session, and {run_dir.name} started "
                          "without a budget; start a new run with it (./launch.sh --new ..., or another "
                          "logging.run_name)")
    budget = plan_budget(cfg, parts, dist, run_dir, data, build_clock(cfg.train), build_training_step(parts, cfg.train))
    planned = budget.planned_config(cfg)
    rebuild_train_loader(planned, dist, data, parts)
    budget.install(parts, planned.schedule)
    return planned, budget
