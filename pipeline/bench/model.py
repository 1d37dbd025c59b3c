"""`bench model`: the training step alone on a device-resident batch, over a matrix of settings."""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
from typing import Any, Callable

import torch

from models import build_model, list_models
from pipeline.bench.measure import measure
from pipeline.config import Config
from pipeline.training.optim import build_optimizer
from pipeline.training.precision import build_precision
from pipeline.training.step import train_step

log = logging.getLogger(__name__)


def synthetic_batch(batch: int, side: int, num_classes: int, device: torch.device, dtype: torch.dtype,
                    channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, side, side, device=device).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, num_classes, (batch,), device=device)


def step_runner(model, optimizer, precision, images, labels) -> Callable[[int], int]:
    def run(n: int) -> int:
        for _ in range(n):
            train_step(model, optimizer, precision, images, labels)
        return n * images.shape[0]

    return run


def bench_model(cfg: Config, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    side = args.size or cfg.data.train.crop
    rows = []
    matrix = itertools.product(args.models or list_models(), args.precisions or ["fp32", "bf16"],
                               args.formats or ["contiguous", "channels_last"], args.compile or ["off"],
                               args.batch_sizes or [cfg.train.global_batch_size])
    for name, prec, fmt, comp, batch in matrix:
        torch.manual_seed(0)
        model = build_model(name, cfg.model.num_classes).to(device)
        channels_last = fmt == "channels_last"
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        mode = "default" if comp == "on" else comp
        wrapped = torch.compile(model, mode=None if mode == "default" else mode) if mode != "off" else model
        precision = build_precision(prec, device)
        optimizer = build_optimizer(cfg.optim, model, batch, device)
        images, labels = synthetic_batch(batch, side, cfg.model.num_classes, device, precision.dtype, channels_last)
        result = measure(step_runner(wrapped, optimizer, precision, images, labels), warmup=args.warmup,
                         steps=args.steps, repeats=args.repeats, device=device)
        row = {"model": name, "precision": prec, "memory_format": fmt, "compile": comp, "batch_size": batch,
               "size": side, "images_per_sec": result}
        if device.type == "cuda":
            row["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
        rows.append(row)
        log.info("model %-18s %-4s %-13s compile=%-3s batch %4d: %9.0f img/s (%.0f-%.0f)", name, prec, fmt, comp,
                 batch, result["median"], result["min"], result["max"])
        del model, wrapped, optimizer
        if mode != "off":
            torch._dynamo.reset()
        gc.collect()
    return rows
