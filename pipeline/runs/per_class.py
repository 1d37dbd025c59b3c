"""Which classes fail: per_class.csv, confusion.csv and confusion.png from an evaluation's counts (no torch).

    report = PerClassReport(confusion, top5_hits, classes)   # confusion[true, predicted]: image counts
    write_per_class(folder, report)                          # the three files, into `folder`
    rows = read_per_class(run_dir)                           # per_class.csv back, e.g. for compare
    differences(rows_a, rows_b)                              # per class: recall here and there, the change

per_class.csv: one row per class in label order: class, support (images of it), precision, recall,
F1, top-5 recall, and the class it is most often mistaken for with that count. confusion.csv: the
non-zero cells of the confusion matrix as `true,predicted,count` rows (any number of classes; a
spreadsheet pivots it back to a matrix). confusion.png: up to MATRIX_MAX_CLASSES classes the matrix
itself, each row as shares of its class, with the counts written in; beyond that (1,000 ImageNet
classes) the PAIRS_SHOWN most-confused pairs as bars, since a 1000 x 1000 picture shows nothing.
A class without images has precision and recall of 0 and support 0 (never a division by zero).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import RunDirError
from pipeline.files import atomic_open, atomic_write_text

PER_CLASS_FILE, CONFUSION_FILE, CONFUSION_PLOT = "per_class.csv", "confusion.csv", "confusion.png"
MATRIX_MAX_CLASSES = 30  # a drawn matrix stays legible up to here (labels and counts)
PAIRS_SHOWN = 30
COLUMNS = ("class", "support", "precision", "recall", "f1", "top5_recall", "confused_with", "confused_count")


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)


@dataclass
class PerClassReport:
    confusion: np.ndarray  # (K, K) int64: [true class, predicted class]
    top5_hits: np.ndarray  # (K,) int64
    classes: list[str]

    def rows(self) -> list[dict[str, Any]]:
        c = np.asarray(self.confusion, np.int64)
        hits, support, predicted = np.diag(c), c.sum(axis=1), c.sum(axis=0)
        precision, recall = _ratio(hits, predicted), _ratio(hits, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        top5 = _ratio(np.asarray(self.top5_hits, np.float64), support)
        off = c - np.diag(hits)
        rows = []
        for i, name in enumerate(self.classes):
            j = int(off[i].argmax())
            rows.append({"class": name, "support": int(support[i]), "precision": float(precision[i]),
                         "recall": float(recall[i]), "f1": float(f1[i]), "top5_recall": float(top5[i]),
                         "confused_with": self.classes[j] if off[i, j] else "", "confused_count": int(off[i, j])})
        return rows

    def confused_pairs(self, limit: int = PAIRS_SHOWN) -> list[tuple[str, str, int]]:
        """(true, predicted, count) of the `limit` largest off-diagonal cells, largest first."""
        off = np.asarray(self.confusion, np.int64).copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(off, axis=None, kind="stable")[::-1][:limit]
        k = len(self.classes)
        return [(self.classes[i // k], self.classes[i % k], int(off.flat[i])) for i in flat if off.flat[i] > 0]

    def cells(self) -> list[tuple[str, str, int]]:
        """(true, predicted, count) of every non-zero cell, in label order."""
        rows, cols = np.nonzero(self.confusion)
        return [(self.classes[i], self.classes[j], int(self.confusion[i, j])) for i, j in zip(rows, cols)]


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _shown(value: Any) -> Any:
    return f"{value:.4f}" if isinstance(value, float) else value


def write_per_class(folder: Path, report: PerClassReport) -> list[Path]:
    """per_class.csv, confusion.csv and confusion.png in `folder` (each written whole or not at all)."""
    folder = Path(folder)
    per_class = _csv_text(list(COLUMNS), [[_shown(r[c]) for c in COLUMNS] for r in report.rows()])
    atomic_write_text(folder / PER_CLASS_FILE, per_class)
    atomic_write_text(folder / CONFUSION_FILE, _csv_text(["true", "predicted", "count"],
                                                         [list(cell) for cell in report.cells()]))
    plot_confusion(report, folder / CONFUSION_PLOT)
    return [folder / PER_CLASS_FILE, folder / CONFUSION_FILE, folder / CONFUSION_PLOT]


def plot_confusion(report: PerClassReport, path: Path) -> None:
    """The matrix (up to MATRIX_MAX_CLASSES classes), else the most-confused pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(report.classes)
    c = np.asarray(report.confusion, np.int64)
    if k <= MATRIX_MAX_CLASSES:
        side = max(5.0, 0.45 * k + 2.5)
        fig, ax = plt.subplots(figsize=(side + 1.2, side))
        shares = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true class",
               title=f"confusion: {int(np.trace(c))} of {int(c.sum())} right (rows: shares of each class)")
        ax.set_xticklabels(report.classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticklabels(report.classes, fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if c[i, j]:
                        ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if shares[i, j] > 0.5 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    else:
        pairs = report.confused_pairs()
        support = dict(zip(report.classes, c.sum(axis=1)))
        fig, ax = plt.subplots(figsize=(10, 0.32 * max(len(pairs), 1) + 1.6))
        labels = [f"{t} -> {p}" for t, p, _ in pairs]
        counts = [n for _, _, n in pairs]
        ax.barh(range(len(pairs)), counts, color="tab:red")
        ax.set_yticks(range(len(pairs)), labels, fontsize=8)
        ax.invert_yaxis()
        for y, (t, _, n) in enumerate(pairs):
            ax.text(n, y, f" {n} ({100 * n / max(support[t], 1):.0f}% of {t})", va="center", fontsize=7)
        ax.set(xlabel="images (true class -> predicted class)",
               title=f"the {len(pairs)} most-confused pairs of {k} classes ({int(np.trace(c))} of {int(c.sum())} "
                     "right); every cell: confusion.csv")
        ax.margins(x=0.25)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)


def read_per_class(folder: Path) -> list[dict[str, Any]]:
    """per_class.csv of a run (or eval.only) folder; RunDirError naming the file when absent or malformed."""
    path = Path(folder) / PER_CLASS_FILE
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{**r, "support": int(r["support"]), **{c: float(r[c]) for c in COLUMNS[2:6]}} for r in rows]
    except FileNotFoundError:
        raise RunDirError(f"{path}: no per-class report (the final evaluation and eval.only write it)") from None
    except (KeyError, ValueError, csv.Error) as exc:
        raise RunDirError(f"{path}: malformed per-class report ({exc})") from None


def differences(here: list[dict[str, Any]], there: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class present in both: recall and F1 in each and recall's change (there - here), largest change first."""
    theirs = {r["class"]: r for r in there}
    rows = [{"class": r["class"], "support": r["support"], "recall_a": r["recall"], "recall_b": theirs[r["class"]]["recall"],
             "f1_a": r["f1"], "f1_b": theirs[r["class"]]["f1"],
             "change": theirs[r["class"]]["recall"] - r["recall"]} for r in here if r["class"] in theirs]
    return sorted(rows, key=lambda r: -abs(r["change"]))
