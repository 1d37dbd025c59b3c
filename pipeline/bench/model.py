"""`bench model`: the training step alone on a device-resident batch: the config's own, or a matrix of settings.

    python -m pipeline.bench model configs/quickstart.yaml          # what the config trains: its model,
                                                                    # precision, channels_last, compile, batch
    python -m pipeline.bench model configs/quickstart.yaml --all    # every model x fp32,bf16 x both layouts
    python -m pipeline.bench model --models squeezenet1_0,resnet50 --precisions bf16   # one dimension each

Before measuring, each setting is built and a few eager steps of it are timed (after an untimed one),
and one line says what will be measured and about how long: their median step x the steps each
setting runs (warm-up + repeats x steps), summed. Compilation (`--compile` other than off) is not in
the estimate.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from models import build_model
from pipeline.bench.measure import measure
from pipeline.distributed import synchronize
from pipeline.config import MODEL_NAMES, Config
from pipeline.training.optim import build_optimizer
from pipeline.training.precision import build_precision, resolve_precision
from pipeline.training.step import train_step

log = logging.getLogger(__name__)

# --all: every registered network at these precisions, in both memory layouts (at the config's compile
# mode and batch unless --compile / --batch-sizes say otherwise).
ALL_PRECISIONS = ("fp32", "bf16")
FORMATS = ("contiguous", "channels_last")


@dataclass(frozen=True)
class Setting:
    """One row of `bench model`: a network trained at one precision, memory format, compile mode and batch."""

    model: str
    precision: str
    memory_format: str
    compile: str
    batch_size: int

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    @property
    def compile_mode(self) -> str:
        """torch.compile's mode ("off": eager); "on" means the default mode."""
        return "default" if self.compile == "on" else self.compile


def settings(cfg: Config, args: argparse.Namespace, device: torch.device) -> list[Setting]:
    """What to measure: the config's own training step (its model and precision, channels_last as the trainer
    wraps it, its compile mode and global batch); with --all every model x ALL_PRECISIONS x FORMATS.
    --models, --precisions, --formats, --compile and --batch-sizes replace their dimension either way."""
    every = bool(args.all)
    models = args.models or (list(MODEL_NAMES) if every else [cfg.model.name])
    precisions = args.precisions or (list(ALL_PRECISIONS) if every
                                     else [resolve_precision(cfg.train.precision, device)])
    formats = args.formats or (list(FORMATS) if every else ["channels_last"])
    matrix = itertools.product(models, precisions, formats, args.compile or [cfg.train.compile],
                               args.batch_sizes or [cfg.train.global_batch_size])
    return [Setting(*values) for values in matrix]


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


def build(setting: Setting, cfg: Config, side: int, device: torch.device, compile: bool = True) -> Callable[[int], int]:
    """The `run(n)` of a setting: its model (compiled unless `compile` is False), optimizer and synthetic batch."""
    torch.manual_seed(0)
    model = build_model(setting.model, cfg.model.num_classes).to(device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode = setting.compile_mode if compile else "off"
    wrapped = torch.compile(model, mode=None if mode == "default" else mode) if mode != "off" else model
    precision = build_precision(setting.precision, device)
    optimizer = build_optimizer(cfg.optim, model, setting.batch_size, device)
    images, labels = synthetic_batch(setting.batch_size, side, cfg.model.num_classes, device, precision.dtype,
                                     setting.channels_last)
    return step_runner(wrapped, optimizer, precision, images, labels)


# Steps timed one by one (after an untimed one) for the estimate; their median is the step it uses, so one
# step slowed by a neighbour's burst on a shared machine does not turn seconds into minutes.
PROBE_STEPS = 3


def timed_step(setting: Setting, cfg: Config, side: int, device: torch.device) -> float:
    """Seconds of an eager training step of `setting`: the median of PROBE_STEPS steps timed one by one, after
    an untimed first one (allocation, autotuning)."""
    run = build(setting, cfg, side, device, compile=False)
    run(1)
    times = []
    for _ in range(PROBE_STEPS):
        synchronize(device)
        started = time.perf_counter()
        run(1)
        synchronize(device)
        times.append(time.perf_counter() - started)
    del run
    gc.collect()
    return statistics.median(times)


def describe_duration(seconds: float) -> str:
    """'under 1 s', '45 s', '9 min 40 s', '1 h 05 min'."""
    if seconds < 1:
        return "under 1 s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def describe_settings(chosen: list[Setting], side: int) -> str:
    """'squeezenet_bypass fp32 channels_last, compile off, batch 64, 32 px' or '20 settings (5 models x 2 ...)'."""
    def values(attr: str) -> list[Any]:
        return list(dict.fromkeys(getattr(s, attr) for s in chosen))

    if len(chosen) == 1:
        (s,) = chosen
        return f"{s.model} {s.precision} {s.memory_format}, compile {s.compile}, batch {s.batch_size}, {side} px"
    parts = [f"{len(values(attr))} {what}" for attr, what in (("model", "models"), ("precision", "precisions"),
                                                               ("memory_format", "memory formats"),
                                                               ("compile", "compile modes"),
                                                               ("batch_size", "batch sizes")) if len(values(attr)) > 1]
    fixed = [f"{what} {values(attr)[0]}" for attr, what in (("model", "model"), ("precision", "precision"),
                                                            ("memory_format", "format"), ("compile", "compile"),
                                                            ("batch_size", "batch")) if len(values(attr)) == 1]
    return f"{len(chosen)} settings ({' x '.join(parts)}{', ' if fixed else ''}{', '.join(fixed)}, {side} px)"


def announce(chosen: list[Setting], cfg: Config, args: argparse.Namespace, side: int, device: torch.device) -> float:
    """Time one step of each setting and log what will be measured and about how long; returns the estimate (s)."""
    steps = args.warmup + args.repeats * args.steps
    step_seconds = [timed_step(s, cfg, side, device) for s in chosen]
    estimate = steps * sum(step_seconds)
    compiled = sum(s.compile_mode != "off" for s in chosen)
    log.info("bench model: %s; %d steps each (%d warm-up + %d x %d): about %s, from a timed step of each "
             "(%s)%s%s", describe_settings(chosen, side), steps, args.warmup, args.repeats, args.steps,
             describe_duration(estimate), ", ".join(f"{1000 * t:.0f} ms" for t in step_seconds[:6])
             + (", ..." if len(step_seconds) > 6 else ""),
             f"; plus compiling {compiled} setting(s)" if compiled else "",
             "" if args.all or len(chosen) > 1 else "; --all measures every model, precision and memory format")
    return estimate


def bench_model(cfg: Config, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    side = args.size or cfg.data.train.crop
    chosen = settings(cfg, args, device)
    announce(chosen, cfg, args, side, device)
    rows = []
    for setting in chosen:
        run = build(setting, cfg, side, device)
        result = measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)
        row = {"model": setting.model, "precision": setting.precision, "memory_format": setting.memory_format,
               "compile": setting.compile, "batch_size": setting.batch_size, "size": side, "images_per_sec": result}
        if device.type == "cuda":
            row["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
        rows.append(row)
        log.info("model %-18s %-4s %-13s compile=%-3s batch %4d: %9.0f img/s (%.0f-%.0f)", setting.model,
                 setting.precision, setting.memory_format, setting.compile, setting.batch_size, result["median"],
                 result["min"], result["max"])
        del run
        if setting.compile_mode != "off":
            torch._dynamo.reset()
        gc.collect()
    return rows
