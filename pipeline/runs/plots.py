"""curves.png: training loss and validation accuracy against epochs, drawn from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.files import atomic_open


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train = [r for r in records if "train/loss" in r]
    val = [r for r in records if "val/top1" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["epoch"] for r in train], [r["train/loss"] for r in train], lw=1)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    if val:
        epochs = [r["epoch"] for r in val]
        ax_acc.plot(epochs, [100 * r["val/top1"] for r in val], marker="o", ms=3, label="top-1")
        ax_acc.plot(epochs, [100 * r["val/top5"] for r in val], marker=".", ms=3, alpha=0.6, label="top-5")
        best = max(val, key=lambda r: r["val/top1"])
        ax_acc.plot([best["epoch"]], [100 * best["val/top1"]], "k*", ms=9, label="best top-1")
        ax_acc.legend(loc="lower right")
        acc_title = (f"validation accuracy: final {100 * val[-1]['val/top1']:.2f}%, "
                     f"best {100 * best['val/top1']:.2f}% (epoch {best['epoch']:g})")
    else:
        acc_title = "validation accuracy (no evaluation yet)"
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=acc_title)
    ax_acc.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path) as fh:  # curves.png is redrawn at every ending: never half a picture
        fig.savefig(fh, dpi=110, format="png")
    plt.close(fig)
