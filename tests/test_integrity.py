"""A run's record stays true: config changes on resume, a bounded stop wherever the signal lands,
stop means stop under restarts, and one rank's error stops every rank with that error first."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from pipeline.runs.changes import CHANGES_FILE, config_changes, effective_config
from pipeline.runs.metrics import read_metrics
from runs import assert_same_tensors, load_ckpt, run_train
from test_reliability import start_train, wait_for_file
from wandb_log import offline_run


# ------------------------------------------------------------------------- config changes on resume


def test_changes_are_classified_free_or_experiment():
    saved = {"optim": {"lr": 0.1}, "logging": {"log_every": 50}, "data": {"num_threads": 2, "train": {"crop": 122}},
             "checkpoint": {"accept_changes": []}}
    current = {"optim": {"lr": 0.5}, "logging": {"log_every": 10}, "data": {"num_threads": 4, "train": {"crop": 96}},
               "checkpoint": {"accept_changes": ["optim.lr"]}}
    kinds = {c.key: c.kind for c in config_changes(saved, current)}
    assert kinds == {"optim.lr": "experiment", "logging.log_every": "free", "data.num_threads": "free",
                     "data.train.crop": "experiment"}  # the acceptance itself is not a change


@pytest.mark.slow
def test_a_continued_run_with_changed_keys_stops_until_accepted_and_keeps_both_records(tmp_path):
    run_dir = tmp_path / "r1"
    run_train(tmp_path, "r1", "train.epochs=1", "wandb.mode=offline")
    original = (run_dir / "config.yaml").read_bytes()
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    changed = ("optim.lr=0.5", "train.epochs=2", "logging.log_every=2")
    proc = run_train(tmp_path, "r1", *changed, "wandb.mode=offline", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: run r1 was trained with other values: optim.lr: 0.1 -> 0.5; train.epochs: 1 -> 2.")
    assert "logging.log_every" not in error  # it changes nothing trained: not a reason to stop
    assert "./launch.sh --new" in error and "checkpoint.accept_changes=[optim.lr,train.epochs]" in error
    assert "multistep milestones stay" in error  # what extending train.epochs does to the schedule
    assert (run_dir / "config.yaml").read_bytes() == original and not (run_dir / CHANGES_FILE).exists()
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # nothing trained

    proc = run_train(tmp_path, "r1", *changed, "wandb.mode=offline", "checkpoint.accept_changes=[optim.lr,train.epochs]")
    assert "learning rate at this step 0.1 under the checkpoint's settings, 0.5 under this run's" in proc.stderr
    assert (run_dir / "config.yaml").read_bytes() == original  # the record of epoch 1 stays
    lines = [json.loads(line) for line in (run_dir / CHANGES_FILE).read_text().splitlines()]
    assert [(r["step"], r["key"], r["old"], r["new"], r["kind"]) for r in lines] == [
        (6, "logging.log_every", 3, 2, "free"), (6, "optim.lr", 0.1, 0.5, "experiment"),
        (6, "train.epochs", 1, 2, "experiment")]
    assert effective_config(run_dir)["optim"]["lr"] == 0.5
    assert load_ckpt(run_dir / "last.pt")["optimizer"]["param_groups"][0]["lr"] == 0.5  # trained with it
    lrs = {r["step"]: r["train/lr"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/lr" in r}
    assert lrs[6] == 0.1 and lrs[12] == 0.5
    wb = offline_run(run_dir)
    assert wb["config"]["optim"]["lr"] == 0.1  # W&B's config is the original too ...
    assert [c["key"] for c in wb["config"]["config_changes"]] == ["logging.log_every", "optim.lr", "train.epochs"]
