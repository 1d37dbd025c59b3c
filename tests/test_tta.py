"""Time to accuracy and train.target_accuracy: the bookkeeping in-process, then real runs (resume, early stop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.runs import clock as metrics
from pipeline.training.time_to_accuracy import describe_tta, reaches, record_crossings, threshold_key, tta_summary
from pipeline.training.state import Counters
from pipeline.config import ConfigError, load_config
from pipeline.runs.clock import RunClock
from pipeline.runs.metrics import read_metrics
from runs import REPO, assert_same_tensors, load_ckpt, run_train


class FakeTime:
    """Stands in for time.perf_counter: seconds advance only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(metrics.time, "perf_counter", clock)
    return clock


def test_threshold_keys_are_percent_with_one_decimal():
    assert [threshold_key(t) for t in (0.9, 0.92, 0.926, 1.0, 0.05)] == ["90.0", "92.0", "92.6", "100.0", "5.0"]
    assert reaches(926 / 1000, 0.926) and reaches(9260 / 10000, 0.926)
    assert not reaches(925 / 1000, 0.926)


def test_first_crossings_are_recorded_once():
    reached: dict = {}
    thresholds = [0.926, 0.90, 0.92]
    assert record_crossings(reached, thresholds, 0.85, epoch=3, train_seconds=30, wall_seconds=40) == {}
    new = record_crossings(reached, thresholds, 0.921, epoch=7, train_seconds=70.12345, wall_seconds=90)
    assert new == {"tta/90.0/train_seconds": 70.123, "tta/90.0/wall_seconds": 90, "tta/90.0/epoch": 7,
                   "tta/92.0/train_seconds": 70.123, "tta/92.0/wall_seconds": 90, "tta/92.0/epoch": 7}
    # A worse evaluation removes nothing; a better one adds only the new level.
    assert record_crossings(reached, thresholds, 0.80, epoch=8, train_seconds=80, wall_seconds=100) == {}
    new = record_crossings(reached, thresholds, 0.93, epoch=9, train_seconds=90, wall_seconds=110)
    assert set(new) == {"tta/92.6/train_seconds", "tta/92.6/wall_seconds", "tta/92.6/epoch"}
    assert reached["90.0"] == {"train_seconds": 70.123, "wall_seconds": 90, "epoch": 7}
    summary = tta_summary(reached)
    assert summary["tta/90.0/epoch"] == 7 and summary["tta/92.6/epoch"] == 9 and len(summary) == 9
    line = describe_tta({"90.0": reached["90.0"]}, thresholds)
    assert line == "90.0% at epoch 7 after 70.1 s of training (90.0 s wall); 92.0% not reached; 92.6% not reached"


def test_counters_summary_carries_the_crossings():
    c = Counters(final={"val/top1": 0.91, "val/top5": 1.0, "val/loss": 0.3, "epoch": 4}, best_top1=0.91,
                 best_epoch=4, train_seconds=12.5, tta={"90.0": {"train_seconds": 12.5, "wall_seconds": 20.0, "epoch": 4}})
    summary = c.result_summary()
    assert summary["tta/90.0/train_seconds"] == 12.5 and summary["tta/90.0/epoch"] == 4
    assert summary["final/top1"] == 0.91


def test_clock_excludes_checkpoints_and_continues_after_a_resume(fake_time):
    counters = Counters(train_seconds=100.0, wall_seconds=150.0)  # as restored from a checkpoint
    clock = RunClock(counters, torch.device("cpu"), started=fake_time.now)
    fake_time.now += 5  # start-up of this attempt: wall time, not training
    assert clock.wall_seconds() == 155.0
    clock.start_training()
    fake_time.now += 10
    clock.before_save(counters)  # a step checkpoint in the middle of the epoch (CheckpointManager calls these)
    assert counters.train_seconds == 110.0 and counters.wall_seconds == 165.0
    fake_time.now += 3
    clock.after_save(counters)
    fake_time.now += 7
    clock.stop_training()
    fake_time.now += 2  # evaluation
    assert counters.train_seconds == 117.0 and clock.wall_seconds() == 177.0
    clock.before_save(counters)  # the epoch's checkpoint, outside the loop: nothing to pause
    clock.after_save(counters)
    assert counters.train_seconds == 117.0 and counters.wall_seconds == 177.0
    assert clock.segment_start is None  # and the training clock stays stopped


def test_tta_and_target_config_checks():
    cfg = load_config()
    assert cfg.train.tta_thresholds == [] and cfg.train.target_accuracy == 0  # levels belong to a recipe
    assert load_config(REPO / "configs" / "squeezenet_cifar10.yaml").train.tta_thresholds == [0.90, 0.92, 0.926]
    with pytest.raises(ConfigError, match=r"^train\.tta_thresholds: 0\.9265 must be a fraction"):
        load_config(None, ["train.tta_thresholds=[0.9, 0.9265]"])
    with pytest.raises(ConfigError, match=r"^train\.tta_thresholds: 1\.5 must be"):
        load_config(None, ["train.tta_thresholds=[1.5]"])
    with pytest.raises(ConfigError, match=r"^train\.target_accuracy: .*less than or equal to 1"):
        load_config(None, ["train.target_accuracy=92.6"])


def test_the_time_to_accuracy_line_is_printed_only_when_there_are_levels(caplog):
    """A 15-epoch sample run or a 5-class photo set has no CIFAR-10 levels to report as 'not reached'."""
    from pipeline.distributed import DistInfo
    from pipeline.training.summary import report_final

    counters = Counters(epoch=15, best_top1=0.57, best_epoch=15, train_seconds=120.0,
                        final={"val/top1": 0.569, "val/top5": 0.95, "val/loss": 1.2, "epoch": 15})
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    for cfg, line in [(load_config(REPO / "configs" / "quickstart.yaml"), "120.0 s of training (evaluation and checkpoints "
                                                                "excluded)"),
                      (load_config(REPO / "configs" / "squeezenet_cifar10.yaml"), "time to accuracy: 90.0% not reached; "
                                                                       "92.0% not reached; 92.6% not reached; 120.0 s")]:
        caplog.clear()
        with caplog.at_level("INFO", logger="pipeline"):
            report_final(counters, cfg.train, dist, 600.0, Path("runs/x"))
        assert line in caplog.text
        assert ("not reached" in caplog.text) == bool(cfg.train.tta_thresholds)


# ------------------------------------------------------------------------------ real runs

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
