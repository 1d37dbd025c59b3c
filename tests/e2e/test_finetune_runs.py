"""Fine-tuning in real runs: train.init_from with another class count, train.freeze, and the refusals.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import write_imagefolder

from runs import load_ckpt, run_train


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 10-class run on the sample (no EMA)."""
    runs = tmp_path_factory.mktemp("runs")
    run_train(runs, "src", "optim.lr=0.01")
    return runs / "src"


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("data") / "tree",
                             {"train": {"ant": 8, "bee": 8, "cat": 8}, "val": {"ant": 3, "bee": 3, "cat": 3}}, side=20)


def fine_tune(runs: Path, name: str, tree: Path, *overrides: str, check: bool = True):
    return run_train(runs, name, "data.source=imagefolder", f"data.root={tree}", "model.num_classes=3",
                     "train.global_batch_size=8", "eval.batch_size=16", *overrides, check=check)


@pytest.mark.slow
def test_init_from_another_class_count_with_a_frozen_backbone(source, three_classes, tmp_path):
    proc = fine_tune(tmp_path, "ft", three_classes, f"train.init_from={source}", "train.freeze=features")
    log = proc.stdout + proc.stderr
    assert "re-initialised (10 classes there, 3 here): head.2.weight, head.2.bias" in log
    assert "no EMA in this checkpoint" in log  # init_weights=ema of a run without one: its raw weights, said
    start, end = load_ckpt(source / "best.pt")["model"], load_ckpt(tmp_path / "ft" / "last.pt")["model"]
    features = [k for k in start if k.startswith("features.")]
    # Frozen: the weights and the BatchNorm statistics (eval mode) are the source's, bit for bit, after training.
    assert features and all(torch.equal(start[k], end[k]) for k in features)
    assert not torch.equal(start["head.0.weight"], end["head.0.weight"])  # the classifier trained
    sha = hashlib.sha256((source / "best.pt").read_bytes()).hexdigest()
    assert load_ckpt(tmp_path / "ft" / "last.pt")["init_from"] == {"path": str(source / "best.pt"), "sha256": sha,
                                                                   "weights": "raw"}
    assert json.loads((tmp_path / "ft" / "resolved.json").read_text())["resolved/init_from_sha256"] == sha


@pytest.mark.slow
def test_init_from_without_freezing_trains_every_layer_from_the_source(source, three_classes, tmp_path):
    fine_tune(tmp_path, "all", three_classes, f"train.init_from={source}", "optim.lr=0.00001")
    start, end = load_ckpt(source / "best.pt")["model"], load_ckpt(tmp_path / "all" / "last.pt")["model"]
    # Every backbone layer trained (none frozen), from the source's weights: at this learning rate they stay
    # within a hundredth of them (a fresh initialisation would be as far away as the weights are large).
    for key in ("features.0.weight", "features.11.expand3x3.2.weight"):
        moved = (end[key] - start[key]).norm()
        assert 0 < moved < 0.01 * start[key].norm(), key


@pytest.mark.slow
def test_init_from_is_refused_for_another_model_and_for_a_run_that_continues(source, three_classes, tmp_path):
    sides = ["data.train.min_side=24", "data.train.max_side=26", "data.train.crop=24", "data.eval.size=24",
             "data.eval.crop=24"]  # squeezenet1_1 takes 17 px and more
    proc = fine_tune(tmp_path, "other", three_classes, f"train.init_from={source}", "model.name=squeezenet1_1",
                     *sides, check=False)
    assert proc.returncode == 2 and "not weights of this network" in proc.stderr and str(source) in proc.stderr
    assert not (tmp_path / "other").exists()  # bad input at start-up leaves no run directory
    fine_tune(tmp_path, "cont", three_classes, "train.epochs=1")
    proc = fine_tune(tmp_path, "cont", three_classes, f"train.init_from={source}", "train.epochs=2",
                     "checkpoint.accept_changes=[train.init_from,train.epochs]", check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "fine-tuning starts a new run" in errors[0]

