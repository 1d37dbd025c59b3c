"""What W&B and the run directory say about real runs, read back from the files themselves.
"""

from __future__ import annotations

import json
import math
import resource
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.resume import kill_job, start_train
from support.tracking import summary_json
from wandb_log import offline_run, read_records, session_logs

from pipeline.runs.metrics import read_metrics
from runs import REPO, TINY, load_ckpt, run_env, run_train, train_command

# 2 epochs of 48 steps, a record every step, checkpoints at epoch ends only, an evaluation every epoch.
# W&B's service writes its log in 32 KiB blocks and a history row costs about 1 KB there, so a session
# that sends 40 rows and is killed has written part of them and lost the rest.
RESUMABLE = ("train.epochs=2", "train.max_steps_per_epoch=48", "checkpoint.every_steps=0", "eval.every=1",
             "logging.log_every=1", "wandb.mode=offline", "wandb.tags=[ci]")


TOTAL_STEPS = 96


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until metrics.jsonl holds a record at `step` or later."""
    deadline = time.monotonic() + timeout
    path = run_dir / "metrics.jsonl"
    while not (path.exists() and any(json.loads(line)["step"] >= step for line in path.read_text().splitlines()
                                     if line.endswith("}"))):
        if proc.poll() is not None:
            raise AssertionError(f"run ended (exit {proc.returncode}) before step {step}\n{proc.communicate()[1][-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"step {step} not reached in {timeout} s")
        time.sleep(0.02)


def without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "time"}


def same_values(expected: dict, row: dict) -> bool:
    return all(k in row and (row[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(row[k])))
               for k, v in expected.items())


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """One run in three sessions: preempted by SIGTERM at step 4 or so; resumed, checkpointed at the end
    of epoch 1 (step 48) and SIGKILLed 40 steps later; resumed again to the end. What each session
    left is kept for the tests below."""
    runs = tmp_path_factory.mktemp("runs")
    run_dir = runs / "resumed"
    first = start_train(runs, "resumed", *RESUMABLE)
    wait_for_step(run_dir, 4, first)
    first.send_signal(signal.SIGTERM)
    _, first_err = first.communicate(timeout=120)
    preempted = SimpleNamespace(exit=first.returncode, stderr=first_err, summary=summary_json(run_dir),
                                stopped_at=int(first_err.split("preempted at step ")[1].split(":")[0]),
                                wandb=offline_run(run_dir))
    second = start_train(runs, "resumed", *RESUMABLE)
    wait_for_step(run_dir, 88, second)
    kill_job(second)  # launcher, trainer and W&B's service at once: no chance to flush
    killed = SimpleNamespace(exit=second.returncode, summary=(summary_json(run_dir) if (run_dir / "summary.json").exists()
                                                             else {}))
    final = run_train(runs, "resumed", *RESUMABLE)
    return SimpleNamespace(run_dir=run_dir, preempted=preempted, killed=killed, final=final,
                           wandb=offline_run(run_dir), metrics=read_metrics(run_dir / "metrics.jsonl"))


def limit_file_size(limit_bytes: int):
    """preexec_fn: files may not grow beyond `limit_bytes` (writes then fail with EFBIG, as on a full disk)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


@pytest.mark.slow
def test_preempted_session_ends_with_exit_75_in_wandb_and_summary_json(resumed_run):
    pre = resumed_run.preempted
    assert pre.exit == 75, pre.stderr[-3000:]
    (session,) = pre.wandb["sessions"]
    assert session["exit_code"] == 75 and session["preempting"], "W&B must show the run as preempted"
    for summary in (pre.summary, session["summary"]):
        assert summary["end/reason"] == "preempted" and summary["end/exit_code"] == 75
        assert summary["time/wall_seconds"] > 0
    assert "time/train_seconds" in pre.summary  # a session that was never resumed knows it
    # Only settled rows were sent: none after the preemption checkpoint.
    assert max(row["_step"] for row in session["history"]) <= pre.stopped_at


@pytest.mark.slow
def test_wandb_history_equals_metrics_jsonl_after_sigkill_and_resume(resumed_run):
    """Every logged step and every evaluation exactly once, with metrics.jsonl's values."""
    wb, metrics = resumed_run.wandb, resumed_run.metrics
    assert resumed_run.killed.exit == -signal.SIGKILL
    assert "end/reason" not in resumed_run.killed.summary  # no stale ending from the preempted session
    sessions = wb["sessions"]
    assert [s["exit_code"] for s in sessions] == [75, None, 0]  # the killed session never wrote its exit
    rows = wb["history"]
    steps = [row["_step"] for row in rows]
    assert steps == sorted(set(steps)), f"a step reached W&B twice or out of order: {steps}"
    assert all(row["step"] == row["_step"] for row in rows), "W&B's step is our global step"

    train = [r for r in metrics if "train/loss" in r]
    evals = [r for r in metrics if "val/top1" in r]
    assert [r["step"] for r in train] == list(range(1, TOTAL_STEPS + 1)) and [r["epoch"] for r in evals] == [1, 2]
    by_step = {row["_step"]: row for row in rows}
    assert set(by_step) == {r["step"] for r in metrics}, "W&B holds steps metrics.jsonl does not, or lacks some"
    for record in metrics:
        row = by_step[record["step"]]
        assert same_values(without_time(record), row), f"step {record['step']}: {record} != {row}"
    wb_train = [row for row in rows if "train/loss" in row]
    wb_evals = [row for row in rows if "val/top1" in row]
    assert [row["step"] for row in wb_train] == [r["step"] for r in train]
    assert [row["epoch"] for row in wb_evals] == [1, 2]
    # The killed session's log kept part of what it wrote (so the last session must not send that
    # again), and no row after its last checkpoint (step 48), which the last session redid.
    killed_steps = [row["_step"] for row in sessions[1]["history"]]
    assert killed_steps, "the killed session's log holds no rows: this test no longer covers a partial log"
    assert max(killed_steps) <= 48


@pytest.mark.slow
def test_metrics_time_keeps_rising_across_resumes(resumed_run):
    times = [r["time"] for r in resumed_run.metrics]
    assert times == sorted(times) and times[0] > 0
    last = load_ckpt(resumed_run.run_dir / "last.pt")["counters"]
    assert 0 < last["wall_seconds"] and times[-1] <= last["wall_seconds"]  # stamped when written
    summary = summary_json(resumed_run.run_dir)
    assert summary["time/wall_seconds"] >= last["wall_seconds"]
    # Training time continues from the checkpoint each session resumed from: the killed session's work
    # after its checkpoint was redone and counts once. Nothing trained after the final last.pt.
    assert 0 < last["train_seconds"] < last["wall_seconds"]
    assert summary["time/train_seconds"] == pytest.approx(last["train_seconds"], abs=1e-3)


@pytest.mark.slow
def test_finished_run_summary_json_matches_wandb(resumed_run):
    summary, wb = summary_json(resumed_run.run_dir), resumed_run.wandb
    assert summary["end/reason"] == "finished" and summary["end/exit_code"] == 0
    evals = [r for r in resumed_run.metrics if "val/top1" in r]
    assert summary["final/top1"] == evals[-1]["val/top1"]
    assert summary["best/top1"] == max(r["val/top1"] for r in evals)
    assert summary["perf/mean_images_per_sec"] > 0
    for key, value in summary.items():
        assert wb["summary"][key] == value, key
    assert wb["summary"]["val/top1"] == {"max": summary["best/top1"], "last": summary["final/top1"]}


@pytest.mark.slow
def test_resolved_settings_and_automatic_tags(resumed_run):
    run_dir, wb = resumed_run.run_dir, resumed_run.wandb
    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert resolved["resolved/precision"] == "fp32"  # train.precision=auto on a CPU
    assert resolved["resolved/data_device"] == "cpu" and resolved["resolved/data_pipeline"] == "dali-cpu"
    assert resolved["resolved/compile"] == "off" and resolved["resolved/world_size"] == 1
    assert resolved["resolved/nodes"] == 1 and resolved["resolved/gpu_count"] == 0
    assert resolved["resolved/per_device_batch"] == 32 and resolved["resolved/steps_per_epoch"] == 48
    assert resolved["resolved/effective_lr"] == 0.1
    assert resolved["resolved/torch"] and resolved["resolved/dali"]
    assert len(resolved["resolved/git"]) >= 7 and isinstance(resolved["resolved/git_dirty"], bool)
    assert resolved["resolved/data_fingerprint"].startswith("sha1:")
    for key, value in resolved.items():
        assert wb["config"][key] == value, key
    assert list(wb["run"].tags) == ["ci", "fp32", "cpu", "dali-cpu"]


@pytest.mark.slow
def test_reader_takes_a_log_cut_anywhere(resumed_run, tmp_path):
    """A writer killed mid-block leaves a prefix; the reader returns the whole records in it, never garbage."""
    log = session_logs(resumed_run.run_dir)[-1]
    data = log.read_bytes()
    whole = read_records(log)
    for cut in (7, 100, 32768 + 3, len(data) // 2, len(data) - 1):
        part = tmp_path / f"cut-{cut}.wandb"
        part.write_bytes(data[:cut])
        records = read_records(part)
        assert [r.SerializeToString() for r in records] == [r.SerializeToString() for r in whole[:len(records)]]


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["crashed", "io_error"])
def test_a_failed_checkpoint_write_is_recorded_as_a_crash_or_as_a_file_that_cannot_be_written(tmp_path, failure):
    """Real failures that are not the input's fault, at the first checkpoint write. crashed: last.pt is a folder,
    so the rename fails (exit 1, the traceback goes on up); io_error: a 1 MiB file size limit refuses the 6 MB
    file, as a full disk or a quota would (exit 74, one line)."""
    args = [*TINY, f"logging.runs_dir={tmp_path}", "logging.run_name=crash", "wandb.mode=offline", "train.epochs=1"]
    run_dir = tmp_path / "crash"
    if failure == "crashed":
        (run_dir / "last.pt").mkdir(parents=True)
    proc = subprocess.run(train_command() + args, cwd=REPO, env=run_env(), capture_output=True, text=True,
                          timeout=240, preexec_fn=limit_file_size(1 << 20) if failure == "io_error" else None)
    code = {"crashed": 1, "io_error": 74}[failure]
    assert proc.returncode == code, proc.stderr[-3000:]
    if failure == "crashed":
        assert "Traceback" in proc.stderr and "IsADirectoryError" in proc.stderr
    else:
        assert "Traceback" not in proc.stderr and f"error: cannot write {run_dir / 'last.pt'}: File too large" in proc.stderr
        assert not (run_dir / "last.pt").exists()
    summary, wb = summary_json(run_dir), offline_run(run_dir)
    assert wb["exit_code"] == code and not wb["preempting"]
    for values in (summary, wb["summary"]):
        assert values["end/reason"] == failure and values["end/exit_code"] == code
    assert summary["final/top1"] == read_metrics(run_dir / "metrics.jsonl")[-1]["val/top1"]  # evaluated, then failed
    assert summary["time/wall_seconds"] > 0 and summary["perf/mean_images_per_sec"] > 0


@pytest.mark.slow
def test_nonfinite_stop_is_recorded_with_exit_4(tmp_path):
    proc = run_train(tmp_path, "nan", "wandb.mode=offline", "train.epochs=3", "train.debug_nan_step=8",
                     "train.nonfinite_limit=3", check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    run_dir = tmp_path / "nan"
    summary, wb = summary_json(run_dir), offline_run(run_dir)
    assert wb["exit_code"] == 4
    for values in (summary, wb["summary"]):
        assert values["end/reason"] == "nonfinite" and values["end/exit_code"] == 4
    assert summary["best/epoch"] == 1
    # History holds what the last good checkpoint (end of epoch 1, step 6) covers; the records after it
    # stay in metrics.jsonl, because resuming (with a lower lr) redoes those steps.
    assert [row["_step"] for row in wb["history"]] == [3, 6]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [3, 6, 6, 9]

