"""Helpers to run the real entry point (python or torchrun) on tiny settings and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.constants import REPO_ROOT as REPO  # noqa: E402

# The quickstart pipeline at 16 px, a few steps per epoch: seconds per run on two CPU cores.
TINY = [
    "data.source=sample",
    "data.train.min_side=18", "data.train.max_side=20", "data.train.crop=16",
    "data.eval.size=16", "data.eval.crop=16",
    "data.num_threads=1",
    "train.global_batch_size=32",
    "train.max_steps_per_epoch=6",
    "train.epochs=2",
    "eval.batch_size=250",
    "schedule.milestones=[]",
    "logging.log_every=3",
    "logging.perf_warmup_steps=1",
    "logging.progress=lines",
    "wandb.mode=disabled",
]


def train_command(nproc: int = 1, max_restarts: int = 0) -> list[str]:
    if nproc == 1 and max_restarts == 0:
        return [sys.executable, str(REPO / "train_dist.py")]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", str(REPO / "train_dist.py")]


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    env.update(extra or {})
    return env


def run_train(runs_dir: Path, name: str, *overrides: str, nproc: int = 1, check: bool = True,
              timeout: int = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [*TINY, f"logging.runs_dir={runs_dir}", f"logging.run_name={name}", *overrides]
    proc = subprocess.run(train_command(nproc) + args, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=run_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(f"training exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-6000:]}")
    return proc


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, what: str = "") -> None:
    """Bit-for-bit equality of two nested state dicts."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{what} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{what}: keys differ"
        for key in a:
            assert_same_tensors(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def launch_env(**extra: str) -> dict[str, str]:
    """The environment for ./launch.sh, with the virtualenv that runs the tests (already set up)."""
    venv = Path(sys.prefix)
    assert (venv / ".installed-from").is_file(), (
        f"{venv} was not made by scripts/setup_env.sh; run the tests with scripts/test.sh")
    return run_env({"VENV": str(venv), **extra})
