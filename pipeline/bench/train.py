"""`bench train` (end to end: real vs synthetic input) and `bench scaling` (the same at 1..N processes)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline import distributed
from pipeline.bench.measure import endless, measure, summarize
from pipeline.config import Config
from pipeline.constants import REPO_ROOT
from pipeline.data import Loader, build_loader, load_image_sets
from pipeline.distributed import DistInfo
from pipeline.training.components import Components, build_components, build_training_step
from pipeline.training.precision import resolve_precision

log = logging.getLogger(__name__)


FEEDS = ("synthetic", "real", "torchvision")  # device-resident random images, the configured DALI loader, the baseline


def training_feeds(cfg: Config, parts: Components, dist: DistInfo, feeds: list[str]) -> dict[str, Loader]:
    """The loaders each end-to-end measurement trains from, all with the same batch and dtype."""
    common = dict(train=True, batch_size=parts.local_batch, rank=dist.rank, world_size=dist.world_size,
                  seed=cfg.train.seed, device=dist.device, dtype=parts.precision.dtype,
                  num_classes=cfg.model.num_classes, compile_standardize=cfg.train.compile != "off")
    loaders: dict[str, Loader] = {}
    for feed in feeds:
        if feed == "synthetic":
            loaders[feed] = build_loader(cfg.data, backend="synthetic", images=None, **common)
        elif cfg.data.source == "synthetic":
            continue  # no real images to feed
        elif feed == "real":
            loaders[feed] = parts.train_loader
        elif feed == "torchvision":
            images = load_image_sets(cfg.data)[0]
            loaders[feed] = build_loader(cfg.data, backend="torchvision", images=images, **common)
        else:
            raise ValueError(f"unknown feed {feed!r}; choose from {FEEDS}")
    return loaders


def training_rates(cfg: Config, args: argparse.Namespace, dist: DistInfo,
                   feeds: list[str]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Images/sec per repeat of real training steps from each feed, summed over processes.

    Returns ({feed: [images/sec per repeat]}, work): the steps run, and the schedule steps and
    EMA updates they made (equal to the steps: the trainer's step does both). Model, optimizer,
    precision, compile mode and the DALI loader come from `build_components`,
    and the step is the trainer's own (`build_training_step`: model, optimizer, schedule, the
    config's EMA, loss statistics read every logging.log_every steps), so the figure is what
    training gets. Feeds are measured one after the other, each alone: interleaving would let one
    loader's prefetching run (or sit ready) during the other's timing.
    """
    parts = build_components(cfg, dist, with_eval=False)
    step = build_training_step(parts, cfg.train)
    log_every = cfg.logging.log_every
    rates = {}
    done = 0  # steps so far, over every feed
    for name, loader in training_feeds(cfg, parts, dist, feeds).items():
        batches = endless(loader)

        def run(n: int, batches=batches) -> int:
            nonlocal done
            for _ in range(n):
                step(*next(batches), done)
                done += 1
                if done % log_every == 0:  # the trainer's logging boundary: the loss statistics are read
                    step.stats.read()
            return n * parts.local_batch

        local = measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=dist.device)
        rates[name] = distributed.all_reduce_sum(torch.tensor(local["repeats"], dtype=torch.float64)).tolist()
        log.info("  training steps fed by %s input: %s img/s per process", name, f"{local['median']:,.0f}")
        del batches, loader
        gc.collect()
    # What the step did, for the record: the schedule and the EMA advanced once per step, as in training.
    work = {"steps": done, "schedule_steps": parts.scheduler.last_epoch,
            "ema_updates": int(parts.ema.n_averaged) if parts.ema is not None else 0}
    return rates, work


def bench_train(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> list[dict[str, Any]]:
    """End-to-end steps with synthetic input, the configured DALI loader and the torchvision baseline."""
    rates, work = training_rates(cfg, args, dist, args.feeds or list(FEEDS))
    row: dict[str, Any] = {"model": cfg.model.name, "source": cfg.data.source, "processes": dist.world_size,
                           "global_batch_size": cfg.train.global_batch_size, "compile": cfg.train.compile,
                           "precision": resolve_precision(cfg.train.precision, dist.device), "size": cfg.data.train.crop,
                           "ema_decay": cfg.train.ema_decay, "step_work": work}
    for name, total in rates.items():
        row[f"{name}_images_per_sec"] = summarize(total)
        row[f"{name}_images_per_sec_per_process"] = summarize([t / dist.world_size for t in total])
    synth = row["synthetic_images_per_sec"]["median"] if "synthetic" in rates else None
    if "real" in rates and synth:
        real = row["real_images_per_sec"]["median"]
        row["real_over_synthetic"] = real / synth
        row["data_stall_share"] = max(0.0, 1.0 - real / synth)
    if "real" in rates and "torchvision" in rates:
        row["real_over_torchvision"] = row["real_images_per_sec"]["median"] / row["torchvision_images_per_sec"]["median"]
    if dist.is_main:
        log.info("train %s x%d: %s", cfg.model.name, dist.world_size,
                 ", ".join(f"{name} {row[f'{name}_images_per_sec']['median']:,.0f} img/s" for name in rates))
    return [row]


def bench_scaling(cfg_path: str | None, overrides: list[str], args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    rows = []
    for nproc in args.nproc or [1, 2]:
        child_out = out / f"train-x{nproc}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "pipeline.bench", "train", *([cfg_path] if cfg_path else []), *overrides, "wandb.mode=disabled",
               f"--steps={args.steps}", f"--warmup={args.warmup}", f"--repeats={args.repeats}", f"--out={child_out}"]
        log.info("scaling: %d process(es)", nproc)
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scaling run with {nproc} process(es) failed:\n{proc.stderr[-3000:]}")
        row = json.loads((child_out / "results.json").read_text())["results"][0]
        rows.append(row)
    base = rows[0]
    for row in rows:
        for feed in ("real", "synthetic"):
            key = f"{feed}_images_per_sec"
            if key in row:
                ideal = base[key]["median"] * row["processes"] / base["processes"]
                row[f"{feed}_scaling_efficiency"] = row[key]["median"] / ideal
    return rows
