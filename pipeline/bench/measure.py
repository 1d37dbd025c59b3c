"""Timing: images/sec of a callable over repeated windows, warm-up excluded, device synchronized at the edges."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterator

import torch

from pipeline.data import Loader
from pipeline.distributed import synchronize


def measure(run: Callable[[int], int], *, warmup: int, steps: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Images/sec of `run(n)` (which processes n steps and returns the images it processed)."""
    if warmup:
        run(warmup)
    rates = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        images = run(steps)
        synchronize(device)
        rates.append(images / (time.perf_counter() - t0))
    return summarize(rates)


def summarize(rates: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "repeats": rates}


def endless(loader: Loader) -> Iterator:
    """Batches from `loader`, epoch after epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the loader yields no batches")


def batch_consumer(loader: Loader) -> Callable[[int], int]:
    """A `run(n)` that takes n batches from `loader` and counts their images."""
    it = endless(loader)

    def run(n: int) -> int:
        images = 0
        for _ in range(n):
            x, _y = next(it)
            images += len(x)
        return images

    return run
