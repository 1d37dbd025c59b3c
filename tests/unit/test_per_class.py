"""pipeline/runs/per_class.py: per-class rows from a confusion matrix and the files at 10 and 1,000 classes.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch


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

