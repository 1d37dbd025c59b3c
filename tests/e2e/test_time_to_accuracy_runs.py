"""Time to accuracy and train.target_accuracy in real runs: kept across resume, early stop stays stopped.
"""

from __future__ import annotations

import json

import pytest

from pipeline.runs.metrics import read_metrics
from runs import assert_same_tensors, load_ckpt, run_train

THRESHOLDS = "train.tta_thresholds=[0.05, 0.999]"  # the tiny run reaches 5% at once and never 99.9%


EMA = ("train.ema_decay=0.9", "eval.weights=both", "train.deterministic=true")


@pytest.mark.slow
def test_resume_keeps_time_to_accuracy_and_continues_the_ema(tmp_path):
    run_train(tmp_path, "straight", THRESHOLDS, *EMA)
    run_train(tmp_path, "split", THRESHOLDS, *EMA, "train.epochs=1")
    before = load_ckpt(tmp_path / "split" / "last.pt")["counters"]
    assert before["tta"]["5.0"]["epoch"] == 1 and "99.9" not in before["tta"]
    proc = run_train(tmp_path, "split", THRESHOLDS, *EMA, "checkpoint.accept_changes=[train.epochs]")  # epoch 2
    assert f"resumed from {tmp_path / 'split' / 'last.pt'} (end of epoch 1): epoch 2 starts from its beginning" in (
        proc.stderr)

    after = load_ckpt(tmp_path / "split" / "last.pt")
    counters = after["counters"]
    assert counters["tta"] == before["tta"]  # kept from before the resume, not recomputed
    assert counters["train_seconds"] > before["train_seconds"] > 0
    assert counters["wall_seconds"] > before["wall_seconds"] > before["tta"]["5.0"]["train_seconds"]
    assert "5.0% at epoch 1 after" in proc.stderr and "99.9% not reached" in proc.stderr

    records = [r for r in read_metrics(tmp_path / "split" / "metrics.jsonl") if "val/top1" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["tta/5.0/train_seconds"] == before["tta"]["5.0"]["train_seconds"]
    assert records[0]["tta/5.0/epoch"] == 1 and not any(k.startswith("tta/") for k in records[1])
    assert records[1]["val/top1"] == records[1]["val_ema/top1"] and "val_raw/top1" in records[1]

    # The EMA (weights, BatchNorm statistics, warm-up count) continued exactly across the resume.
    straight = load_ckpt(tmp_path / "straight" / "last.pt")
    assert int(after["ema"]["n_averaged"]) == 12
    assert_same_tensors(straight["ema"], after["ema"], "ema")
    assert_same_tensors(straight["model"], after["model"], "model")


@pytest.mark.slow
def test_target_accuracy_stops_early_and_a_rerun_stays_stopped(tmp_path):
    target = ("train.epochs=3", "train.target_accuracy=0.05", THRESHOLDS)
    proc = run_train(tmp_path, "target", *target)  # check=True: exit status 0
    assert "stopping at epoch 1 of 3: top-1" in proc.stderr and "reached train.target_accuracy 5.00%" in proc.stderr
    last = load_ckpt(tmp_path / "target" / "last.pt")  # written although checkpoint.every_epochs is not due
    assert last["counters"]["epoch"] == 1 and last["counters"]["global_step"] == 6
    assert (tmp_path / "target" / "best.pt").exists()

    again = run_train(tmp_path, "target", *target)  # a requeued job: resumes, sees the target, ends
    assert "resumed from" in again.stderr and "stopping at epoch 1 of 3" in again.stderr
    assert load_ckpt(tmp_path / "target" / "last.pt")["counters"]["global_step"] == 6
    assert "epoch 2/3" not in again.stderr
    # It says so, rather than reporting results as if it had trained, and names the command for a new run.
    assert "run target already reached train.target_accuracy at epoch 1 of 3 (final top-1 " in again.stderr
    assert "nothing to train. To train this setup again, start a new run: " in again.stderr
    assert "done: final top-1" not in again.stderr
    assert json.loads((tmp_path / "target" / "summary.json").read_text())["end/reason"] == "target_reached"

