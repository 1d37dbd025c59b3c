"""train.time_budget in real runs: a plan kept across kill and resume, a budget too short, the budget benchmark and its
competing load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.resume import kill_job, start_train, wait_for_file

from pipeline.bench.__main__ import main as bench_main
from pipeline.constants import REPO_ROOT as REPO
from pipeline.runs.metrics import read_metrics
from runs import TINY, assert_same_tensors, load_ckpt, run_train

# A simulated clock: 0.1 s a step, 1 s an evaluation, 0.2 s a checkpoint (the tiny run's own seconds do not
# count), so the plans are a function of the steps: runs killed and resumed re-plan exactly as runs that are not.
SIMULATED = ("train.deterministic=true", "train.epochs=4", "schedule.name=cosine", "schedule.warmup_epochs=1",
             "checkpoint.every_steps=2", "checkpoint.keep_last=100", "logging.log_every=1")


LOAD_HOLDER = """
import sys, time
from pipeline.bench.budget import CompetingLoad
with CompetingLoad(2) as load:
    load.start()
    print(" ".join(str(p.pid) for p in load.procs), flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_budgeted_run_keeps_its_plan_across_kill_and_resume_and_trains_what_the_plan_says(tmp_path):
    budgeted = ("train.time_budget=30s", "train.debug_budget_clock=[0.1,1,0.2,0]", *SIMULATED)
    proc = start_train(tmp_path, "budget", *budgeted)
    wait_for_file(tmp_path / "budget" / "step-00000008.pt", proc)
    kill_job(proc)
    plans = load_ckpt(tmp_path / "budget" / "step-00000008.pt")["budget"]["plans"]
    assert len(plans) == 1 and plans[0]["total_steps"] > 8 and plans[0]["nominal_epochs"] == 4
    plan = plans[0]
    resumed = run_train(tmp_path, "budget", *budgeted)
    assert "resumed from" in resumed.stderr and "measuring" not in resumed.stderr  # the plan is kept, not remade
    final = load_ckpt(tmp_path / "budget" / "last.pt")
    assert final["budget"]["plans"] == plans and final["counters"]["global_step"] == plan["total_steps"]
    records = read_metrics(tmp_path / "budget" / "metrics.jsonl")
    assert records[0]["step"] == 0 and records[0]["plan/total_steps"] == plan["total_steps"]
    summary = json.loads((tmp_path / "budget" / "summary.json").read_text())
    assert summary["plan/total_steps"] == plan["total_steps"] and summary["plan/count"] == 1
    assert summary["time/budget_s"] == 30.0 and 0.9 <= summary["time/budget_ratio"] <= 1.0
    assert "train.time_budget: ended at" in resumed.stderr
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


@pytest.mark.slow
def test_a_run_that_re_plans_when_its_steps_slow_down_resumes_bit_exact_after_kill(tmp_path):
    # Twice as slow after step 30: the run re-plans shorter, once or more, after that. Progressive resizing
    # (8 -> 12 -> 16 px) follows the re-planned position, in the resumed run too.
    budgeted = ("train.time_budget=40s", "train.debug_budget_clock=[0.1,1,0.2,30]", *SIMULATED,
                "data.train.progressive_start_crop=8", "data.train.progressive_multiple=4",
                "data.train.progressive_ramp=[0.3,0.7]")
    run_train(tmp_path, "straight", *budgeted)
    straight = load_ckpt(tmp_path / "straight" / "last.pt")
    plans = straight["budget"]["plans"]
    assert len(plans) >= 2 and plans[1]["at_step"] > 30 and plans[-1]["total_steps"] < plans[0]["total_steps"]
    assert straight["counters"]["global_step"] == plans[-1]["total_steps"]

    after_replan = plans[1]["at_step"] + 4 - plans[1]["at_step"] % 2  # a step checkpoint after the first re-plan
    proc = start_train(tmp_path, "killed", *budgeted)
    wait_for_file(tmp_path / "killed" / f"step-{after_replan:08d}.pt", proc)
    kill_job(proc)
    assert load_ckpt(tmp_path / "killed" / f"step-{after_replan:08d}.pt")["budget"]["plans"][:2] == plans[:2]
    resumed = run_train(tmp_path, "killed", *budgeted)
    assert "resumed from" in resumed.stderr
    killed = load_ckpt(tmp_path / "killed" / "last.pt")
    assert killed["budget"]["plans"] == plans  # the recorded plans, then the same re-plans after the checkpoint
    assert_same_tensors(straight["model"], killed["model"], "model")
    assert_same_tensors(straight["optimizer"], killed["optimizer"], "optimizer")
    rows = {name: [r for r in read_metrics(tmp_path / name / "metrics.jsonl") if "plan/total_steps" in r]
            for name in ("straight", "killed")}
    assert [r["plan/at_step"] for r in rows["killed"]] == [p["at_step"] for p in plans]
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows["killed"]] == \
        [{k: v for k, v in r.items() if k != "time"} for r in rows["straight"]]
    lrs = [r["train/lr"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/lr" in r]
    steps = [r["step"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/lr" in r]
    at = steps.index(plans[1]["at_step"])
    assert abs(lrs[at + 1] - lrs[at]) < 0.2 * max(lrs)  # no jump at the re-plan
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["plan/count"] == len(plans) and summary["plan/total_steps"] == plans[-1]["total_steps"]
    log = (tmp_path / "straight" / "train.log").read_text()
    assert all(f"first training step at {s}x{s} px" in log for s in (8, 12, 16))


@pytest.mark.slow
def test_a_real_budget_too_short_to_train_refuses_in_one_line_after_measuring_steps_only(tmp_path):
    proc = run_train(tmp_path, "short", "train.time_budget=2s", check=False)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if "leaves no time to train" in line]
    assert len(error_lines) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "short").exists()  # a failed start leaves no run directory


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_the_competing_load_dies_with_the_benchmark(how):
    holder = subprocess.Popen([sys.executable, "-c", LOAD_HOLDER], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in holder.stdout.readline().split()]
    try:
        assert len(pids) == 2 and all(alive(p) for p in pids)
        holder.send_signal(how)  # SIGINT: Ctrl-C (the with block stops them); SIGKILL: the parent-death signal
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
    finally:
        holder.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_budget_benchmark_runs_a_budgeted_run_under_load_and_reports_it(tmp_path, capsys):
    out = tmp_path / "bench"
    before = busy_loops()  # another job's (a killed earlier session's) are not this benchmark's
    # The run plans on a simulated clock (its plan does not depend on how busy the test machine is); the load and
    # the report are real.
    code = bench_main(["budget", *TINY, "train.debug_budget_clock=[0.5,1,0.1,0]", "--budget", "20s", "--load", "1",
                       "--load-at", "3", f"--out={out}"])
    assert code == 0
    row = json.loads((out / "results.json").read_text())["results"][0]
    assert row["exit"] == 0 and row["load"] == 1 and row["load_at_s"] == 3.0
    assert row["ratio"] == round(row["wall_s"] / 20.0, 4) and row["plans"][0]["at_step"] == 0
    assert row["used_s"] > 0 and row["predicted_s"] > 0 and row["steps"] == row["plans"][-1]["total_steps"]
    table = capsys.readouterr().out
    assert "wall/budget" in table and "1 at 3s" in table
    assert busy_loops() <= before  # the load it started is gone


def busy_loops() -> set[int]:
    """Pids of the competing-load processes (pipeline/bench/budget.py's CompetingLoad) running now."""
    rows = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return {int(pid) for pid, _, args in (row.strip().partition(" ") for row in rows)
            if args.strip() == f"{sys.executable} -c while True: pass"}

