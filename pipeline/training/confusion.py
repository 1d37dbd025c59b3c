"""Per-class counts of an evaluation: the confusion matrix and top-5 hits per class, summed over ranks.

    counts = ClassCounts(num_classes, device)
    counts.add(logits, labels)            # per batch, on the device: no host read
    confusion, top5_hits = counts.total() # after the split: one all-reduce, numpy on every rank

confusion[t, p] counts the images of class t predicted as p (top-1); top5_hits[t] those of class t
whose label is among the five highest logits. Both are int64: exact at any data-set size. At 1,000
classes the matrix is 8 MB, summed once per evaluation that asks for it (the one that may end the
run, and eval.only): pipeline/training/evaluation.py decides which.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline import distributed


class ClassCounts:
    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)  # true * K + predicted
        self.top5_hits = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = self.num_classes
        top = logits.topk(min(5, k), dim=1).indices
        self.confusion += torch.bincount(labels * k + top[:, 0], minlength=k * k)
        missed = (top != labels[:, None]).all(dim=1)
        self.top5_hits += torch.bincount(labels + k * missed, minlength=2 * k)[:k]  # no mask: no host sync

    def total(self) -> tuple[np.ndarray, np.ndarray]:
        """(confusion K x K, top-5 hits K) over every rank's share of the split."""
        k = self.num_classes
        summed = distributed.all_reduce_sum(torch.cat([self.confusion, self.top5_hits]).cpu()).numpy()
        return summed[:k * k].reshape(k, k), summed[k * k:]
