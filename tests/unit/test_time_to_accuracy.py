"""pipeline/training/time_to_accuracy.py: thresholds, first crossings, the clock, the config checks, the line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.runs import clock as metrics
from pipeline.runs.clock import RunClock
from pipeline.training.state import Counters
from pipeline.training.time_to_accuracy import describe_tta, reaches, record_crossings, threshold_key, tta_summary
from runs import REPO


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

