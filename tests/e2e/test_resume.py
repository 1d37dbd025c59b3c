"""Resuming real runs: SIGKILL then resume is bit-identical, the last k step checkpoints, a corrupt latest checkpoint,
another model's checkpoint, a checkpoint missing keys, runs none of whose checkpoints load.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from support.resume import (
    RESUMABLE,
    TOTAL_STEPS,
    complete_checkpoint,
    final_state,
    kill_job,
    start_train,
    wait_for_file,
)
from wandb_log import offline_run

from pipeline.runs.envinfo import git_revision
from pipeline.runs.metrics import read_metrics
from pipeline.training import checkpoint as ckpt_io
from runs import assert_same_tensors, load_ckpt, run_train


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


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, nproc):
    proc = start_train(tmp_path, "killed", *RESUMABLE, nproc=nproc)
    wait_for_file(tmp_path / "killed" / ckpt_io.step_path(Path(), 16).name, proc)  # mid-epoch 2
    kill_job(proc)  # the whole job at once, no chance to clean up
    assert proc.returncode == -signal.SIGKILL
    resumed = run_train(tmp_path, "killed", *RESUMABLE, nproc=nproc)
    resumed_line = next(line for line in resumed.stderr.splitlines() if "resumed from" in line)
    # In the user's terms: step-00000016.pt (or a later one written before the kill) is 4 of epoch 2's 12 steps.
    where = re.search(r"/step-(\d{8})\.pt: epoch 2 continues after its step (\d+) of 12 \(global step (\d+)\)$",
                      resumed_line)
    assert where and int(where[1]) == int(where[3]) == 12 + int(where[2]) >= 16, resumed_line
    state = final_state(tmp_path / "killed")
    reference = uninterrupted[nproc]
    assert_same_tensors(reference["model"], state["model"], "model")
    assert_same_tensors(reference["optimizer"], state["optimizer"], "optimizer")
    steps = [r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.jsonl") if "train/loss" in r]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats steps after the resume"


@pytest.mark.slow
def test_step_checkpoints_keep_the_last_k(tmp_path):
    run_train(tmp_path, "keep", *RESUMABLE)
    names = sorted(p.name for p in (tmp_path / "keep").glob("step-*.pt"))
    # every 4 steps except epoch ends (36 steps: 4, 8, 16, 20, 28, 32), the newest 3 kept
    assert names == ["step-00000020.pt", "step-00000028.pt", "step-00000032.pt"]


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    # No best.pt: it would hold the truncated last.pt's epoch whole, and be resumed (the run none of whose checkpoints loads, below).
    run_train(tmp_path, "corrupt", *RESUMABLE, "train.epochs=2", "train.deterministic=false", "checkpoint.save_best=false")
    run_dir = tmp_path / "corrupt"
    last = run_dir / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # truncated, as by a full disk
    proc = run_train(tmp_path, "corrupt", *RESUMABLE, "train.deterministic=false",
                     "checkpoint.accept_changes=[train.epochs]")  # 2 -> 3 epochs
    assert f"{last}: unreadable or corrupt checkpoint" in proc.stderr
    assert "resumed from" in proc.stderr and "step-00000020.pt" in proc.stderr
    assert load_ckpt(last)["counters"]["global_step"] == TOTAL_STEPS


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused_with_the_differences(tmp_path):
    run_train(tmp_path, "m1", "train.epochs=1")
    other = ("model.name=squeezenet1_1", "data.eval.crop=16", "train.epochs=1")
    proc = run_train(tmp_path, "m2", *other, f"checkpoint.resume={tmp_path / 'm1' / 'last.pt'}", check=False)
    assert proc.returncode == 2
    assert "refusing to resume from a checkpoint of a different setup" in proc.stderr
    assert "model.name: 'squeezenet_bypass' in the checkpoint, 'squeezenet1_1' now" in proc.stderr
    assert not (tmp_path / "m2").exists()  # the directory this failed start made is gone
    # The same refusal in the run's own directory keeps every file, config.yaml as it was.
    def files() -> dict[str, bytes]:  # the session's own log and lock aside
        return {p.name: p.read_bytes() for p in (tmp_path / "m1").iterdir() if p.name not in ("train.log", ".lock")}
    before = files()
    proc = run_train(tmp_path, "m1", *other, check=False)
    assert proc.returncode == 2 and "refusing to resume" in proc.stderr
    assert files() == before and "config.yaml" in before


def test_a_checkpoint_missing_keys_is_one_line_naming_the_file_and_exit_2(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in complete_checkpoint().items() if k != "config"}, path)
    proc = run_train(tmp_path, "partial", f"checkpoint.resume={path}", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {path}: an incomplete checkpoint (no config)"
    assert "Traceback" not in proc.stderr and not (tmp_path / "partial").exists()


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_finishes(tmp_path, uninterrupted):
    proc = start_train(tmp_path, "elastic", *RESUMABLE, nproc=2, max_restarts=1)
    wait_for_file(tmp_path / "elastic" / "step-00000008.pt", proc)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-4000:]
    assert "resumed from" in err
    state = final_state(tmp_path / "elastic")
    assert_same_tensors(uninterrupted[2]["model"], state["model"], "model")
