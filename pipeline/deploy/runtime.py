"""Running an exported model: onnxruntime sessions, accuracy through the project's eval graph, latency.

    session = open_session(path, provider="cpu", threads=0)          # 0 threads: onnxruntime's default (all cores)
    loader = eval_images(data_cfg, images, transform, batch_size=64)  # DALI decode, resize, crop -> uint8 NHWC
    result = accuracy(lambda x: session.run(None, {"images": x})[0], loader)   # top1, top5, images
    timing = latency(run, batch=64, side=36, seconds=2.0)            # img/s, p50/p90/p99 ms

Accuracy is measured as training measures it: the same DALI evaluation graph (pipeline/data, the
eval transform of the model) decodes, resizes and crops the run's evaluation split, and the model's
own graph normalizes. Latency: warm-up runs first, then timed runs of one batch (random pixels) until both `min_iters`
runs and `seconds` have passed (or `max_iters` runs); img/s = images / total time, percentiles per run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from pipeline.data.loader import build_loader
from pipeline.data.sources import ImageSet
from pipeline.data.transform import EvalTransform

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    """'cpu', and 'cuda' where onnxruntime-gpu and a GPU are present."""
    import onnxruntime as ort

    found = ort.get_available_providers()
    return [name for name, provider in PROVIDERS.items() if provider in found
            and (name != "cuda" or torch.cuda.is_available())]


def open_session(path: Path, provider: str = "cpu", threads: int = 0) -> Any:
    """An onnxruntime InferenceSession of `path` on `provider` with `threads` intra-op threads (0: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about unused initializers say nothing to a user
    return ort.InferenceSession(str(path), sess_options=options, providers=[PROVIDERS[provider]])


def session_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def eval_images(data_cfg: Any, images: ImageSet, transform: EvalTransform, batch_size: int) -> Any:
    """The eval graph over `images` (this process alone, every image once): uint8 NHWC batches and labels."""
    return build_loader(data_cfg, images=images, train=False, batch_size=batch_size, rank=0, world_size=1, seed=0,
                        device=torch.device("cpu"), dtype=torch.float32, output="uint8", transform=transform)


def accuracy(run: Callable[[np.ndarray], np.ndarray], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Top-1 and top-5 of `run` (uint8 NHWC -> logits) over every batch."""
    top1 = top5 = count = 0
    for images, labels in batches:
        logits = run(np.ascontiguousarray(images.numpy()))
        top = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        truth = labels.numpy()[:, None]
        top1 += int((top[:, 0:1] == truth).sum())
        top5 += int((top == truth).any(axis=1).sum())
        count += len(truth)
    return {"top1": top1 / max(count, 1), "top5": top5 / max(count, 1), "images": count}


def latency(run: Callable[[np.ndarray], Any], batch: int, side: int, *, seconds: float = 2.0, min_iters: int = 10,
            max_iters: int | None = None, warmup: int = 3) -> dict[str, float]:
    """Throughput and latency percentiles of `run` on one batch of random uint8 NHWC pixels: timed runs until
    `min_iters` and `seconds` are both reached, or `max_iters` first."""
    images = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    for _ in range(warmup):
        run(images)
    times: list[float] = []
    started = time.perf_counter()
    while (len(times) < min_iters or time.perf_counter() - started < seconds) and len(times) != max_iters:
        t0 = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"batch": batch, "iterations": len(times), "images_per_sec": batch * len(times) / float(np.sum(times)),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99))}


def torch_runner(module: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Eager PyTorch on the CPU, as the checkpoint row of the export table measures it."""

    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(images)).numpy()

    return run
