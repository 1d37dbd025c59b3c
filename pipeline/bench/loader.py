"""`bench loader`: the input pipeline alone, per backend, and the DALI graph cut after each stage."""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

import torch

from pipeline.bench.measure import batch_consumer, measure
from pipeline.bench.report import compared_to_torchvision
from pipeline.config import Config
from pipeline.data import Loader, build_loader, load_image_sets
from pipeline.data.dali_graph import STAGES
from pipeline.data.loader import resolve_dali_device
from pipeline.errors import ConfigError
from pipeline.training.precision import build_precision

log = logging.getLogger(__name__)

# The names --backends takes. `dali` is the DALI backend on data.device (auto: the GPU when there is one).
BACKENDS = {"dali": "DALI on data.device", "dali-gpu": "DALI, GPU operators (mixed decoder)",
            "dali-cpu": "DALI, CPU operators", "torchvision": "torchvision ImageFolder-style DataLoader baseline",
            "synthetic": "random batches made on the device: the ceiling, no work done"}


def loader_backends(cfg: Config) -> list[str]:
    """Every backend this machine can run: dali-gpu (with CUDA), dali-cpu, torchvision, synthetic."""
    names = []
    try:
        import nvidia.dali  # noqa: F401

        if torch.cuda.is_available():
            names.append("dali-gpu")
        names.append("dali-cpu")
    except ImportError:
        log.warning("DALI is not installed: skipping the DALI backends")
    if cfg.data.source != "synthetic":
        names.append("torchvision")
    return names + ["synthetic"]


def resolve_backends(names: list[str], cfg: Config, stages: bool) -> list[str]:
    """--backends as the backends to measure: `dali` becomes dali-<data.device>; ConfigError for what cannot run."""
    resolved: list[str] = []
    for name in names:
        if name not in BACKENDS:  # the command line checks this too; callers from Python get the same message
            raise ConfigError(f"--backends: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        name = f"dali-{resolve_dali_device(cfg.data.device)}" if name == "dali" else name
        if name == "dali-gpu" and not torch.cuda.is_available():
            raise ConfigError("--backends: dali-gpu needs CUDA, and this machine has none; use dali-cpu (or dali)")
        if name == "torchvision" and cfg.data.source == "synthetic":
            raise ConfigError("--backends: torchvision reads image files, and data.source=synthetic has none; "
                              "choose a source with images (e.g. data.source=sample)")
        if name not in resolved:
            resolved.append(name)
    if stages and (cfg.data.source == "synthetic" or not any(n.startswith("dali-") for n in resolved)):
        raise ConfigError("--stages: times the DALI graph cut after each stage, so it needs a DALI backend in "
                          "--backends (dali, dali-cpu or dali-gpu) and a data.source with images")
    return resolved


def backend_loader(name: str, cfg: Config, images, batch_size: int, device: torch.device, dtype: torch.dtype,
                   stop_after: str | None = None) -> Loader:
    """The training loader of backend `name` (dali-gpu, dali-cpu, torchvision, synthetic) on one rank."""
    backend, _, dali_device = name.partition("-")
    data_cfg = cfg.data.model_copy(update={"device": dali_device}) if dali_device else cfg.data
    return build_loader(data_cfg, backend=backend, images=images, train=True, batch_size=batch_size, rank=0,
                        world_size=1, seed=cfg.train.seed, device=device, dtype=dtype,
                        num_classes=cfg.model.num_classes, stop_after=stop_after)


def loader_row(name: str, cfg: Config, batch: int, threads: int, dtype: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"backend": name, "source": cfg.data.source, "batch_size": batch, "workers_or_threads": threads,
            "dtype": dtype, "images_per_sec": result}


def bench_loader(cfg: Config, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    dtype = build_precision(cfg.train.precision, device).dtype
    dtype_name = str(dtype).removeprefix("torch.")
    images = None if cfg.data.source == "synthetic" else load_image_sets(cfg.data)[0]
    batch = cfg.train.global_batch_size
    backends = resolve_backends(args.backends or loader_backends(cfg), cfg, args.stages)
    timing = dict(warmup=args.warmup, steps=args.steps, repeats=args.repeats)
    rows = []
    for name in backends:
        loader = backend_loader(name, cfg, images, batch, device, dtype)
        result = measure(batch_consumer(loader), device=device, **timing)
        threads = 0 if name == "synthetic" else cfg.data.num_threads
        rows.append(loader_row(name, cfg, batch, threads, dtype_name, result))
        log.info("loader %-12s %10.0f img/s (%.0f-%.0f)", name, result["median"], result["min"], result["max"])
        del loader
        gc.collect()
    if args.stages:
        for name in (b for b in backends if b.startswith("dali-")):
            for stage in STAGES:
                loader = backend_loader(name, cfg, images, batch, device, dtype, stop_after=stage)
                # The DALI graph alone, without the hand-off to torch: where the pipeline's time goes.
                result = measure(batch_consumer(loader), device=device, **timing)
                rows.append(loader_row(f"{name}:{stage}", cfg, batch, cfg.data.num_threads, dtype_name, result))
                log.info("stage %-8s %10.0f img/s", stage, result["median"])
                del loader
                gc.collect()
    baseline = next((r for r in rows if r["backend"] == "torchvision"), None)
    if baseline:
        for row in rows:  # only rows that do the baseline's work (synthetic would read 34,000x)
            if compared_to_torchvision(row["backend"]):
                row["vs_torchvision"] = row["images_per_sec"]["median"] / baseline["images_per_sec"]["median"]
    return rows
