"""`bench train` (end to end: real vs synthetic input) and `bench scaling` (the same at 1..N processes)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline import distributed
from pipeline.bench.measure import endless, measure, summarize
from pipeline.components import build_components
from pipeline.config import Config
from pipeline.constants import REPO_ROOT
from pipeline.data import build_loader
from pipeline.distributed import DistInfo
from pipeline.precision import resolve_precision
from pipeline.step import train_step

log = logging.getLogger(__name__)


def bench_train(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> list[dict[str, Any]]:
    """End-to-end steps with synthetic input, then the same steps with the configured loader.

    Model, optimizer, precision and the real loader come from `build_components`, as in training.
    """
    parts = build_components(cfg, dist, with_eval=False)
    loaders = {"synthetic": build_loader(cfg.data, backend="synthetic", images=None, train=True,
                                         batch_size=parts.local_batch, rank=dist.rank, world_size=dist.world_size,
                                         seed=cfg.train.seed, device=dist.device, dtype=parts.precision.dtype,
                                         num_classes=cfg.model.num_classes)}
    if cfg.data.source != "synthetic":
        loaders["real"] = parts.train_loader
    runners = {}
    for name, loader in loaders.items():
        batches = endless(loader)

        def run(n: int, batches=batches) -> int:
            for _ in range(n):
                train_step(parts.wrapped, parts.optimizer, parts.precision, *next(batches))
            return n * parts.local_batch

        runners[name] = run
    # One after the other, each alone: interleaving would let one loader's prefetching run
    # (or sit ready) during the other's timing.
    rates = {name: measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=dist.device)["repeats"]
             for name, run in runners.items()}
    row: dict[str, Any] = {"model": cfg.model.name, "source": cfg.data.source, "processes": dist.world_size,
                           "global_batch_size": cfg.train.global_batch_size,
                           "precision": resolve_precision(cfg.train.precision, dist.device), "size": cfg.data.train.crop}
    for name, values in rates.items():
        local = torch.tensor(values, dtype=torch.float64)
        total = distributed.all_reduce_sum(local.clone()).tolist()  # global = sum over processes
        row[f"{name}_images_per_sec"] = summarize(total)
        row[f"{name}_images_per_sec_per_process"] = summarize([t / dist.world_size for t in total])
    if "real" in rates:
        real, synth = row["real_images_per_sec"]["median"], row["synthetic_images_per_sec"]["median"]
        row["real_over_synthetic"] = real / synth
        row["data_stall_share"] = max(0.0, 1.0 - real / synth)
    if dist.is_main:
        log.info("train %s x%d: real %s img/s, synthetic %.0f img/s%s", cfg.model.name, dist.world_size,
                 f"{row['real_images_per_sec']['median']:.0f}" if "real" in rates else "-",
                 row["synthetic_images_per_sec"]["median"],
                 f", data stall {100 * row['data_stall_share']:.1f}%" if "real" in rates else "")
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
