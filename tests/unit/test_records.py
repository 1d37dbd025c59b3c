"""pipeline/runs/records.py and metrics: rows wait for their evaluation, records continue a resumed run, fingerprints,
tags, a cut log.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from support.tracking import summary_json
from wandb_log import offline_run

from pipeline.config import load_config
from pipeline.errors import EndReason, RunDirError
from pipeline.runs.clock import RunClock
from pipeline.runs.fingerprint import data_fingerprint
from pipeline.runs.metrics import MetricsLog, read_metrics
from pipeline.runs.records import RunRecords
from pipeline.runs.resolved import auto_tags, merge_tags, node_count
from pipeline.training.state import Counters

W_AND_B_KEYS = ("_step", "_runtime", "_timestamp")  # W&B's own columns in every history row


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

