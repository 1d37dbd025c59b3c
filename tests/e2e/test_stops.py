"""Stopping real runs: SIGTERM checkpoints and exits 75, a second signal, a stop in an evaluation or at start-up,
torchrun restarting a killed worker, a run continued on another number of processes.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.resume import RESUMABLE, final_state, start_train, wait_for_file
from wandb_log import offline_run

from pipeline.config import load_config
from pipeline.runs.changes import CHANGES_FILE, effective_config
from pipeline.runs.metrics import read_metrics
from pipeline.training import checkpoint as ckpt_io
from runs import REPO, TINY, assert_same_tensors, load_ckpt, run_env, run_train

# Two epochs of 6 steps, evaluated after each in 100 batches of 10 (long enough to land a signal in).
EVALUATED = ("train.epochs=2", "train.deterministic=true", "eval.batch_size=10", "wandb.mode=offline")


def wait_for_log(run_dir: Path, text: str, proc, after: int = 0, timeout: float = 120) -> None:
    """Until `text` appears in train.log past byte `after` (an earlier session's lines come before it)."""
    log = run_dir / "train.log"
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text()[after:]):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{text!r} did not appear in {log} (exit {proc.returncode})\n{err[-3000:]}")
        time.sleep(0.005)


def stop(proc, within: float = 60) -> tuple[float, str]:
    """SIGTERM; (seconds to exit, stderr)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=within)
    return time.monotonic() - t0, err


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{text!r} did not appear in {path} (exit {proc.returncode})")
        time.sleep(0.005)


@pytest.mark.slow
def test_a_continued_run_with_changed_keys_stops_until_accepted_and_keeps_both_records(tmp_path):
    run_dir = tmp_path / "r1"
    run_train(tmp_path, "r1", "train.epochs=1", "wandb.mode=offline")
    original = (run_dir / "config.yaml").read_bytes()
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    changed = ("optim.lr=0.5", "train.epochs=2", "logging.log_every=2")
    proc = run_train(tmp_path, "r1", *changed, "wandb.mode=offline", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: run r1 was trained with other values: optim.lr: 0.1 -> 0.5; train.epochs: 1 -> 2.")
    assert "logging.log_every" not in error  # it changes nothing trained: not a reason to stop
    assert "./launch.sh --new" in error and "checkpoint.accept_changes=[optim.lr,train.epochs]" in error
    assert "multistep milestones stay" in error  # what extending train.epochs does to the schedule
    assert (run_dir / "config.yaml").read_bytes() == original and not (run_dir / CHANGES_FILE).exists()
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # nothing trained

    proc = run_train(tmp_path, "r1", *changed, "wandb.mode=offline", "checkpoint.accept_changes=[optim.lr,train.epochs]")
    assert "learning rate at this step 0.1 under the checkpoint's settings, 0.5 under this run's" in proc.stderr
    assert (run_dir / "config.yaml").read_bytes() == original  # the record of epoch 1 stays
    lines = [json.loads(line) for line in (run_dir / CHANGES_FILE).read_text().splitlines()]
    assert [(r["step"], r["key"], r["old"], r["new"], r["kind"]) for r in lines] == [
        (6, "logging.log_every", 3, 2, "free"), (6, "optim.lr", 0.1, 0.5, "experiment"),
        (6, "train.epochs", 1, 2, "experiment")]
    assert effective_config(run_dir)["optim"]["lr"] == 0.5
    assert load_ckpt(run_dir / "last.pt")["optimizer"]["param_groups"][0]["lr"] == 0.5  # trained with it
    lrs = {r["step"]: r["train/lr"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/lr" in r}
    assert lrs[6] == 0.1 and lrs[12] == 0.5
    wb = offline_run(run_dir)
    assert wb["config"]["optim"]["lr"] == 0.1  # W&B's config is the original too ...
    assert [c["key"] for c in wb["config"]["config_changes"]] == ["logging.log_every", "optim.lr", "train.epochs"]


@pytest.mark.slow
def test_a_stop_during_evaluation_or_start_up_is_prompt_and_the_resumed_run_is_exact(tmp_path):
    run_train(tmp_path, "straight", *EVALUATED)
    run_dir = tmp_path / "stopped"

    # 1. A SIGTERM during epoch 1's evaluation: the evaluation stops, the checkpoint marks it pending.
    proc = start_train(tmp_path, "stopped", *EVALUATED)
    wait_for_log(run_dir, "epoch 1/2: evaluating", proc)
    seconds, err = stop(proc)
    assert proc.returncode == 75, err[-3000:]
    assert "preempted at step 6" in err
    pending = load_ckpt(run_dir / "step-00000006.pt")["counters"]
    assert pending["eval_pending"] and pending["epoch"] == 1 and not pending["final"]
    assert not [r for r in read_metrics(run_dir / "metrics.jsonl") if "val/top1" in r]

    # 2. A SIGTERM while the next session starts up: it stops there; nothing new is written.
    size = (run_dir / "train.log").stat().st_size
    proc = start_train(tmp_path, "stopped", *EVALUATED)
    wait_for_log(run_dir, "run directory:", proc, after=size)
    seconds, err = stop(proc)
    assert proc.returncode == 75, err[-3000:]
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["step-00000006.pt"]

    # 3. The next session redoes the evaluation and finishes exactly as the uninterrupted run.
    proc = run_train(tmp_path, "stopped", *EVALUATED)
    assert "resumed from" in proc.stderr and "epoch 1/2: evaluating" in proc.stderr
    straight, stopped = load_ckpt(tmp_path / "straight" / "last.pt"), load_ckpt(run_dir / "last.pt")
    assert_same_tensors(straight["model"], stopped["model"], "model")
    assert_same_tensors(straight["optimizer"], stopped["optimizer"], "optimizer")
    evaluations = {name: [(r["epoch"], r["val/top1"]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                          if "val/top1" in r] for name in ("straight", "stopped")}
    assert evaluations["stopped"] == evaluations["straight"] and len(evaluations["stopped"]) == 2  # each once
    history = [(row["epoch"], row["val/top1"]) for row in offline_run(run_dir)["history"] if "val/top1" in row]
    assert history == evaluations["stopped"]


@pytest.mark.slow
def test_a_sigterm_to_the_agent_or_a_worker_stops_the_job_whatever_max_restarts(tmp_path):
    import subprocess

    from support.resume import descendants

    from runs import REPO, launch_env

    runs = tmp_path / "runs"
    args = [*TINY, "train.deterministic=true", "train.epochs=2", "train.max_steps_per_epoch=8",
            "checkpoint.every_steps=2", f"logging.runs_dir={runs}", "logging.run_name=job"]
    env = launch_env(NPROC="2", MAX_RESTARTS="1")  # restarts are for crashes, not for stop requests
    for target, after_step in (("a worker", 2), ("the agent", 6)):
        console = tmp_path / f"{after_step}.txt"
        with open(console, "w") as out:
            job = subprocess.Popen(["./launch.sh", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_file(runs / "job" / f"step-{after_step:08d}.pt", job)
        workers = [pid for pid in descendants(job.pid) if "train_dist.py" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2, workers
        t0 = time.monotonic()
        os.kill(workers[-1] if target == "a worker" else job.pid, signal.SIGTERM)
        job.wait(timeout=120)
        out = console.read_text()
        assert job.returncode == 75, f"{target}: exit {job.returncode}\n{out[-4000:]}"
        assert out.count("run directory:") == 1, f"{target}: the workers were restarted\n{out[-4000:]}"
        assert "Traceback" not in out, out[-4000:]
        last = out.strip().splitlines()[-1]
        assert " was preempted at step " in last and last.endswith(shlex.join(["./launch.sh", *args])), last
        print(f"SIGTERM to {target}: exit 75 after {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
def test_a_bad_image_met_by_one_rank_stops_both_with_that_error_first_and_exit_2(tmp_path):
    import subprocess

    from conftest import write_imagefolder

    from pipeline.data import load_image_sets
    from pipeline.data.sampler import ShardedBatches
    from runs import REPO, launch_env

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 64, "b": 64}, "val": {"a": 4, "b": 4}})
    args = [*TINY, "data.source=imagefolder", f"data.root={tree}", "model.num_classes=2", "data.cache=off",
            "train.epochs=1", "checkpoint.every_steps=1", f"logging.runs_dir={tmp_path / 'runs'}", "logging.run_name=r"]
    # The file rank 1 reads at step 3 of epoch 0 (rank 0 never reads it in this epoch) becomes random bytes.
    train, _ = load_image_sets(load_config(None, args).data)
    plan = ShardedBatches(len(train), 16, rank=1, world_size=2, seed=0, shuffle=True, drop_last=True)
    bad = Path(train.files[int(plan.epoch_order(0)[slice(*plan.bounds(3))][0])])
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())

    t0 = time.monotonic()
    proc = subprocess.run(["./launch.sh", *args], cwd=REPO, env=launch_env(NPROC="2", MAX_RESTARTS="1"),
                          capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - t0
    out = proc.stderr
    assert proc.returncode == 2, out[-4000:]
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert errors and errors[0].startswith("error (rank 1): ") and str(bad) in errors[0], out[-4000:]
    assert "Traceback" not in out and "timed out" not in out.lower() and "Connection closed" not in out, out[-4000:]
    assert out.count("run directory:") == 1  # not restarted
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["end/reason"] == "bad_input" and summary["end/global_step"] >= 2
    assert "data.check_images=skip" in out.strip().splitlines()[-1]  # the fix, last
    print(f"both ranks stopped; the job ended {seconds:.1f} s after it started")


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_75_then_resumes(tmp_path):
    proc = start_train(tmp_path, "pre", *RESUMABLE)
    wait_for_file(tmp_path / "pre" / "step-00000008.pt", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err[-3000:]
    assert time.monotonic() - t0 < 10
    assert "SIGTERM received" in err and "preempted at step" in err
    stopped_at = int(err.split("preempted at step ")[1].split(":")[0])
    ckpt = load_ckpt(tmp_path / "pre" / ckpt_io.step_path(Path(), stopped_at).name)
    assert ckpt["counters"]["global_step"] == stopped_at
    # The last line is the command that continues the run: running it, word for word, finishes the run.
    last = err.strip().splitlines()[-1]
    prefix = f"run pre stopped at step {stopped_at} (checkpoint written); to continue it from its latest checkpoint: "
    assert last.startswith(prefix), err[-2000:]
    command = shlex.split(last[len(prefix):])
    assert command[1:] == [str(REPO / "train_dist.py"), *TINY, f"logging.runs_dir={tmp_path}", *RESUMABLE,
                           "logging.run_name=pre"]
    again = subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=run_env(), capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-3000:]
    final_state(tmp_path / "pre")


@pytest.mark.slow
def test_second_signal_exits_at_once(tmp_path):
    # Larger images, so a step (and the stop after it) takes long enough for a second Ctrl-C.
    proc = start_train(tmp_path, "twice", *RESUMABLE, "train.epochs=50", "data.train.min_side=100",
                       "data.train.max_side=100", "data.train.crop=96")
    wait_for_file(tmp_path / "twice" / "step-00000004.pt", proc)
    proc.send_signal(signal.SIGINT)
    # Two separate key presses: the second only once the first was handled (a signal that arrives
    # while Python is inside one long torch call would merge with the first).
    wait_for_text(tmp_path / "twice" / "train.log", "SIGINT received: stopping after the current step", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT
    assert "exiting now without a checkpoint" in err


@pytest.mark.slow
def test_a_sigterm_in_an_evaluation_says_it_stops_the_evaluation(tmp_path):
    """It said 'stopping after the current step' while an evaluation was running."""
    proc = start_train(tmp_path, "evaluating", *RESUMABLE, "eval.every=1", "eval.batch_size=2")  # 500 batches
    wait_for_text(tmp_path / "evaluating" / "train.log", "epoch 1/3: evaluating (500 batches per process)", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err[-3000:]
    assert ("SIGTERM received: stopping the evaluation after its current batch and writing a checkpoint (the "
            "evaluation is redone when the run continues)") in err
    assert "stopping after the current step" not in err
    pending = load_ckpt(tmp_path / "evaluating" / ckpt_io.step_path(Path(), 12).name)["counters"]  # epoch 1's end
    assert pending["eval_pending"] and pending["global_step"] == 12




@pytest.mark.slow
def test_a_run_continued_on_another_number_of_processes_says_so_and_records_it(tmp_path):
    """Two processes wrote the epoch-end checkpoint, one continues: a line in the log and `dist/world_size` in
    metrics.jsonl from the session's first step (a run that continued with 1 process said nothing of it)."""
    run_train(tmp_path, "shrunk", "train.epochs=1", nproc=2)
    resumed = run_train(tmp_path, "shrunk", "train.epochs=2", "checkpoint.accept_changes=[train.epochs]")
    assert ("continuing with 1 process(es); the checkpoint was written by 2: the global batch stays 32 (32 per "
            "process, was 16)") in resumed.stderr
    records = read_metrics(tmp_path / "shrunk" / "metrics.jsonl")
    (noted,) = [r for r in records if "dist/world_size" in r]
    assert noted["dist/world_size"] == 1 and noted["step"] == 7  # epoch 1 ended at step 6
    assert load_ckpt(tmp_path / "shrunk" / "last.pt")["world_size"] == 1

