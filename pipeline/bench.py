"""Throughput benchmarks: how many images per second each part delivers, and where the time goes.

    python -m pipeline.bench loader  [CONFIG] [key=value ...]   # input pipeline alone, per backend
    python -m pipeline.bench model   [CONFIG] [key=value ...]   # training step on synthetic input
    python -m pipeline.bench train   [CONFIG] [key=value ...]   # end to end, real vs synthetic input
    python -m pipeline.bench scaling [CONFIG] [key=value ...]   # `train` at 1..N processes (torchrun)
    python -m pipeline.bench report  [DIR]                      # the tables of every results.json in DIR

Options (before or after the overrides): --steps N, --warmup N, --repeats N, --out DIR, and per
kind --backends, --models/--precisions/--formats/--compile/--batch-sizes/--size, --nproc.

Method: warm-up steps are run and discarded (DALI buffer growth, cudnn autotuning, compilation);
each repeat times `steps` steps between two device synchronizations; images/sec = images
processed / wall time; the median of the repeats is quoted with the min-max spread. Backends
and configurations are measured one after another in the same process, each alone (interleaving
them would let one loader's background prefetching run during another's timing), so their
ratios come from one run. Every result file records the machine, the versions, the git revision and the
exact settings. Outputs: a table on the console, results.json and chart.png in --out (default
bench-results/<kind>-<time>/), and a W&B `benchmark` job unless wandb.mode=disabled.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from models import build_model, list_models
from pipeline import distributed
from pipeline.config import Config, ConfigError, config_from_cli, split_args
from pipeline.envinfo import REPO_ROOT, describe, environment
from pipeline.metrics import synchronize
from pipeline.optim import build_optimizer
from pipeline.precision import build_precision, resolve_precision
from pipeline.trainer import train_step, wrap_model

log = logging.getLogger("pipeline.bench")
KINDS = ("loader", "model", "train", "scaling", "report")


# ------------------------------------------------------------------------------- measuring


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


def endless(loader) -> Iterator:
    """Batches from `loader`, epoch after epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the loader yields no batches")


def batch_consumer(loader) -> Callable[[int], int]:
    it = endless(loader)

    def run(n: int) -> int:
        images = 0
        for _ in range(n):
            x, _y = next(it)
            images += x.shape[0]
        return images

    return run


# --------------------------------------------------------------------------------- loader


def loader_backends(cfg: Config) -> list[str]:
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


def synthetic_loader(cfg: Config, batch_size: int, device: torch.device, dtype: torch.dtype, rank: int = 0,
                     world_size: int = 1):
    """The input ceiling: the configured data section with random, device-resident images."""
    from pipeline.data import build_loader

    return build_loader(cfg.data.model_copy(update={"source": "synthetic"}), images=None, train=True,
                        batch_size=batch_size, rank=rank, world_size=world_size, seed=cfg.train.seed,
                        device=device, dtype=dtype, num_classes=cfg.model.num_classes)


def build_backend(name: str, cfg: Config, images, batch_size: int, device: torch.device, dtype: torch.dtype):
    from pipeline.data import build_loader
    from pipeline.data.dali_graph import AugmentSpec
    from pipeline.data.loader import dali_output_dtype
    from pipeline.data.sampler import ShardedBatches
    from pipeline.data.torchvision_loader import TorchvisionLoader

    if name == "synthetic":
        return synthetic_loader(cfg, batch_size, device, dtype)
    if name == "torchvision":
        # The same plan and augmentation build_loader gives the DALI training loader below.
        plan = ShardedBatches(len(images), batch_size, 0, 1, shuffle=True, drop_last=True, seed=cfg.train.seed)
        spec = AugmentSpec.for_train(cfg.data.train, cfg.data.std_eps, dali_output_dtype(dtype))
        return TorchvisionLoader(images, plan, spec, device=device, dtype=dtype, num_workers=cfg.data.num_threads,
                                 seed=cfg.train.seed)
    data_cfg = cfg.data.model_copy(update={"device": name.removeprefix("dali-")})
    return build_loader(data_cfg, images=images, train=True, batch_size=batch_size, rank=0, world_size=1,
                        seed=cfg.train.seed, device=device, dtype=dtype, num_classes=cfg.model.num_classes)


def bench_dali_stages(cfg: Config, args: argparse.Namespace, images, dali_device: str,
                      dtype: torch.dtype) -> list[dict[str, Any]]:
    """Pipeline-only throughput of each cumulative graph prefix: where the DALI time goes."""
    from pipeline.data.dali_graph import STAGES, AugmentSpec, build_pipeline
    from pipeline.data.loader import _BatchSource, dali_output_dtype
    from pipeline.data.sampler import ShardedBatches

    batch = cfg.train.global_batch_size
    spec = AugmentSpec.for_train(cfg.data.train, cfg.data.std_eps, dali_output_dtype(dtype))
    device = torch.device("cuda", 0) if dali_device == "gpu" else torch.device("cpu")
    rows = []
    for stage in STAGES:
        plan = ShardedBatches(len(images), batch, 0, 1, shuffle=True, drop_last=True, seed=cfg.train.seed)
        pipe = build_pipeline(_BatchSource(images, plan, 0, 4), spec, encoded=images.is_encoded, device=dali_device,
                              device_id=0 if dali_device == "gpu" else None, batch_size=batch,
                              num_threads=cfg.data.num_threads, prefetch_queue_depth=cfg.data.prefetch_queue_depth,
                              seed=cfg.train.seed, stop_after=None if stage == "full" else stage)

        def run(n: int, pipe=pipe) -> int:
            done = 0
            while done < n:
                try:
                    pipe.run()
                except StopIteration:
                    pipe.reset()
                    continue
                done += 1
            return n * batch

        result = measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)
        rows.append({"backend": f"dali-{dali_device}:{stage}", "source": cfg.data.source, "batch_size": batch,
                     "workers_or_threads": cfg.data.num_threads, "dtype": spec.output_dtype, "images_per_sec": result})
        log.info("stage %-8s %10.0f img/s", stage, result["median"])
        del pipe
        gc.collect()
    return rows


def bench_loader(cfg: Config, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    from pipeline.data import load_image_sets

    dtype = build_precision(cfg.train.precision, device).dtype
    images = None if cfg.data.source == "synthetic" else load_image_sets(cfg.data)[0]
    batch = cfg.train.global_batch_size
    rows = []
    for name in args.backends or loader_backends(cfg):
        loader = build_backend(name, cfg, images, batch, device, dtype)
        result = measure(batch_consumer(loader), warmup=args.warmup, steps=args.steps, repeats=args.repeats,
                         device=device)
        rows.append({"backend": name, "source": cfg.data.source, "batch_size": batch,
                     "workers_or_threads": 0 if name == "synthetic" else cfg.data.num_threads,
                     "dtype": str(dtype).removeprefix("torch."), "images_per_sec": result})
        log.info("loader %-12s %10.0f img/s (%.0f-%.0f)", name, result["median"], result["min"], result["max"])
        del loader
        gc.collect()
    if args.stages and images is not None:
        for name in args.backends or loader_backends(cfg):
            if name.startswith("dali-"):
                rows += bench_dali_stages(cfg, args, images, name.split("-")[1], dtype)
    baseline = next((r for r in rows if r["backend"] == "torchvision"), None)
    for row in rows:
        if baseline:
            row["vs_torchvision"] = row["images_per_sec"]["median"] / baseline["images_per_sec"]["median"]
    return rows


# ---------------------------------------------------------------------------------- model


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
        wrapped = torch.compile(model) if comp == "on" else model
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
        if comp == "on":
            torch._dynamo.reset()
        gc.collect()
    return rows


# ---------------------------------------------------------------------------------- train


def bench_train(cfg: Config, args: argparse.Namespace, dist: distributed.DistInfo) -> list[dict[str, Any]]:
    """End-to-end steps with synthetic input, then the same steps with the configured loader."""
    from pipeline.data import build_loader, load_image_sets

    device = dist.device
    precision = build_precision(cfg.train.precision, device)
    local_batch = cfg.train.global_batch_size // dist.world_size
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.name, cfg.model.num_classes, dropout=cfg.model.dropout)
    wrapped = wrap_model(model, cfg, dist)
    optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size, device)
    loaders = {"synthetic": synthetic_loader(cfg, local_batch, device, precision.dtype, dist.rank, dist.world_size)}
    if cfg.data.source != "synthetic":
        images = load_image_sets(cfg.data)[0]
        loaders["real"] = build_loader(cfg.data, images=images, train=True, batch_size=local_batch,
                                       rank=dist.rank, world_size=dist.world_size, seed=cfg.train.seed,
                                       device=device, dtype=precision.dtype, num_classes=cfg.model.num_classes)
    runners = {}
    for name, loader in loaders.items():
        batches = endless(loader)

        def run(n: int, batches=batches) -> int:
            for _ in range(n):
                train_step(wrapped, optimizer, precision, *next(batches))
            return n * local_batch

        runners[name] = run
    # One after the other, each alone: interleaving would let one loader's prefetching run
    # (or sit ready) during the other's timing.
    rates = {name: measure(run, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)["repeats"]
             for name, run in runners.items()}
    row: dict[str, Any] = {"model": cfg.model.name, "source": cfg.data.source, "processes": dist.world_size,
                           "global_batch_size": cfg.train.global_batch_size,
                           "precision": resolve_precision(cfg.train.precision, device), "size": cfg.data.train.crop}
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


# -------------------------------------------------------------------------------- scaling


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


# ---------------------------------------------------------------------------- roofline


def memory_traffic_bytes(model_name: str, num_classes: int, side: int, dtype: torch.dtype, batch: int,
                         device: torch.device) -> dict[str, float]:
    """Bytes one training image moves through device memory if every op streams its tensors once.

    Counts the bytes of every tensor each aten op reads and writes during a forward, backward and
    SGD step (views excluded), at batch 1 and 2: the difference is the per-image activation
    traffic, the rest is weight traffic, shared by the batch. Unfused kernels move about this much;
    fused ones less, so it is an estimate, not a measurement.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                for t in tree_flatten((args, kwargs, out))[0]:
                    if isinstance(t, torch.Tensor):
                        self.bytes += t.numel() * t.element_size()
            return out

    def traffic(n: int) -> int:
        torch.manual_seed(0)
        model = build_model(model_name, num_classes).to(device=device, dtype=dtype, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
        x = torch.randn(n, 3, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        y = torch.zeros(n, dtype=torch.long, device=device)
        for _ in range(2):  # the second step has momentum buffers, like every later one
            with Counter() as counter:
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return counter.bytes

    one, two = traffic(1), traffic(2)
    per_image, weights = two - one, 2 * one - two
    return {"activation_bytes_per_image": per_image, "weight_bytes_per_step": weights,
            "bytes_per_image": per_image + weights / batch}


def copy_bandwidth(device: torch.device, megabytes: int = 1024, repeats: int = 10) -> float:
    """Device memory bandwidth in bytes/s from a large tensor copy (bytes read + written)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.empty(n, device=device), torch.empty(n, device=device)
    dst.copy_(src)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    synchronize(device)
    return 2 * n * 4 * repeats / (time.perf_counter() - t0)


def roofline(row: dict[str, Any], device: torch.device, num_classes: int) -> dict[str, Any]:
    dtype = build_precision(row["precision"], device).dtype
    traffic = memory_traffic_bytes(row["model"], num_classes, row["size"], dtype, row["batch_size"], device)
    bandwidth = copy_bandwidth(device)
    bound = bandwidth / traffic["bytes_per_image"]
    return {**traffic, "bandwidth_bytes_per_sec": bandwidth, "bound_images_per_sec": bound,
            "fraction_of_bound": row["images_per_sec"]["median"] / bound}


# ---------------------------------------------------------------------------------- output


def format_table(kind: str, rows: list[dict[str, Any]]) -> str:
    def rate(r: dict[str, Any]) -> str:
        return f"{r['median']:>10,.0f}  ({r['min']:,.0f}-{r['max']:,.0f})"

    lines = []
    if kind == "loader":
        lines.append(f"{'backend':<12} {'source':<12} {'batch':>5} {'threads':>7}  {'images/s (min-max)':>30}  vs torchvision")
        for r in rows:
            ratio = f"{r['vs_torchvision']:.2f}x" if "vs_torchvision" in r else "-"
            lines.append(f"{r['backend']:<12} {r['source']:<12} {r['batch_size']:>5} {r['workers_or_threads']:>7}  "
                         f"{rate(r['images_per_sec']):>30}  {ratio}")
    elif kind == "model":
        lines.append(f"{'model':<18} {'prec':<5} {'format':<14} {'compile':<7} {'batch':>5} {'size':>4}  {'images/s (min-max)':>30}")
        for r in rows:
            lines.append(f"{r['model']:<18} {r['precision']:<5} {r['memory_format']:<14} {r['compile']:<7} "
                         f"{r['batch_size']:>5} {r['size']:>4}  {rate(r['images_per_sec']):>30}")
            if "roofline" in r:
                rl = r["roofline"]
                lines.append(f"    roofline: {rl['bytes_per_image'] / 2**20:.1f} MiB/image moved, "
                             f"{rl['bandwidth_bytes_per_sec'] / 1e12:.2f} TB/s copy bandwidth -> bound "
                             f"{rl['bound_images_per_sec']:,.0f} img/s; measured = {100 * rl['fraction_of_bound']:.0f}% of it")
    else:  # train / scaling
        lines.append(f"{'model':<18} {'procs':>5} {'source':<12} {'real img/s (min-max)':>30} "
                     f"{'synthetic img/s (min-max)':>30} {'per proc':>9} {'stall':>6} {'effic.':>6}")
        for r in rows:
            real = rate(r["real_images_per_sec"]) if "real_images_per_sec" in r else "-"
            per = r.get("real_images_per_sec_per_process", r["synthetic_images_per_sec_per_process"])["median"]
            stall = f"{100 * r['data_stall_share']:.1f}%" if "data_stall_share" in r else "-"
            eff = r.get("real_scaling_efficiency", r.get("synthetic_scaling_efficiency"))
            lines.append(f"{r['model']:<18} {r['processes']:>5} {r['source']:<12} {real:>30} "
                         f"{rate(r['synthetic_images_per_sec']):>30} {per:>9,.0f} {stall:>6} "
                         f"{'-' if eff is None else f'{100 * eff:.0f}%':>6}")
    return "\n".join(lines)


def chart(kind: str, rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if kind == "loader":
        labels = [r["backend"] for r in rows]
        stats = [r["images_per_sec"] for r in rows]
    elif kind == "model":
        labels = [f"{r['model']} {r['precision']} {r['memory_format']} c={r['compile']} b{r['batch_size']}" for r in rows]
        stats = [r["images_per_sec"] for r in rows]
    else:
        labels, stats = [], []
        for r in rows:
            for feed in ("real", "synthetic"):
                if f"{feed}_images_per_sec" in r:
                    labels.append(f"{feed} x{r['processes']}")
                    stats.append(r[f"{feed}_images_per_sec"])
    medians = [s["median"] for s in stats]
    errors = [[m - s["min"] for m, s in zip(medians, stats)], [s["max"] - m for m, s in zip(medians, stats)]]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    ax.barh(range(len(labels)), medians, xerr=errors, capsize=3, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("images / second (median, min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(kind: str, rows: list[dict[str, Any]], cfg: Config, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    result = {
        "kind": kind,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m pipeline.bench", *sys.argv[1:]]),
        "environment": env,
        "settings": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "config": cfg.to_dict()},
        "results": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    chart(kind, rows, out / "chart.png", f"{kind}: {describe(env)}")
    return result


def log_to_wandb(cfg: Config, result: dict[str, Any], out: Path) -> None:
    from pipeline.tracking import Tracker

    tracker = Tracker(cfg.wandb, enabled=True, run_dir=out, run_name=out.name, experiment=cfg.name,
                      config={**cfg.to_dict(), "bench": result["settings"]}, environment=result["environment"],
                      job_type="benchmark")
    if tracker.run is None:
        return
    import wandb

    rows = result["results"]
    flat = [{k: (v["median"] if isinstance(v, dict) and "median" in v else v) for k, v in r.items()
             if not isinstance(v, dict) or "median" in v} for r in rows]
    columns = sorted({k for r in flat for k in r})
    tracker.run.log({f"benchmark/{result['kind']}": wandb.Table(columns=columns,
                                                                 data=[[r.get(c) for c in columns] for r in flat])})
    tracker.finish()


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, str | None, list[str]]:
    def csv(kind=str):
        return lambda text: [kind(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="discarded steps first (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is quoted (default 5)")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/<kind>-<time>)")
    parser.add_argument("--backends", type=csv(), help="loader: dali-gpu,dali-cpu,torchvision,synthetic")
    parser.add_argument("--stages", action="store_true",
                        help="loader: also time each DALI graph prefix (read, decode, resize, full)")
    parser.add_argument("--models", type=csv(), help=f"model: from {','.join(list_models())}")
    parser.add_argument("--precisions", type=csv(), help="model: fp32,bf16,fp16 (default fp32,bf16)")
    parser.add_argument("--formats", type=csv(), help="model: contiguous,channels_last (default both)")
    parser.add_argument("--compile", type=csv(), help="model: off,on (default off)")
    parser.add_argument("--batch-sizes", type=csv(int), help="model: batch sizes (default train.global_batch_size)")
    parser.add_argument("--size", type=int, help="model: input side (default data.train.crop)")
    parser.add_argument("--nproc", type=csv(int), help="scaling: process counts (default 1,2)")
    parser.add_argument("rest", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    cfg_path, overrides = split_args(args.rest)
    return args, cfg_path, overrides


def report(folder: Path) -> str:
    """The tables of every results.json under `folder`, with the machine they were measured on."""
    parts = []
    for path in sorted(folder.rglob("results.json")):
        result = json.loads(path.read_text())
        parts.append(f"== {result['kind']}: {path.parent.name} ({result['created']})\n"
                     f"{describe(result['environment'])}\n{format_table(result['kind'], result['results'])}")
    return "\n\n".join(parts) if parts else f"no results.json under {folder}"


def main(argv: list[str] | None = None) -> int:
    from pipeline.rundir import setup_logging

    args, cfg_path, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.kind == "report":  # python -m pipeline.bench report DIR
        print(report(Path(cfg_path or args.out or REPO_ROOT / "bench-results")))
        return 0
    cfg = config_from_cli([cfg_path, *overrides] if cfg_path else overrides)
    if cfg is None:
        return 2
    dist = distributed.init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    setup_logging(dist.rank)
    torch.backends.cudnn.benchmark = True  # as in training: autotuned convolutions (during warm-up)
    try:
        cfg.check_world_size(dist.world_size)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = args.out or REPO_ROOT / "bench-results" / f"{args.kind}-{stamp}"
        if dist.is_main:
            log.info("%s benchmark on %s", args.kind, describe(environment()))
        if args.kind == "loader":
            rows = bench_loader(cfg, args, dist.device)
        elif args.kind == "model":
            rows = bench_model(cfg, args, dist.device)
            if dist.device.type == "cuda":
                best = max(rows, key=lambda r: r["images_per_sec"]["median"])
                best["roofline"] = roofline(best, dist.device, cfg.model.num_classes)
        elif args.kind == "train":
            rows = bench_train(cfg, args, dist)
        else:
            rows = bench_scaling(cfg_path, overrides, args, out)
        if dist.is_main:
            result = write_results(args.kind, rows, cfg, args, out)
            print(format_table(args.kind, rows))
            print(f"results: {out / 'results.json'}, chart: {out / 'chart.png'}")
            if cfg.wandb.mode != "disabled":
                log_to_wandb(cfg, result, out)
        return 0
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.destroy()


if __name__ == "__main__":
    sys.exit(main())
