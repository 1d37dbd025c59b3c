"""A run's record stays true: config changes on resume, a bounded stop wherever the signal lands,
stop means stop under restarts, and one rank's error stops every rank with that error first."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from pipeline.runs.changes import CHANGES_FILE, config_changes, effective_config
from pipeline.runs.envinfo import git_revision
from pipeline.runs.metrics import read_metrics
from runs import TINY, assert_same_tensors, load_ckpt, run_train
from test_reliability import start_train, wait_for_file
from wandb_log import offline_run


# ------------------------------------------------------------------------- config changes on resume


def test_changes_are_classified_free_or_experiment():
    saved = {"optim": {"lr": 0.1}, "logging": {"log_every": 50}, "data": {"num_threads": 2, "train": {"crop": 122}},
             "checkpoint": {"accept_changes": []}}
    current = {"optim": {"lr": 0.5}, "logging": {"log_every": 10}, "data": {"num_threads": 4, "train": {"crop": 96}},
               "checkpoint": {"accept_changes": ["optim.lr"]}}
    kinds = {c.key: c.kind for c in config_changes(saved, current)}
    assert kinds == {"optim.lr": "experiment", "logging.log_every": "free", "data.num_threads": "free",
                     "data.train.crop": "experiment"}  # the acceptance itself is not a change


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


# ---------------------------------------------------------- checkpoints are never silently replaced


def run_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the session's own log and lock: checkpoints, records, W&B's files."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("train.log", ".lock") and "superseded-" not in str(p.relative_to(folder))}


@pytest.mark.slow
def test_a_run_none_of_whose_checkpoints_loads_is_refused_unchanged_and_restarts_only_when_asked(tmp_path):
    run_dir, args = tmp_path / "r1", ("train.epochs=1", "wandb.mode=offline")
    run_train(tmp_path, "r1", *args)
    offline_run(run_dir)  # W&B's writer has finished: its files are what a later session must not change

    (run_dir / "last.pt").write_bytes(b"")  # emptied; best.pt (the same epoch) is then the one to resume
    proc = run_train(tmp_path, "r1", *args)
    assert f"resumed from {run_dir / 'best.pt'} (end of epoch 1): every epoch is done" in proc.stderr
    offline_run(run_dir)

    old = load_ckpt(run_dir / "best.pt")  # as written by a later version of this code, after a downgrade
    torch.save({**old, "format_version": 4, "code_revision": "0123456789ab"}, run_dir / "best.pt")
    before = run_files(run_dir)
    proc = run_train(tmp_path, "r1", *args, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: run r1 ({run_dir}) holds checkpoints and none of them loads: last.pt: empty "
                            f"file (0 bytes); best.pt: written in checkpoint format 4 by git 0123456789ab; this code "
                            f"(git {git_revision()}) reads format 3. Nothing in the run was changed."), error
    assert "or finish it with the code that wrote it" in error and "another logging.run_name" in error
    assert error.endswith("its files moved into r1/superseded-<time>/ (nothing is deleted): "
                          "checkpoint.on_unreadable=restart")
    assert "Traceback" not in proc.stderr and "resumed" not in proc.stderr
    assert run_files(run_dir) == before  # config.yaml, metrics.jsonl, checkpoints, W&B: as they were
    assert error in (run_dir / "train.log").read_text()

    proc = run_train(tmp_path, "r1", *args, "checkpoint.on_unreadable=restart")
    (aside,) = run_dir.glob("superseded-*")
    assert run_files(aside) == before  # every earlier file, whole, moved aside
    assert f"moved into {aside}; nothing was deleted" in proc.stderr
    assert load_ckpt(run_dir / "last.pt")["counters"]["epoch"] == 1  # trained again from the start
    assert (run_dir / "wandb-run-id").read_text() != (aside / "wandb-run-id").read_text()  # a new W&B run
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [
        r["step"] for r in read_metrics(aside / "metrics.jsonl")]


# ------------------------------------------------------------------------------- a bounded stop

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


def test_a_signal_during_start_up_ends_it_at_once_and_one_during_a_checkpoint_write_waits_for_it(tmp_path):
    import os

    import torch

    from pipeline.errors import Interrupted
    from pipeline.training.checkpoint import atomic_save
    from pipeline.training.preemption import StopRequest

    stop_request = StopRequest().install(at_once=True)
    try:
        with pytest.raises(Interrupted, match="SIGTERM received during start-up"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here, at the next bytecode
        stop_request = StopRequest().install()  # the loop's mode: a signal waits for the write

        # A real write of 200 MB in 400 tensors, and a SIGTERM from another thread while it runs.
        payload = {"format_version": 3, "weights": [torch.full((125_000,), float(i)) for i in range(400)]}
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        atomic_save(payload, tmp_path / "last.pt")
        assert stop_request.requested, f"the signal came after the write ({time.monotonic() - started:.2f} s)"
        saved = torch.load(tmp_path / "last.pt", weights_only=True)["weights"]  # not a whole checkpoint: the file
        assert len(saved) == 400 and saved[-1][0] == 399  # complete
    finally:
        stop_request.uninstall()


# ------------------------------------------------------------------------------ stop means stop


@pytest.mark.slow
def test_a_sigterm_to_the_agent_or_a_worker_stops_the_job_whatever_max_restarts(tmp_path):
    import subprocess

    from runs import REPO
    from test_launch import launch_env
    from test_reliability import descendants

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


# ---------------------------------------------------------------------------- one rank's error


@pytest.mark.slow
def test_a_bad_image_met_by_one_rank_stops_both_with_that_error_first_and_exit_2(tmp_path):
    import subprocess

    import numpy as np

    from conftest import write_imagefolder
    from pipeline.config import load_config
    from pipeline.data import load_image_sets
    from pipeline.data.sampler import ShardedBatches
    from runs import REPO
    from test_launch import launch_env

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
