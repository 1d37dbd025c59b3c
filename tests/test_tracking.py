"""What W&B and the run directory say about a run, read back from the files themselves.

Real runs of the trainer (W&B offline), real signals, and W&B's own .wandb files read with
pipeline/runs/wandb_files.py: how each run ended (exit code, state, `end/reason` in W&B and
summary.json), history equal to metrics.jsonl across a preemption, a SIGKILL and two resumes,
`time` that keeps rising across resumes, the resolved settings and the automatic tags.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.training.state import Counters
from pipeline.config import load_config
from pipeline.errors import EndReason, RunDirError
from pipeline.runs.fingerprint import data_fingerprint
from pipeline.runs.clock import RunClock
from pipeline.runs.metrics import MetricsLog, read_metrics
from pipeline.runs.records import RunRecords
from pipeline.runs.resolved import auto_tags, merge_tags, node_count
from runs import REPO, TINY, load_ckpt, run_env, run_train, train_command
from test_reliability import kill_job, start_train
from wandb_log import offline_run, read_records, session_logs

# 2 epochs of 48 steps, a record every step, checkpoints at epoch ends only, an evaluation every epoch.
# W&B's service writes its log in 32 KiB blocks and a history row costs about 1 KB there, so a session
# that sends 40 rows and is killed has written part of them and lost the rest.
RESUMABLE = ("train.epochs=2", "train.max_steps_per_epoch=48", "checkpoint.every_steps=0", "eval.every=1",
             "logging.log_every=1", "wandb.mode=offline", "wandb.tags=[ci]")
TOTAL_STEPS = 96
W_AND_B_KEYS = ("_step", "_runtime", "_timestamp")  # W&B's own columns in every history row


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


def summary_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "time"}


def same_values(expected: dict, row: dict) -> bool:
    return all(k in row and (row[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(row[k])))
               for k, v in expected.items())


# ------------------------------------------------------------- preempted, killed, resumed twice


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
def test_a_row_waits_for_the_evaluation_of_its_step(tmp_path):
    """A stop on an epoch's last step is checkpointed before that epoch's evaluation; the evaluation (in
    the next session) joins the same W&B row, so the row is sent only when the epoch-end checkpoint
    closes it. Real W&B offline sessions in this process."""
    from pipeline.runs.tracking import Tracker

    cfg = load_config(None, ["wandb.mode=offline"]).wandb

    def session() -> Tracker:
        return Tracker(cfg, enabled=True, run_dir=tmp_path, run_name="rows", experiment="t", config={}, environment={})

    train = [{"step": s, "epoch": s / 12, "train/loss": 1.0 / s} for s in (11, 12)]
    first = session()
    for record in train:
        first.log(record)
    first.settle(12, epoch_closed=False)  # the preemption checkpoint at the epoch's last step
    first.finish(75, preempting=True)
    second = session()
    assert second.delivered_step == 11
    second.backfill(train)  # metrics.jsonl as the resumed run keeps it
    second.settle(12, epoch_closed=False)  # resumed at that checkpoint: row 12 still open
    second.log({"step": 12, "epoch": 1, "val/top1": 0.5})
    second.settle(12, epoch_closed=True)  # the epoch-end checkpoint after the evaluation
    second.log({"step": 13, "epoch": 13 / 12, "train/loss": 0.1})
    second.finish(0, final=True)
    rows = [{k: v for k, v in row.items() if k not in W_AND_B_KEYS} for row in offline_run(tmp_path)["history"]]
    assert rows == [train[0], {**train[1], "epoch": 1, "val/top1": 0.5}, {"step": 13, "epoch": 13 / 12, "train/loss": 0.1}]


# ----------------------------------------------------------------- crash and non-finite stop


def limit_file_size(limit_bytes: int):
    """preexec_fn: files may not grow beyond `limit_bytes` (writes then fail with EFBIG, as on a full disk)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


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


# ------------------------------------------------------------------------- without processes


def test_records_continue_a_resumed_run(tmp_path):
    """RunRecords on resume: `time` goes on from the checkpoint, summary.json loses only the last session's
    ending, resolved.json is rewritten, the checkpoint is stamped with the run time."""
    cfg = load_config(None, ["wandb.mode=disabled"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [{"time": 1.0, "step": 3}, {"time": 2.0, "step": 6},
                                               {"time": 3.5, "step": 9}]))
    (run_dir / "summary.json").write_text(json.dumps(
        {"best/top1": 0.5, "tta/90/epoch": 4, "end/reason": "preempted", "end/exit_code": 75,
         "time/wall_seconds": 2.5, "time/train_seconds": 2.0}))
    counters = Counters(epoch=1, step_in_epoch=0, global_step=6, wall_seconds=2.5, train_seconds=2.0)
    clock = RunClock(counters, torch.device("cpu"))
    records = RunRecords(cfg, run_dir, is_main=True, counters=counters, clock=clock, environment={},
                         resolved={"resolved/precision": "fp32"})
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [3, 6]  # step 9 came after the checkpoint
    assert summary_json(run_dir) == {"best/top1": 0.5, "tta/90/epoch": 4}
    assert json.loads((run_dir / "resolved.json").read_text()) == {"resolved/precision": "fp32"}
    records.log({"step": 7, "train/loss": 1.0})
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["time"] >= 2.5
    clock.before_save(counters)
    assert counters.wall_seconds >= 2.5
    counters.train_seconds += 1.0  # this session's training
    records.summary({"tta/92/epoch": 9})
    records.finish(EndReason.FINISHED, 0, plot=False)
    summary = summary_json(run_dir)
    assert summary["tta/90/epoch"] == 4 and summary["tta/92/epoch"] == 9 and summary["end/reason"] == "finished"
    assert summary["time/train_seconds"] == 3.0  # 2.0 before the preemption (from the checkpoint) + 1.0 now


def test_data_fingerprint_names_the_data_not_the_place(tmp_path):
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "a", {"train": {"x": 3, "y": 2}, "val": {"x": 1, "y": 1}})
    data = load_config(None, ["data.source=imagefolder", f"data.root={tree}"]).data
    first = data_fingerprint(data)
    assert first.startswith("sha1:") and data_fingerprint(data) == first
    shutil.copytree(tree, tmp_path / "b")
    assert data_fingerprint(data.model_copy(update={"root": str(tmp_path / "b")})) == first
    (tree / "other").mkdir()  # a folder that is not a split does not count
    assert data_fingerprint(data) == first
    (tree / "train" / "x" / "000.jpg").rename(tree / "train" / "y" / "000.jpg")  # another label
    assert data_fingerprint(data) != first
    sample = load_config(None, ["data.source=sample"]).data
    assert data_fingerprint(sample) == data_fingerprint(sample) != first


def test_node_count_and_tags():
    assert node_count({}) == 1
    assert node_count({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == 2
    assert node_count({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "2"}) == 2
    values = {"resolved/precision": "bf16", "resolved/gpu_count": 8, "resolved/data_pipeline": "dali-gpu",
              "resolved/compile": "reduce-overhead"}
    assert auto_tags(values) == ["bf16", "8gpu", "dali-gpu", "compiled"]
    assert auto_tags({"resolved/gpu_count": 0}) == ["cpu"]
    assert "compiled" not in auto_tags({**values, "resolved/compile": "off"})
    assert merge_tags(["bf16", "mine"], auto_tags(values)) == ["bf16", "mine", "8gpu", "dali-gpu", "compiled"]


def test_resume_survives_a_partial_last_metrics_line(tmp_path):
    """A run killed mid-write leaves half a line; resuming drops it (and the records after the checkpoint)."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"time": 1.0, "step": 3, "train/loss": 2.5}, {"time": 2.0, "step": 6, "val/top1": 0.1},
            {"time": 3.0, "step": 9, "train/loss": 2.1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"time": 4.0, "step": 1')
    log = MetricsLog(path, enabled=True, clock=None)
    log.truncate_after(6)
    assert read_metrics(path) == rows[:2]
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows[:2])  # the kept lines as written

    path.write_text(json.dumps(rows[0]) + "\nnot json\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(RunDirError, match=r"metrics\.jsonl:2: not a JSON record"):
        log.truncate_after(6)
