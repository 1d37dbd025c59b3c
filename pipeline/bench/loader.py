"""`bench loader`: the input pipeline alone, per backend, and the DALI graph cut after each stage."""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

import torch

from pipeline.bench.measure import batch_consumer, measure
from pipeline.config import Config
from pipeline.data import Loader, build_loader, load_image_sets
from pipeline.data.dali_graph import STAGES
from pipeline.training.precision import build_precision

log = logging.getLogger(__name__)


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
    backends = args.backends or loader_backends(cfg)
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
    if args.stages and images is not None:
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
        for row in rows:
            row["vs_torchvision"] = row["images_per_sec"]["median"] / baseline["images_per_sec"]["median"]
    return rows
