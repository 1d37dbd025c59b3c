"""Fault tolerance with real processes and signals: kill/resume, preemption, elastic restarts,
corrupt checkpoints, non-finite loss, start-up checks, secrets."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.distributed import DistInfo
from pipeline.runs.envinfo import git_revision
from pipeline.training import checkpoint as ckpt_io
from pipeline.runs.metrics import read_metrics
from runs import REPO, TINY, assert_same_tensors, load_ckpt, run_env, run_train, train_command

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


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{text!r} did not appear in {path} (exit {proc.returncode})")
        time.sleep(0.005)


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


# ---------------------------------------------------------------------- exact mid-epoch resume


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


# ------------------------------------------------------------------------------- preemption


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


def test_a_repeated_sigterm_is_the_same_stop_request():
    """Under SLURM + torchrun one stop arrives twice (scancel, then the agent): it must not skip the checkpoint."""
    from pipeline.training.preemption import StopRequest

    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # would have been os._exit(143) before
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGTERM
    finally:
        stop.uninstall()


# ------------------------------------------------------------------------- elastic restarts


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


# ---------------------------------------------------------------------- checkpoint integrity


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    # No best.pt: it would hold the truncated last.pt's epoch whole, and be resumed (test_integrity.py).
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


def complete_checkpoint(**changes) -> dict:
    """The smallest dict that loads as a checkpoint: every key CheckpointManager writes."""
    return {"format_version": ckpt_io.FORMAT_VERSION, "model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {},
            "counters": {"epoch": 1, "step_in_epoch": 0, "global_step": 6}, "config": {}, "world_size": 1,
            "rank_states": [{}], **changes}


def test_atomic_save_and_load_errors(tmp_path):
    path = tmp_path / "x.pt"
    ckpt_io.atomic_save(complete_checkpoint(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left behind
    assert ckpt_io.load(path)["model"]["w"].sum() == 3

    def refused(reason: str) -> None:
        with pytest.raises(ckpt_io.CheckpointError) as info:
            ckpt_io.load(path)
        assert str(info.value) == f"{path}: {reason}"

    path.write_bytes(b"")
    refused("empty file (0 bytes)")
    path.write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match=rf"^{path}: unreadable or corrupt checkpoint \(.+\)$"):
        ckpt_io.load(path)
    torch.save({"not": "ours"}, path)
    refused("not a checkpoint of this project (no format_version)")
    torch.save({"format_version": 2, "counters": {}}, path)  # before checkpoints recorded the code that wrote them
    refused(f"written in checkpoint format 2 by an earlier version of this code; this code (git "
            f"{git_revision()}) reads format 3")
    torch.save(complete_checkpoint(format_version=4, code_revision="0123456789ab"), path)
    refused(f"written in checkpoint format 4 by git 0123456789ab; this code (git {git_revision()}) reads format 3")
    torch.save({k: v for k, v in complete_checkpoint().items() if k != "config"}, path)  # was KeyError: 'config'
    refused("an incomplete checkpoint (no config)")
    torch.save(complete_checkpoint(counters={"epoch": 1}), path)
    refused("an incomplete checkpoint (no counters.step_in_epoch, counters.global_step)")


def test_where_a_run_resumes_and_when_it_starts_over_with_its_files_aside(tmp_path):
    """find_resume in one process: the checkpoint that got furthest (best.pt when last.pt is emptied); none
    loading is refused with every file kept; on_unreadable=restart and resume=never move the files aside."""
    config = load_config(None, []).to_dict()

    def resume_point(*overrides: str):
        cfg = load_config(None, list(overrides))
        cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        return ckpt_io.CheckpointManager(cfg.checkpoint, tmp_path, cpu, cfg.to_dict(), cfg.train.epochs).find_resume()

    def at(step: int) -> dict:
        return complete_checkpoint(config=config, counters={"epoch": step // 6, "step_in_epoch": step % 6,
                                                            "global_step": step})

    for name, step in (("last.pt", 6), ("best.pt", 6), ("step-00000004.pt", 4)):
        torch.save(at(step), tmp_path / name)
    assert resume_point().path.name == "last.pt"  # equal progress: last.pt before best.pt
    (tmp_path / "last.pt").write_bytes(b"")
    assert resume_point().path.name == "best.pt"
    (tmp_path / "best.pt").write_bytes(b"garbage")
    assert resume_point().path.name == "step-00000004.pt"
    (tmp_path / "step-00000004.pt").write_bytes(b"")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ckpt_io.CheckpointError, match="holds checkpoints and none of them loads: last.pt: empty"):
        resume_point()
    with pytest.raises(ckpt_io.CheckpointError):  # evaluating needs a checkpoint: restart does not apply
        resume_point("checkpoint.on_unreadable=restart", "eval.only=true")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    assert resume_point("checkpoint.on_unreadable=restart") is None
    (aside,) = tmp_path.glob("superseded-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before and list(tmp_path.iterdir()) == [aside]

    torch.save(at(6), tmp_path / "last.pt")  # a good checkpoint: resume=never starts over all the same
    assert resume_point("checkpoint.resume=never") is None
    assert len(list(tmp_path.glob("superseded-*"))) == 2 and not (tmp_path / "last.pt").exists()


def test_a_checkpoint_missing_keys_is_one_line_naming_the_file_and_exit_2(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in complete_checkpoint().items() if k != "config"}, path)
    proc = run_train(tmp_path, "partial", f"checkpoint.resume={path}", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {path}: an incomplete checkpoint (no config)"
    assert "Traceback" not in proc.stderr and not (tmp_path / "partial").exists()


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format_version": ckpt_io.FORMAT_VERSION, "x": Payload()}, path)
    with pytest.raises(ckpt_io.CheckpointError, match="unreadable or corrupt"):
        ckpt_io.load(path)


# ---------------------------------------------------------------------------- a full disk


def limit_file_size(nbytes: int):
    """For a child process: files it writes stop at `nbytes` (EFBIG, "File too large"), as a quota would."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return limit


def assert_fix_the_environment(proc: subprocess.CompletedProcess, run_dir: Path, reason: str) -> None:
    """Exit 74, the one line naming last.pt in the console and train.log, no traceback, the fix before the command."""
    line = f"error: cannot write {run_dir / 'last.pt'}: {reason}"
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert line in proc.stderr.splitlines() and "Traceback" not in proc.stderr
    assert line in (run_dir / "train.log").read_text()
    hint = proc.stderr.strip().splitlines()[-1]
    assert hint.startswith(f"run {run_dir.name} stopped at step ") and "a file could not be written" in hint
    assert f"Free space on {run_dir.parent}" in hint and hint.endswith(f"logging.run_name={run_dir.name}")
    assert json.loads((run_dir / "summary.json").read_text())["end/reason"] == "io_error"
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]


def test_a_checkpoint_that_meets_a_file_size_limit_ends_with_one_line_and_exit_74(tmp_path):
    """Runs everywhere: RLIMIT_FSIZE makes the checkpoint write fail as a full disk does (EFBIG)."""
    proc = subprocess.run(train_command() + [*TINY, f"logging.runs_dir={tmp_path}", "logging.run_name=limited",
                                             "train.epochs=1"],
                          cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=240,
                          preexec_fn=limit_file_size(4 << 20))  # a checkpoint is about 6 MB
    assert_fix_the_environment(proc, tmp_path / "limited", "File too large")
    assert not (tmp_path / "limited" / "last.pt").exists()


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs: a real ENOSPC. Needs root (or CAP_SYS_ADMIN); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or made.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one_and_says_free_space(small_disk):
    run_dir = small_disk / "full"
    # Epoch 1's last.pt (about 6 MB) fits; epoch 2's temporary file beside it does not.
    proc = run_train(small_disk, "full", "checkpoint.save_best=false", check=False)
    assert_fix_the_environment(proc, run_dir, "No space left on device")
    kept = load_ckpt(run_dir / "last.pt")
    assert kept["counters"]["epoch"] == 1  # the previous checkpoint, whole


# ------------------------------------------------------------------------------ non-finite


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_good_checkpoints(tmp_path):
    proc = run_train(tmp_path, "nan", "train.epochs=3", "train.debug_nan_step=8", "train.nonfinite_limit=3",
                     check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "the loss was NaN/inf for" in proc.stderr and "consecutive steps" in proc.stderr
    # What to do, truthfully: a resumed run keeps the checkpoint's learning rate.
    assert "a new optim.lr does not apply to a resumed run" in proc.stderr
    assert "a lower learning rate needs a new run (e.g. optim.lr=0.05)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run nan stopped on a non-finite loss; to continue it from its latest checkpoint: ")
    assert last.endswith(" train.nonfinite_limit=3 logging.run_name=nan")
    last = load_ckpt(tmp_path / "nan" / "last.pt")
    assert last["counters"]["epoch"] == 1  # epoch 2 never finished, and its NaN weights were not saved
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


# ------------------------------------------------------------------------ start-up checks


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.source=imagefolder", "data.root=/nonexistent/data"], "data.root: /nonexistent/data does not exist"),
        (["model.name=squeezenet1_0", "data.train.min_side=40", "data.train.max_side=44", "data.train.crop=40",
          "data.eval.size=8", "data.eval.crop=8"],
         "data.eval.crop: the network cannot take 8x8 inputs"),
        (["model.num_classes=100"], "model.num_classes: 100, but the data has 10 classes; set model.num_classes=10, "
                                    "or model.num_classes=auto"),
        (["logging.run_name=../escape"], "logging.run_name: '../escape' must be a plain directory name"),
        (["logging.run_name=/tmp/abs"], "logging.run_name: '/tmp/abs' must be a plain directory name"),
    ],
    ids=["missing-root", "eval-too-small", "classes", "dotdot", "absolute"],
)
def test_startup_checks_fail_before_training(tmp_path, overrides, message):
    proc = run_train(tmp_path, "startup", *overrides, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "epoch 1/" not in proc.stderr  # nothing trained
    assert list(tmp_path.iterdir()) == []  # and no run directory left behind, whichever check stopped it


@pytest.mark.slow
def test_apex_on_a_machine_without_cuda_is_a_config_error(tmp_path):
    """NVIDIA apex installed but no GPU: one line naming optim.impl and exit 2, not FusedSGD's traceback."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    # A stand-in for an installed apex: its FusedSGD refuses to build without the CUDA extensions,
    # as apex/optimizers/fused_sgd.py does on a CPU-only machine.
    stub = tmp_path / "site" / "apex" / "optimizers"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text("class FusedSGD:\n    def __init__(self, *args, **kwargs):\n"
                                      "        raise RuntimeError('apex.optimizers.FusedSGD requires cuda extensions')\n")
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    proc = run_train(tmp_path, "apex", "optim.impl=apex", "train.epochs=1", check=False, timeout=60,
                     env={"PYTHONPATH": path})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: optim.impl: apex (NVIDIA apex FusedSGD) runs only on CUDA GPUs")


@pytest.mark.slow
def test_unwritable_run_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the runs directory should be")
    proc = run_train(blocker, "x", check=False, timeout=60)
    assert proc.returncode == 2 and f"run directory {blocker / 'x'}: not writable" in proc.stderr


def test_opening_the_run_directory_leaves_only_its_lock(tmp_path):
    from pipeline.config import load_config
    from pipeline.runs.rundir import LOCK_FILE, open_run_dir

    cfg = load_config(None, [f"logging.runs_dir={tmp_path}", "logging.run_name=x"])
    run = open_run_dir(cfg, is_main=True)  # one process: the shared-directory check passes trivially
    assert run.path == (tmp_path / "x").resolve() and run.created
    # No check file left behind, and no config.yaml yet: the trainer writes it once start-up succeeded.
    assert [p.name for p in run.path.iterdir()] == [LOCK_FILE]


@pytest.mark.slow
def test_corrupt_image_in_a_folder_names_the_file(tmp_path):
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 40, "b": 40}, "val": {"a": 4, "b": 4}})
    bad = tree / "train" / "b" / "017.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    proc = run_train(tmp_path, "badimg", "data.source=imagefolder", f"data.root={tree}", "model.num_classes=2",
                     "train.epochs=1", "train.max_steps_per_epoch=0", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{bad}: cannot decode" in proc.stderr
    # Small same-size images are decoded once at start-up (data.cache=auto), so the bad file is found
    # before the run directory opens: nothing is left behind, and the same command runs once it is fixed.
    assert not (tmp_path / "badimg").exists()


@pytest.mark.slow
def test_a_bad_image_met_mid_run_is_bad_input_named_and_its_fix_given(tmp_path):
    """data.cache=off: nothing decodes the files before DALI, so a bad one is met mid-run (here at step 5
    of 6 in the first epoch, an order fixed by the seed). Exit 2, the file named in the user's terms,
    end/reason bad_input, the checkpoints kept, and a last line whose advice is the fix (remove the file,
    or data.check_images=skip), not a crash report."""
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 100, "b": 100}, "val": {"a": 4, "b": 4}})
    bad = tree / "train" / "b" / "x.jpg"  # a JPEG start marker, then random bytes (the file)
    bad.write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())
    proc = run_train(tmp_path, "midrun", "data.source=imagefolder", f"data.root={tree}", "model.num_classes=2",
                     "data.cache=off", "checkpoint.every_steps=2", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: 1 undecodable image(s): {bad}: cannot decode (corrupt JPEG header)" in proc.stderr
    assert " at 0x" not in proc.stderr and "crashed" not in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "midrun" / "summary.json").read_text())
    assert summary["end/reason"] == "bad_input" and summary["end/exit_code"] == 2
    step = summary["end/global_step"]
    assert step >= 2 and (tmp_path / "midrun" / ckpt_io.step_path(Path(), step - step % 2).name).is_file()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run midrun stopped at step {step} on bad input (named above). Remove or replace "
                           "the file, then continue it from its latest checkpoint: "), last
    assert last.endswith(" data.check_images=skip logging.run_name=midrun"), last


# -------------------------------------------------------------------------------- secrets


@pytest.mark.slow
def test_wandb_api_key_is_never_written(tmp_path):
    secret = "0123456789abcdef-not-a-real-key-fedcba9876543210"
    proc = subprocess.run(train_command() + [*TINY, f"logging.runs_dir={tmp_path}", "logging.run_name=sec",
                                             "wandb.mode=offline", "train.epochs=1"],
                          cwd=REPO, env=run_env({"WANDB_API_KEY": secret}), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "sec").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "last.pt" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_exit_now_keeps_the_code_the_exit_handlers_and_buffered_output(tmp_path):
    """The entry points' fast exit skips module teardown, not what an exit must still do."""
    marker = tmp_path / "handler-ran"
    script = f"""
import atexit, logging, sys
from pipeline.entry import exit_now
atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))
logging.basicConfig(stream=sys.stderr)
logging.getLogger("x").warning("logged line")
sys.stdout.write("buffered line without a newline")  # a pipe: block-buffered
exit_now(3)
"""
    env = {k: v for k, v in run_env().items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "buffered line without a newline"
    assert "logged line" in proc.stderr
    assert marker.read_text() == "yes"
