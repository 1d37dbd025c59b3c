"""Which classes fail: the per-class counts, the files (10 and 1,000 classes), W&B, eval.only and compare."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from runs import run_env, run_train


def test_per_class_rows_from_a_confusion_matrix():
    from pipeline.runs.per_class import PerClassReport

    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # class c has no images and is never predicted
    rows = PerClassReport(confusion, np.array([10, 4, 0]), ["a", "b", "c"]).rows()
    a, b, c = rows
    assert (a["support"], a["recall"], a["precision"]) == (10, 0.8, 8 / 9)
    assert b["recall"] == 0.75 and b["precision"] == 0.6 and abs(b["f1"] - 2 * 0.6 * 0.75 / 1.35) < 1e-12
    assert a["top5_recall"] == 1.0 and (a["confused_with"], a["confused_count"]) == ("b", 2)
    assert c == {"class": "c", "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "top5_recall": 0.0,
                 "confused_with": "", "confused_count": 0}


def test_class_counts_match_a_count_by_hand():
    from pipeline.training.confusion import ClassCounts

    gen = torch.Generator().manual_seed(0)
    counts = ClassCounts(7, torch.device("cpu"))
    logits_all, labels_all = [], []
    for n in (5, 64, 13):
        logits, labels = torch.randn(n, 7, generator=gen), torch.randint(0, 7, (n,), generator=gen)
        counts.add(logits, labels)
        logits_all.append(logits)
        labels_all.append(labels)
    confusion, top5 = counts.total()
    logits, labels = torch.cat(logits_all).numpy(), torch.cat(labels_all).numpy()
    expected = np.zeros((7, 7), np.int64)
    np.add.at(expected, (labels, logits.argmax(1)), 1)
    assert (confusion == expected).all()
    in_top5 = (np.argsort(-logits, 1)[:, :5] == labels[:, None]).any(1)
    assert (top5 == np.bincount(labels[in_top5], minlength=7)).all()


@pytest.mark.parametrize("k", [10, 1000])
def test_the_files_at_10_and_at_1000_classes(tmp_path, k):
    from PIL import Image

    from pipeline.runs.per_class import PerClassReport, differences, read_per_class, write_per_class

    rng = np.random.default_rng(0)
    truth = rng.integers(0, k, 50 * k)
    predicted = np.where(rng.random(len(truth)) < 0.7, truth, rng.integers(0, k, len(truth)))
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    classes = [f"class{i:04d}" for i in range(k)]
    paths = write_per_class(tmp_path, PerClassReport(confusion, np.diag(confusion) + 1, classes))
    assert [p.name for p in paths] == ["per_class.csv", "confusion.csv", "confusion.png"]
    rows = read_per_class(tmp_path)
    assert len(rows) == k and sum(r["support"] for r in rows) == len(truth)
    with open(tmp_path / "confusion.csv") as fh:
        cells = list(csv.DictReader(fh))
    assert sum(int(c["count"]) for c in cells) == len(truth) and len(cells) == np.count_nonzero(confusion)
    width, height = Image.open(tmp_path / "confusion.png").size
    assert 400 < width <= 1200 and 300 < height <= 1400  # a picture a person reads, not 1000 x 1000 cells
    assert differences(rows, rows)[0]["change"] == 0.0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    run_train(runs, "pc", "wandb.mode=offline", "optim.lr=0.01")
    return runs / "pc"


@pytest.mark.slow
def test_the_final_evaluation_writes_the_per_class_report_and_w_and_b_gets_it(finished):
    from wandb_log import offline_run

    from pipeline.runs.per_class import read_per_class

    rows = read_per_class(finished)
    assert [r["class"] for r in rows][:3] == ["airplane", "automobile", "bird"]
    assert sum(r["support"] for r in rows) == 1000  # the sample's test split, each image once
    summary = json.loads((finished / "summary.json").read_text())
    recall = sum(r["recall"] * r["support"] for r in rows) / 1000
    assert abs(recall - summary["final/top1"]) < 1e-9  # the same evaluation as the headline
    assert (finished / "confusion.png").stat().st_size > 10_000
    history = offline_run(finished)["history"]
    keys = {k for row in history for k in row}
    assert {"per_class/table/_type", "per_class/confusion_png/_type"} <= keys
    assert any(k.startswith("per_class/confusion_table") for k in keys)  # the confusion chart's table


@pytest.mark.slow
def test_eval_only_writes_the_per_class_report_beside_eval_json(finished, tmp_path):
    import shutil

    run = tmp_path / "pc"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("per_class.csv", "confusion.*", "wandb*"))
    run_train(tmp_path, "pc", "eval.only=true")
    assert not (run / "per_class.csv").exists()  # the run's own report is not the evaluation's
    (folder,) = (run / "eval").iterdir()  # <run>/eval/<checkpoint>-<split>-<time>/
    assert (folder / "eval.json").is_file() and (folder / "per_class.csv").is_file()
    assert (folder / "confusion.png").is_file()


@pytest.mark.slow
def test_compare_shows_two_runs_per_class_differences(finished, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(finished, other, ignore=shutil.ignore_patterns("wandb*", "*.pt"))
    text = (other / "per_class.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[3] = "0.9990"  # the third class's recall, changed
    (other / "per_class.csv").write_text("\n".join([*text[:3], ",".join(cells), *text[4:]]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.compare", str(finished), str(other), "--per-class",
                           "--per-class-rows", "2"], cwd=REPO, capture_output=True, text=True, env=run_env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("per class")[1].splitlines()
    assert lines[3].split()[0] == "bird" and "99.9" in lines[3]  # the largest change first
    assert "8 more classes" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.compare", str(finished), "--per-class"], cwd=REPO,
                          capture_output=True, text=True, env=run_env())
    assert proc.returncode == 2 and "compares two runs" in proc.stderr


@pytest.mark.slow
def test_two_ranks_sum_their_per_class_counts(tmp_path):
    """Under torchrun with 2 processes each rank counts its half of the split; the report holds every image once."""
    from pipeline.runs.per_class import read_per_class

    run_train(tmp_path, "ddp", "optim.lr=0.01", "train.epochs=1", nproc=2)
    rows = read_per_class(tmp_path / "ddp")
    assert sum(r["support"] for r in rows) == 1000 and all(r["support"] == 100 for r in rows)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert abs(sum(r["recall"] * r["support"] for r in rows) / 1000 - summary["final/top1"]) < 1e-9
