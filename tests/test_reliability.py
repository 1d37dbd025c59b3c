"""Fault tolerance with real processes and signals: kill/resume, preemption, elastic restarts,
corrupt checkpoints, non-finite loss, start-up checks, secrets."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

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
    run_train(tmp_path, "corrupt", *RESUMABLE, "train.epochs=2", "train.deterministic=false")
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


def test_atomic_save_and_load_errors(tmp_path):
    path = tmp_path / "x.pt"
    ckpt_io.atomic_save({"format_version": ckpt_io.FORMAT_VERSION, "w": torch.ones(3), "counters": {"global_step": 1}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left behind
    assert ckpt_io.load(path)["w"].sum() == 3
    path.write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match=rf"{path}: unreadable or corrupt"):
        ckpt_io.load(path)
    torch.save({"not": "ours"}, path)
    with pytest.raises(ckpt_io.CheckpointError, match="not a checkpoint of this project"):
        ckpt_io.load(path)
    torch.save({"format_version": 2, "counters": {}}, path)
    with pytest.raises(ckpt_io.CheckpointError, match=r"format 2; this version reads format 3\. Start the run afresh"):
        ckpt_io.load(path)


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format_version": ckpt_io.FORMAT_VERSION, "x": Payload()}, path)
    with pytest.raises(ckpt_io.CheckpointError, match="unreadable or corrupt"):
        ckpt_io.load(path)


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
