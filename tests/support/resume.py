"""Real runs to interrupt and resume: start one, wait for its files, kill it and every process under it, and
the uninterrupted run to compare with (tests/e2e/test_resume.py, test_stops.py, test_budget.py, test_tracking.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pipeline.training import checkpoint as ckpt_io
from runs import REPO, TINY, load_ckpt, run_env, run_train, train_command

# Long enough to interrupt: 3 epochs x 12 steps, a step checkpoint every 4 steps.
RESUMABLE = ("train.epochs=3", "train.max_steps_per_epoch=12", "checkpoint.every_steps=4",
             "checkpoint.keep_last=3", "train.deterministic=true", "eval.every=0")


TOTAL_STEPS = 36


def start_train(runs_dir: Path, name: str, *overrides: str, nproc: int = 1, max_restarts: int = 0) -> subprocess.Popen:
    args = [*TINY, f"logging.runs_dir={runs_dir}", f"logging.run_name={name}", *overrides]
    return subprocess.Popen(train_command(nproc, max_restarts) + args, cwd=REPO, env=run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended (exit {proc.returncode}) before {path.name} appeared\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def final_state(run_dir: Path) -> dict:
    ckpt = load_ckpt(run_dir / "last.pt")
    assert ckpt["counters"]["global_step"] == TOTAL_STEPS
    return ckpt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Reference runs of the RESUMABLE config, single-process and two processes."""
    runs = tmp_path_factory.mktemp("reference")
    run_train(runs, "one", *RESUMABLE)
    run_train(runs, "two", *RESUMABLE, nproc=2)
    return {1: final_state(runs / "one"), 2: final_state(runs / "two")}


def complete_checkpoint(**changes) -> dict:
    """The smallest dict that loads as a checkpoint: every key CheckpointManager writes."""
    return {"format_version": ckpt_io.FORMAT_VERSION, "model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {},
            "counters": {"epoch": 1, "step_in_epoch": 0, "global_step": 6}, "config": {}, "world_size": 1,
            "rank_states": [{}], **changes}


def descendants(pid: int) -> list[int]:
    children = [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return children + [d for c in children for d in descendants(c)]


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun puts workers in their own sessions)."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
