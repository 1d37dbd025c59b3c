"""train.time_budget: durations, the plan (with a fake clock), and a real budgeted run that is killed,
resumed, and still trains exactly what a run given the planned values trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.runs.metrics import read_metrics
from pipeline.training.budget import SAFETY, BudgetPlan, Costs, make_plan, measure_costs, run_cost
from runs import assert_same_tensors, load_ckpt, run_train
from test_reliability import kill_job, start_train, wait_for_file


def test_a_budget_is_a_duration_and_excludes_max_steps():
    assert load_config(None, ["train.time_budget=1h30m"]).train.time_budget == "1h30m"
    for bad in ("5 minutes", "m5", "-3s", "0s"):
        with pytest.raises(ConfigError, match="^train.time_budget: "):
            load_config(None, [f"train.time_budget={bad}"])
    with pytest.raises(ConfigError, match="^train.max_steps: train.time_budget plans the number of steps"):
        load_config(None, ["train.time_budget=5m", "train.max_steps=100"])


def test_measurement_times_a_block_of_steps_an_evaluation_and_a_checkpoint_on_the_given_clock():
    now = [0.0]

    def advance(seconds):
        return lambda: now.__setitem__(0, now[0] + seconds)

    costs = measure_costs(step=advance(0.25), evaluate=advance(3.0), checkpoint=advance(0.5), sync=lambda: None,
                          timed_steps=8, clock=lambda: now[0], age=lambda: 42.0)
    assert costs == Costs(spent=42.0, step=0.25, evaluation=3.0, checkpoint=0.5)


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


@pytest.mark.slow
def test_a_budgeted_run_keeps_its_plan_across_kill_and_resume_and_trains_what_the_plan_says(tmp_path):
    budgeted = ("train.time_budget=30s", "train.deterministic=true", "train.epochs=4", "schedule.name=cosine",
                "schedule.warmup_epochs=1", "checkpoint.every_steps=2", "checkpoint.keep_last=5",
                "logging.log_every=1")
    proc = start_train(tmp_path, "budget", *budgeted)
    wait_for_file(tmp_path / "budget" / "step-00000004.pt", proc)
    kill_job(proc)
    plan = load_ckpt(tmp_path / "budget" / "step-00000004.pt")["plan"]
    assert plan["total_steps"] > 4 and plan["nominal_epochs"] == 4
    resumed = run_train(tmp_path, "budget", *budgeted)
    assert "resumed from" in resumed.stderr and "measuring" not in resumed.stderr  # the plan is kept, not remade
    final = load_ckpt(tmp_path / "budget" / "last.pt")
    assert final["plan"] == plan and final["counters"]["global_step"] == plan["total_steps"]
    records = read_metrics(tmp_path / "budget" / "metrics.jsonl")
    assert records[0]["step"] == 0 and records[0]["plan/total_steps"] == plan["total_steps"]
    assert json.loads((tmp_path / "budget" / "summary.json").read_text())["plan/total_steps"] == plan["total_steps"]
    asked = yaml.safe_load((tmp_path / "budget" / "config.yaml").read_text())  # what was asked, not the plan
    assert asked["train"]["epochs"] == 4 and asked["train"]["time_budget"] == "30s" and asked["train"]["max_steps"] == 0

    # A run without a budget, given the planned values, trains the same bits: the measurement left no trace.
    scale = plan["total_steps"] / (4 * plan["steps_per_epoch"])
    run_train(tmp_path, "given", "train.deterministic=true", "schedule.name=cosine", "logging.log_every=1",
              f"train.epochs={plan['epochs']}", f"train.max_steps={plan['total_steps']}",
              f"schedule.warmup_epochs={1 * scale!r}")
    given = load_ckpt(tmp_path / "given" / "last.pt")
    assert_same_tensors(given["model"], final["model"], "model")
    assert_same_tensors(given["optimizer"], final["optimizer"], "optimizer")
    lrs = {name: [r["train/lr"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if "train/lr" in r]
           for name in ("budget", "given")}
    assert lrs["budget"] == lrs["given"] and lrs["budget"][-1] < 0.01  # the cosine ends at the last step
    assert Path(tmp_path / "budget" / ".budget-probe.pt").exists() is False


def test_progressive_resizing_is_planned_at_its_mean_step_with_its_compilations_ahead():
    from pipeline.data.progressive import ProgressiveResize

    grow = ProgressiveResize(start_side=96, end_side=122, ramp=(0.5, 0.8), multiple=16)  # 96, 112, 122
    costs = Costs(spent=20.0, step=0.1, evaluation=2.0, checkpoint=0.5, step_start=0.06, compile=15.0)
    plan = make_plan(600.0, costs, 50, 10, 1, 1, grow=grow)
    assert 0.06 < plan.mean_step_s < 0.1 and plan.compile_s == 15.0  # one size (112) compiles during the run
    assert costs.step_at(112, 96, 122) == pytest.approx(0.06 + 0.04 * (112**2 - 96**2) / (122**2 - 96**2))
    flat = make_plan(600.0, Costs(spent=20.0, step=0.1, evaluation=2.0, checkpoint=0.5), 50, 10, 1, 1)
    assert plan.total_steps > flat.total_steps  # the cheaper early steps buy more of them
    assert run_cost(plan.total_steps, costs, 50, 1, 1, 0, plan.mean_step_s, 15.0) <= 600.0 * (1 - SAFETY) - 20.0
