"""pipeline/training/budget_measure.py: the measurement of steps, an evaluation and a checkpoint on a given clock.
"""

from __future__ import annotations

import math

import pytest
import torch
from support.budget import WallLike, simulate

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.training.budget import (
    Costs,
)
from pipeline.training.budget_measure import measure_costs


class FakeTime:
    """A clock the test advances: each call of a returned action moves it by `seconds`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float):
        def act(*_):
            self.now += seconds
        return act


class TimedBatches:
    """An evaluation loader whose batches take `seconds` (one per batch) on `clock` (a WallLike)."""

    def __init__(self, clock, batches, seconds):
        self.clock, self.batches, self.seconds = clock, batches, seconds

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch, seconds in zip(self.batches, self.seconds):
            self.clock.seconds += seconds
            yield batch


def test_measurement_times_a_block_of_steps_an_evaluation_and_a_checkpoint_on_the_given_clock():
    clock = FakeTime(40.0)
    evaluated_by = []

    def evaluate(deadline):
        evaluated_by.append(deadline)
        clock.now += 3.0
        return 3.0

    costs = measure_costs(step=clock.advance(0.25), evaluate=evaluate, checkpoint=clock.advance(0.5),
                          sync=lambda: None, clock=clock, timed_steps=8)
    assert costs == Costs(spent=40.0 + 11 * 0.25 + 3.0 + 0.5, step=0.25, evaluation=3.0, checkpoint=0.5)
    assert evaluated_by == [math.inf]  # no bound given


def test_the_measurement_stops_at_its_share_of_the_budget_and_may_refuse_before_the_evaluation():
    clock = FakeTime(10.0)
    evaluated_by = []

    def evaluate(deadline):
        evaluated_by.append(deadline)
        return 7.0

    # Steps of 1 s under a 10 s bound: the block stops at 60% of it instead of timing 200 steps.
    costs = measure_costs(step=clock.advance(1.0), evaluate=evaluate, checkpoint=clock.advance(0.5),
                          sync=lambda: None, clock=clock, timed_steps=200, bound=10.0)
    assert costs.step == 1.0 and costs.evaluation == 7.0
    assert clock.now - 10.0 <= 10.0 * 0.6 + 1.0 + 0.5  # the steps end within one step of their share
    assert evaluated_by == [10.0 + 0.9 * 10.0]  # the evaluation is told when to stop

    def refuse(costs):
        raise ConfigError("train.time_budget: no")

    evaluated_by.clear()
    with pytest.raises(ConfigError):
        measure_costs(step=clock.advance(1.0), evaluate=evaluate, checkpoint=clock.advance(0.5), sync=lambda: None,
                      clock=clock, timed_steps=200, bound=10.0, check=refuse)
    assert evaluated_by == []  # refused on the steps alone, before the evaluation was measured

    # A first step longer than the whole bound: no warm-up after it, one timed step, then on.
    slow = FakeTime(0.0)
    costs = measure_costs(step=slow.advance(30.0), evaluate=lambda deadline: 1.0, checkpoint=slow.advance(0.5),
                          sync=lambda: None, clock=slow, timed_steps=200, bound=10.0)
    assert costs.step == 30.0 and slow.now == 60.5


def test_an_evaluation_past_the_measuring_bound_is_cut_short_and_extrapolated():
    from types import SimpleNamespace

    from pipeline.training.budget_measure import measure_evaluation
    from pipeline.training.precision import build_precision

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    batches = [(torch.randn(4, 3, 2, 2), torch.randint(0, 10, (4,))) for _ in range(10)]
    clock = WallLike(100.0)
    parts = SimpleNamespace(sync_buffers=lambda: None, eval_models=lambda weights: {"raw": model},
                            eval_loader=TimedBatches(clock, batches, [1.0] * 10),
                            precision=build_precision("fp32", torch.device("cpu")))
    cfg = load_config(None, [])
    seconds, cut = measure_evaluation(parts, cfg, clock, deadline=103.5)
    assert cut and seconds == pytest.approx(10.0)  # 10 batches of 1 s, from the three done by the deadline
    assert clock.seconds <= 106.0  # stopped within a batch or two of the deadline, not after all ten
    clock.seconds = 200.0
    seconds, cut = measure_evaluation(parts, cfg, clock, deadline=math.inf)
    assert not cut and seconds == 10.0
    # The first batch also starts the loader's pipeline: it is not the pace of the others.
    parts.eval_loader = TimedBatches(clock, batches, [5.0] + [1.0] * 9)
    clock.seconds = 300.0
    seconds, cut = measure_evaluation(parts, cfg, clock, deadline=307.5)
    assert cut and seconds == pytest.approx(5.0 + 9 * 1.0)


def test_a_quiet_run_whose_loop_is_faster_than_its_measurement_ends_on_time():
    # What BENCHMARKS.md saw on the CPU: the loop's steps ~10% faster than the measured ones; one plan made at
    # start-up ended at 86-95% of the budget.
    ratio, budget, records = simulate(120.0, 78, 0.075, loop_pace=0.9)
    assert 0.95 <= ratio <= 1.0 and len(budget.plans) > 1
    assert [row["plan/at_step"] for row in records.rows] == [p.at_step for p in budget.plans]
    unchanged, _, _ = simulate(120.0, 78, 0.075, loop_pace=1.0)
    assert 0.95 <= unchanged <= 1.0

