"""The command line of `python -m pipeline.bench` (see the package docstring for the kinds and method)."""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import sys
import typing
from pathlib import Path

import torch

import pipeline.bench as package
from pipeline.config import MODEL_NAMES, Config, CompileMode, split_args
from pipeline.constants import BENCH_RESULTS_DIR
from pipeline.distributed import DistInfo
from pipeline.entry import exit_now, run_entry
from pipeline.runs.envinfo import describe, environment

log = logging.getLogger(__name__)

COMPILE_MODES = tuple(mode for mode in typing.get_args(CompileMode) if mode != "off")

# Each kind: what it measures (its --help), and the options it reads besides the common ones.
KINDS = {
    "loader": ("the input pipeline alone, per backend; --stages adds DALI's graph cut after read, decode, "
               "resize and the full augmentation", ("backends", "stages")),
    "model": ("the training step alone on device-resident synthetic input. By default the config's own: its "
              "model.name, train.precision, channels_last (as the trainer wraps it), train.compile and "
              "train.global_batch_size at data.train.crop; --all measures every model x fp32,bf16 x both memory "
              "formats; --models, --precisions, --formats, --compile, --batch-sizes and --size set one dimension "
              "each. It first times a few steps of each setting and says what it will measure and about how long",
              ("all", "models", "precisions", "formats", "compile", "batch_sizes", "size")),
    "train": ("end to end: training steps fed by synthetic input, the configured DALI loader (real) and the "
              "torchvision baseline", ("feeds",)),
    "scaling": ("`train` under torchrun at 1..N processes, with the scaling efficiency", ("nproc",)),
    "doctor": ("where the bottleneck of this config is (loader, model, end to end, 4x batch, the host's work per "
               "step) and the knob to turn", ()),
    "overhead": ("the host-overhead ledger of the training step: per component, the torch operators dispatched, "
                 "host microseconds, device reads and uploads; then a logging boundary and an evaluation batch", ()),
    "budget": ("how closely runs keep train.time_budget: whole training runs timed from the outside against "
               "their budget, optionally with competing CPU load started mid-run", ("budget", "load", "load_at")),
    "report": ("the tables of every results.json under DIR (default bench-results/)", ()),
    "export": ("onnxruntime throughput and latency of an exported model (python -m pipeline.export), fp32 and int8, "
               "1 and all threads, batches 1, 8, 64 (`python -m pipeline.bench export --help`)", ()),
}
RUNS = ("budget",)  # kinds that time whole training processes: no steps or warm-up of their own


def _csv(kind=str, allowed: dict[str, str] | None = None):
    def parse(text: str) -> list:
        values = [kind(x) for x in text.split(",") if x]
        unknown = [v for v in values if allowed is not None and v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
        return values
    return parse


def _add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str) -> None:
    """The options that belong to one kind, by their dest name."""
    from pipeline.bench.budget import budget_options
    from pipeline.bench.loader import BACKENDS

    backends = "; ".join(f"{name} = {what}" for name, what in BACKENDS.items())
    options = {
        "backends": (["--backends"], dict(type=_csv(allowed=BACKENDS), metavar="B1,B2",
                                          help=f"backends to measure (default: every one this machine runs): "
                                               f"{backends}")),
        "stages": (["--stages"], dict(action="store_true", help="also time each DALI graph prefix (read, decode, "
                                                                 "resize, full) of the DALI backends")),
        "all": (["--all"], dict(action="store_true", help="every model x fp32,bf16 x contiguous,channels_last "
                                                          "(the default: the config's own setting alone)")),
        "models": (["--models"], dict(type=_csv(allowed=dict.fromkeys(MODEL_NAMES)), metavar="M1,M2",
                                      help=f"networks, from {', '.join(MODEL_NAMES)}")),
        "precisions": (["--precisions"], dict(type=_csv(allowed=dict.fromkeys(("fp32", "bf16", "fp16"))),
                                              metavar="P1,P2", help="fp32,bf16,fp16 (default: train.precision; "
                                                                    "--all: fp32,bf16)")),
        "formats": (["--formats"], dict(type=_csv(allowed=dict.fromkeys(("contiguous", "channels_last"))),
                                        metavar="F1,F2", help="contiguous,channels_last (default channels_last; "
                                                              "--all: both)")),
        "compile": (["--compile"], dict(type=_csv(allowed=dict.fromkeys(("off", "on", *COMPILE_MODES))),
                                        metavar="C1,C2", help=f"{','.join(('off', *COMPILE_MODES))} "
                                                              "(default: train.compile; on = default)")),
        "batch_sizes": (["--batch-sizes"], dict(type=_csv(int), help="batch sizes (default train.global_batch_size)")),
        "size": (["--size"], dict(type=int, help="input side (default data.train.crop)")),
        "nproc": (["--nproc"], dict(type=_csv(int), help="process counts (default 1,2)")),
        "feeds": (["--feeds"], dict(type=_csv(), help="synthetic,real,torchvision (default all three; real = the "
                                                      "configured DALI loader)")),
        **budget_options(),
    }
    flags, kwargs = options[name]
    parser.add_argument(*flags, dest=name, **kwargs)


def build_parser(kind: str | None) -> argparse.ArgumentParser:
    """The parser of one kind (its own --help and options), or of all kinds when `kind` is None."""
    prog = "python -m pipeline.bench" + (f" {kind}" if kind else "")
    description = package.__doc__
    if kind in RUNS:  # its own method: its module's docstring after the usage lines
        runs_doc = importlib.import_module(f"pipeline.bench.{kind}").__doc__
        description = f"{prog}: {KINDS[kind][0]}.\n\n" + runs_doc.split("\n\n", 2)[2]
    elif kind is not None:
        method = "Method: " + description.split("\nMethod: ", 1)[1].split("\n\n", 1)[0]
        description = f"{prog}: {KINDS[kind][0]}." + ("" if kind == "report" else f"\n\n{method}")
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=list(KINDS), help="what to measure" if kind is None else argparse.SUPPRESS)
    if kind in RUNS:
        parser.add_argument("--repeats", type=int, default=1, help="runs (default 1)")
    elif kind != "report":
        parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat (default 50)")
        parser.add_argument("--warmup", type=int, default=10, help="discarded steps first (default 10)")
        parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is quoted (default 5)")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/<kind>-<time>)"
                        if kind != "report" else "the folder to read (same as DIR)")
    for name, (what, options) in KINDS.items():
        if options and kind in (None, name):
            group = parser.add_argument_group(f"{name} options" if kind is None else "options of this kind")
            for option in options:
                _add_option(group, option)
    parser.add_argument("rest", nargs="*", metavar="DIR" if kind == "report" else "[CONFIG.yaml] [key=value ...]",
                        help="the results folder" if kind == "report" else "an optional YAML config, then overrides "
                        "(docs/configuration.md)")
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, str | None, list[str]]:
    # The kind decides which options exist, so find it first (options may come before it).
    kind = next((word for word in argv if word in KINDS), None)
    parser = build_parser(kind)
    if kind is None and not {"-h", "--help"} & set(argv):  # argparse would call the optional CONFIG "required"
        parser.error(f"say what to measure: one of {', '.join(KINDS)} (then an optional CONFIG.yaml and "
                     "overrides; `python -m pipeline.bench KIND --help` lists its options)")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    for name in ("steps", "warmup", "repeats"):  # `report` has none; the other kinds read them
        args.__dict__.setdefault(name, None)
    for _, options in KINDS.values():  # a kind's code may read its neighbours' options: absent = default
        for option in options:
            args.__dict__.setdefault(option, False if option in ("stages", "all") else None)
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
    argv = sys.argv[1:] if argv is None else argv
    if next((word for word in argv if word in KINDS), None) == "export":  # MODEL, not a config: its own parser
        from pipeline.bench.export import main as bench_export

        return bench_export(argv)
    args, cfg_path, overrides = parse_args(argv)
    if args.kind == "report":  # python -m pipeline.bench report DIR
        from pipeline.bench.report import report

        print(report(Path(cfg_path or args.out or BENCH_RESULTS_DIR)))
        return 0
    if args.kind == "budget":  # whole training runs, each its own process group
        from pipeline.bench.budget import bench_budget

        return bench_budget(args, cfg_path, overrides)
    return run_entry([cfg_path, *overrides] if cfg_path else overrides,
                     lambda cfg, dist: run_benchmark(args, cfg_path, overrides, cfg, dist))


if __name__ == "__main__":
    exit_now(main())
