"""The command line of `python -m pipeline.bench` (see the package docstring for the kinds and method)."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from pathlib import Path

import torch

import pipeline.bench as package
from models import list_models
from pipeline.config import Config, split_args
from pipeline.constants import BENCH_RESULTS_DIR
from pipeline.distributed import DistInfo
from pipeline.entry import exit_now, run_entry
from pipeline.runs.envinfo import describe, environment

log = logging.getLogger(__name__)
KINDS = ("loader", "model", "train", "scaling", "doctor", "overhead", "report")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, str | None, list[str]]:
    def csv(kind=str):
        return lambda text: [kind(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=package.__doc__,
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
    parser.add_argument("--compile", type=csv(), help="model: off,default,reduce-overhead,max-autotune "
                        "(default off; on = default)")
    parser.add_argument("--batch-sizes", type=csv(int), help="model: batch sizes (default train.global_batch_size)")
    parser.add_argument("--size", type=int, help="model: input side (default data.train.crop)")
    parser.add_argument("--nproc", type=csv(int), help="scaling: process counts (default 1,2)")
    parser.add_argument("--feeds", type=csv(), help="train: synthetic,real,torchvision (default all three; "
                        "real = the configured DALI loader)")
    parser.add_argument("rest", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    cfg_path, overrides = split_args(args.rest)
    return args, cfg_path, overrides


def run_benchmark(args: argparse.Namespace, cfg_path: str | None, overrides: list[str], cfg: Config,
                  dist: DistInfo) -> int:
    from pipeline.bench.doctor import bench_doctor
    from pipeline.bench.loader import bench_loader
    from pipeline.bench.model import bench_model
    from pipeline.bench.overhead import bench_overhead
    from pipeline.bench.report import format_table, log_to_wandb, write_results
    from pipeline.bench.roofline import roofline
    from pipeline.bench.train import bench_scaling, bench_train
    from pipeline.runs.rundir import setup_logging

    setup_logging(dist.rank)
    if cfg.model.num_classes == "auto":  # the benchmarks build loaders and heads from the number
        from pipeline.training.components import load_data, resolve_num_classes

        cfg = resolve_num_classes(cfg, load_data(cfg.data))
    torch.backends.cudnn.benchmark = True  # as in training: autotuned convolutions (during warm-up)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH_RESULTS_DIR / f"{args.kind}-{stamp}"
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
    elif args.kind == "doctor":
        rows = bench_doctor(cfg, args, dist)
    elif args.kind == "overhead":
        rows = bench_overhead(cfg, args, dist)
    else:
        rows = bench_scaling(cfg_path, overrides, args, out)
    if dist.is_main:
        result = write_results(args.kind, rows, cfg, args, out)
        print(format_table(args.kind, rows))
        print(f"results: {out / 'results.json'}, chart: {out / 'chart.png'}")
        if cfg.wandb.mode != "disabled":
            log_to_wandb(cfg, result, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, cfg_path, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.kind == "report":  # python -m pipeline.bench report DIR
        from pipeline.bench.report import report

        print(report(Path(cfg_path or args.out or BENCH_RESULTS_DIR)))
        return 0
    return run_entry([cfg_path, *overrides] if cfg_path else overrides,
                     lambda cfg, dist: run_benchmark(args, cfg_path, overrides, cfg, dist))


if __name__ == "__main__":
    exit_now(main())
