"""pipeline/training/budget.py and budget_run.py: durations, the plan and the re-plans as pure functions (a simulated
clock).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.budget import Records, WallLike, simulate

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.training.budget import (
    SAFETY,
    BudgetPlan,
    Cadence,
    Costs,
    cost_ahead,
    make_plan,
    position,
    replan,
    run_cost,
)
from pipeline.training.budget_run import REPLAN_TOLERANCE, RunBudget, SimulatedClock, minutes, restored_budget
from pipeline.training.checkpoint import ResumePoint
from pipeline.training.schedule import build_scheduler
from pipeline.training.state import Counters


def first_plan(budget_s=300.0, step=0.1, spe=50):
    return make_plan(budget_s, Costs(spent=20.0, step=step, evaluation=2.0, checkpoint=0.5), spe, 10, 1, 1)


def test_a_budget_is_a_duration_and_excludes_max_steps():
    assert load_config(None, ["train.time_budget=1h30m"]).train.time_budget == "1h30m"
    for bad in ("5 minutes", "m5", "-3s", "0s"):
        with pytest.raises(ConfigError, match="^train.time_budget: "):
            load_config(None, [f"train.time_budget={bad}"])
    with pytest.raises(ConfigError, match="^train.max_steps: train.time_budget plans the number of steps"):
        load_config(None, ["train.time_budget=5m", "train.max_steps=100"])
    for bad in ("[0.1,1]", "[0,1,0.2,40]", "[0.1,1,0.2,4.5]"):
        with pytest.raises(ConfigError, match="^train.debug_budget_clock: "):
            load_config(None, ["train.time_budget=5m", f"train.debug_budget_clock={bad}"])


@pytest.mark.parametrize("eval_every", [1, 5, 0])
def test_the_plan_is_the_longest_run_that_ends_inside_the_budget(eval_every):
    costs = Costs(spent=20.0, step=0.1, evaluation=2.0, checkpoint=0.5)
    plan = make_plan(300.0, costs, steps_per_epoch=50, nominal_epochs=10, eval_every=eval_every, checkpoint_every=1)
    available = 300.0 * (1 - SAFETY) - costs.spent

    def cost(steps):
        return run_cost(steps, costs, 50, eval_every, 1, 0)

    assert cost(plan.total_steps) <= available < cost(plan.total_steps + 1)  # one more step would not fit
    assert plan.epochs == -(-plan.total_steps // 50) and plan.predicted_s <= 300.0 * (1 - SAFETY)
    evaluations = {1: plan.epochs, 5: plan.epochs // 5 + (plan.epochs % 5 != 0), 0: 1}[eval_every]
    assert cost(plan.total_steps) == pytest.approx(plan.total_steps * 0.1 + evaluations * 2.0 + plan.epochs * 0.5
                                                   + costs.finish)
    longer = make_plan(600.0, costs, 50, 10, eval_every, 1)
    assert longer.total_steps > plan.total_steps  # more time, more steps


def test_a_budget_too_short_to_train_says_how_long_it_needs():
    with pytest.raises(ConfigError, match=r"train.time_budget: 30 s leaves no time to train: 29.0 s went to start-up"):
        make_plan(30.0, Costs(spent=29.0, step=0.1, evaluation=2.0, checkpoint=0.5), 50, 10, 1, 1)


def test_the_cost_ahead_counts_what_is_still_due_from_the_current_step():
    costs = Costs(spent=0.0, step=1.0, evaluation=10.0, checkpoint=100.0, finish=0.0)
    cadence = Cadence(steps_per_epoch=10, nominal_epochs=9, eval_every=2, checkpoint_every=3)
    # From the end of epoch 2, not yet closed, to 45 steps: epochs 2..5 end ahead; evaluations at 2, 4 and the
    # last (5); checkpoints at 3 and the last.
    assert cost_ahead(20, 45, costs, cadence) == 25 * 1.0 + 3 * 10.0 + 2 * 100.0
    # Mid-epoch (step 21): epoch 2's end is behind.
    assert cost_ahead(21, 45, costs, cadence) == 24 * 1.0 + 2 * 10.0 + 2 * 100.0
    # Ending now at an epoch's end: its closing evaluation and checkpoint are all that is left.
    assert cost_ahead(20, 20, costs, cadence) == 10.0 + 100.0
    assert cost_ahead(0, 45, costs, cadence) == run_cost(45, costs, 10, 2, 3, 0)


def test_a_replan_shortens_the_run_when_steps_take_twice_as_long_and_keeps_it_at_the_same_pace():
    plan = first_plan()
    cadence = Cadence(50, 10, 1, 1)
    start = 500  # the end of epoch 10, where the plan expected to be at this time
    spent = 20.0 + cost_ahead(0, start, Costs(0.0, 0.1, 2.0, 0.5, finish=0.0), cadence) - 2.0 - 0.5
    same = replan(plan, 300.0, Costs(spent=spent, step=0.1, evaluation=2.0, checkpoint=0.5), cadence, start,
                  start / plan.total_steps)
    assert abs(same.plan.total_steps - plan.total_steps) <= 1  # the same pace: the same plan
    assert same.current_predicted_s == pytest.approx(plan.predicted_s, abs=0.2)

    slower = replan(plan, 300.0, Costs(spent=spent, step=0.2, evaluation=4.0, checkpoint=1.0), cadence, start,
                    start / plan.total_steps)
    assert start < slower.plan.total_steps < plan.total_steps
    assert slower.plan.at_step == start and slower.overrun_s == 0.0
    assert slower.current_predicted_s > 300.0  # kept, the old plan would overrun
    assert slower.plan.predicted_s <= 300.0 * (1 - SAFETY)
    # The rest of the run at twice the cost: about half the remaining steps.
    assert slower.plan.total_steps - start == pytest.approx((plan.total_steps - start) / 2, rel=0.05)


def test_the_schedule_is_stretched_or_compressed_from_the_current_point_never_jumping():
    cfg = load_config(None, ["train.epochs=10", "schedule.name=cosine", "schedule.warmup_epochs=1"]).schedule
    first = BudgetPlan(budget_s=100, total_steps=200, epochs=10, steps_per_epoch=20, nominal_epochs=10,
                       predicted_s=97, step_s=0.1, evaluation_s=1, checkpoint_s=0.1, spent_s=5)
    shorter = BudgetPlan(**{**first.__dict__, "total_steps": 140, "epochs": 7, "at_step": 80})
    longer = BudgetPlan(**{**first.__dict__, "total_steps": 170, "epochs": 9, "at_step": 120})
    plans = [first, shorter, longer]

    def lrs(plans_in_force):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_scheduler(cfg, opt, first.epochs, 20, first.total_steps,
                                position=lambda step: position(plans_in_force, step))
        return [sched.lr_lambdas[0](step) for step in range(0, 171)]

    plain = lrs([first])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    unmapped = build_scheduler(cfg, opt, first.epochs, 20, first.total_steps)
    assert plain[:200] == [unmapped.lr_lambdas[0](s) for s in range(171)]  # no re-plan: the same bits

    mapped = lrs(plans)
    assert mapped[:81] == plain[:81]  # what was trained before the re-plan is untouched
    # Continuous at each re-plan: the first step after it moves no more than a step of the faster segment does.
    for s0 in (80, 120):
        assert abs(mapped[s0 + 1] - mapped[s0]) <= 2.5 * max(abs(mapped[s0] - mapped[s0 - 1]), 1e-9)
    assert position(plans, 120) == pytest.approx(80 + (200 - 80) * 40 / 60)
    assert position(plans, 170) == 200.0 and mapped[170] == pytest.approx(cfg.min_lr_factor)  # the end, now at 170
    assert all(b <= a + 1e-12 for a, b in zip(mapped[20:], mapped[21:]))  # still a decay after warm-up


def test_progressive_sizes_follow_the_plans_made_by_the_epochs_start():
    first = BudgetPlan(budget_s=100, total_steps=200, epochs=10, steps_per_epoch=20, nominal_epochs=10,
                       predicted_s=97, step_s=0.1, evaluation_s=1, checkpoint_s=0.1, spent_s=5)
    mid_epoch = BudgetPlan(**{**first.__dict__, "total_steps": 100, "epochs": 5, "at_step": 50})
    budget = RunBudget(100.0, Cadence(20, 10, 1, 1), None, Costs(5.0, 0.1, 1.0, 0.1), [first, mid_epoch],
                       SimulatedClock(0.1, 1.0, 0.1, 0))
    # Epoch 2 (steps 40..59) began before the re-plan at step 50: its batches keep the first plan's positions,
    # whenever DALI draws them; epoch 3 follows the new plan.
    assert budget.loader_position(2, 55) == 55 and budget.position(55) > 55
    assert budget.loader_position(3, 60) == budget.position(60)


def test_a_run_whose_machine_halves_its_speed_mid_run_re_plans_and_ends_within_ten_percent():
    ratio, budget, _ = simulate(120.0, 78, 0.075, slow_at=45.0)
    assert 0.90 <= ratio <= 1.05
    assert budget.plan.total_steps < budget.plans[0].total_steps
    assert budget.factor == pytest.approx(2.0, rel=0.05)  # the pace it measured: half the speed
    for late in (90.0, 100.0):  # a few windows before the end: one slow window is enough to re-plan
        ratio, _, _ = simulate(120.0, 78, 0.075, slow_at=late)
        assert 0.90 <= ratio <= 1.05


def test_a_short_slow_spell_does_not_end_the_run_early(monkeypatch):
    """A crowded machine (the quickstart's step at 0.43 s): 3x slower from 30 to 45 s, 12x from 60 to 80 s. The
    fixed costs at the median of the recent windows' pace keep the run going; at the last window's they made the
    final evaluation look 12x longer and the run end early. Figures quoted in pipeline/training/budget_run.py."""
    import pipeline.training.budget_run as budget_run

    def crowded(t):
        return 3.0 if 30 <= t < 45 else 12.0 if 60 <= t < 80 else 1.0

    kept, _, _ = simulate(120.0, 78, 0.43, evaluation_s=3.0, eval_every=5, start_s=16.0, speed=crowded)
    late, _, _ = simulate(120.0, 78, 0.075, evaluation_s=3.0, eval_every=5, slow_at=100.0)  # the price
    monkeypatch.setattr(budget_run, "RECENT", 1)  # every cost at the last window's pace
    early, _, _ = simulate(120.0, 78, 0.43, evaluation_s=3.0, eval_every=5, start_s=16.0, speed=crowded)
    late_last, _, _ = simulate(120.0, 78, 0.075, evaluation_s=3.0, eval_every=5, slow_at=100.0)
    assert round(kept, 2) == 0.97 and round(early, 2) == 0.77
    assert round(late, 2) == 1.07 and round(late_last, 2) == 1.04  # a halving 100 s in: later news of the evaluation


def test_long_epochs_need_re_plan_points_within_the_epoch():
    """The evidence for the step cadence: an epoch half as long as the budget, the speed halved 60% in (in the
    last epoch, with no epoch end left to re-plan at). Figures quoted in pipeline/training/budget_run.py."""
    with_points, _, _ = simulate(200.0, 1000, 0.1, slow_at=120.0)
    epoch_ends_only, _, _ = simulate(200.0, 1000, 0.1, slow_at=120.0, mid_epoch_points=False)
    assert round(with_points, 2) == 0.98 and round(epoch_ends_only, 2) == 1.34


def test_a_budget_that_cannot_be_kept_says_so_once_with_the_overrun_and_ends_now(caplog):
    measured = Costs(spent=5.0, step=0.1, evaluation=1.0, checkpoint=0.2)
    plan = make_plan(60.0, measured, 10, 10, 1, 1)
    clock = WallLike(5.0)
    budget = RunBudget(60.0, Cadence(10, 10, 1, 1), None, measured, [plan], clock)
    budget.start(Records(), first_session=True, is_main=True)
    c = Counters(epoch=1, step_in_epoch=10, global_step=20)  # the end of epoch 2
    clock.seconds = 59.5  # 20 steps took what the whole budget was for
    with caplog.at_level("WARNING", logger="pipeline"):
        assert budget.after_step(c, plan.total_steps) == 20  # the run ends here
    new = budget.plan
    assert new.total_steps == 20 and new.epochs == 2 and new.at_step == 20  # at this epoch's closing
    warned = [r.getMessage() for r in caplog.records if "cannot be kept" in r.getMessage()]
    assert len(warned) == 1 and "ending at this step, about" in warned[0] and " s over" in warned[0]
    clock.seconds += 1.0
    assert budget.after_step(c, 20) == 20 and len(budget.plans) == 2  # the end is reached: no more re-plans


def test_a_plan_that_still_fits_is_not_redrawn_for_noise():
    measured = Costs(spent=5.0, step=0.1, evaluation=1.0, checkpoint=0.2)
    plan = make_plan(120.0, measured, 50, 10, 1, 1)
    clock = WallLike(5.0)
    budget = RunBudget(120.0, Cadence(50, 10, 1, 1), None, measured, [plan], clock)
    budget.start(Records(), first_session=True, is_main=True)
    c = Counters(epoch=1, step_in_epoch=50, global_step=100)  # the end of epoch 2
    clock.seconds += 100 * 0.1 * (1 + REPLAN_TOLERANCE / 10)  # steps a hair slower than measured
    with budget.timed("evaluation"):
        clock.seconds += 1.0  # evaluations and checkpoints are costed on their own, not in the steps' pace
    budget.before_save(c)
    clock.seconds += 0.2
    budget.after_save(c)
    assert budget.after_step(c, plan.total_steps) == plan.total_steps and len(budget.plans) == 1
    assert budget.window_step == 100  # the pace window starts again anyway


def test_the_budget_s_state_restores_to_the_same_decisions():
    ratio, budget, _ = simulate(120.0, 78, 0.075, slow_at=45.0)
    state = budget.state_dict()
    ckpt = {"budget": state, "counters": {"wall_seconds": 0.0, "global_step": 0}}
    cfg = load_config(None, ["train.time_budget=120s", "train.debug_budget_clock=[0.075,1,0.2,0]"])
    restored = restored_budget(cfg, ResumePoint(Path("x.pt"), ckpt))
    assert restored.plans == budget.plans and restored.costs == budget.costs
    assert restored.clock.now() == state["elapsed_s"] and restored.factor == budget.factor
    assert restored.recent == budget.recent and restored.fixed_factor == budget.fixed_factor
    assert (restored.window_step, restored.window_time) == (budget.window_step, budget.window_time)
    assert [restored.position(s) for s in range(0, 2000, 7)] == [budget.position(s) for s in range(0, 2000, 7)]
    legacy = {"plan": state["plans"][0], "counters": {"wall_seconds": 30.0, "global_step": 390}}  # before re-plans
    old = restored_budget(cfg, ResumePoint(Path("x.pt"), legacy))
    assert old.plans == budget.plans[:1] and old.window_step == 390 and old.clock.now() == 30.0


def test_end_figures_in_minutes():
    assert minutes(118.4) == "1 min 58 s" and minutes(42) == "42 s" and minutes(120) == "2 min 0 s"


def test_progressive_resizing_is_planned_at_its_mean_step_with_its_compilations_ahead():
    from pipeline.data.augment.progressive import ProgressiveResize

    grow = ProgressiveResize(start_side=96, end_side=122, ramp=(0.5, 0.8), multiple=16)  # 96, 112, 122
    costs = Costs(spent=20.0, step=0.1, evaluation=2.0, checkpoint=0.5, step_start=0.06, compile=15.0)
    plan = make_plan(600.0, costs, 50, 10, 1, 1, grow=grow)
    assert 0.06 < plan.mean_step_s < 0.1 and plan.compile_s == 15.0  # one size (112) compiles during the run
    assert costs.step_at(112, 96, 122) == pytest.approx(0.06 + 0.04 * (112**2 - 96**2) / (122**2 - 96**2))
    flat = make_plan(600.0, Costs(spent=20.0, step=0.1, evaluation=2.0, checkpoint=0.5), 50, 10, 1, 1)
    assert plan.total_steps > flat.total_steps  # the cheaper early steps buy more of them
    assert run_cost(plan.total_steps, costs, 50, 1, 1, 0, plan.mean_step_s, 15.0) <= 600.0 * (1 - SAFETY) - 20.0
    # Re-planned past the ramp: only final-size steps and no compilation ahead.
    late = replan(plan, 600.0, costs, Cadence(50, 10, 1, 1), start=plan.total_steps - 100, progress=0.9, grow=grow)
    assert late.plan.mean_step_s == pytest.approx(0.1) and late.plan.compile_s == 0.0


def test_the_plan_scales_the_schedule_s_epoch_positions_to_the_planned_length():
    cfg = load_config(None, ["train.epochs=300", "schedule.warmup_epochs=5", "schedule.milestones=[150,225]",
                             "train.time_budget=5m"])
    plan = BudgetPlan(budget_s=300, total_steps=100 * 782 + 391, epochs=101, steps_per_epoch=782, nominal_epochs=300,
                      predicted_s=290, step_s=0.003, evaluation_s=1, checkpoint_s=0.1, spent_s=20)
    planned = plan.apply(cfg)
    scale = (100 * 782 + 391) / (300 * 782)
    assert planned.train.epochs == 101 and planned.train.max_steps == 100 * 782 + 391
    assert planned.schedule.warmup_epochs == 5 * scale and planned.schedule.milestones == [150 * scale, 225 * scale]
    assert planned.train.time_budget == "5m"  # what the run was asked for stays in its config

