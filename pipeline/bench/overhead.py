"""`bench overhead`: the host-overhead ledger of the training step, component by component.

    python -m pipeline.bench overhead configs/squeezenet_cifar10_fast.yaml --steps 50
    python -m pipeline.bench overhead configs/quickstart.yaml train.ema_decay=0.999

On a GPU every torch operator the host dispatches is a kernel launch, or host time spent in series
with the step: at 30k img/s a 256-image step has 8.5 ms in all. The ledger runs the trainer's own
pieces (the configured loader, `TrainingStep`, the throughput meter, the stop agreement), each
in a named section (pipeline/sections.py), and reports per training step and per section:

- `ops`: torch (aten) operators dispatched, counted with a TorchDispatchMode;
- `host us`: host microseconds spent in the section (median over steps, a second pass without the
  counting modes, which would slow it); on a GPU this is the time to issue the work;
- `reads`: device-to-host reads, 0 expected outside logging boundaries. On CUDA: every call that
  `torch.cuda.set_sync_debug_mode` reports as synchronizing. On the CPU, where every tensor lives
  on the training device, every read of a tensor's values: `.item()`, `bool()`, `int()`,
  `float()`, `.tolist()`, `.cpu()`, `.numpy()`, `.to("cpu")`, operators with data-dependent
  shapes (`nonzero`, ...) — what would wait for the GPU there;
- `uploads`: on CUDA, host-to-device copies; on the CPU, tensors made from host data
  (`torch.tensor(...)`), which are uploads on a GPU.

Components: loader (the wait for the next batch, including DALI's batch callbacks and the
hand-off), standardize (the GPU trainer's per-image standardization, counted apart from the
rest), mix (mixup/CutMix and the soft targets, when train.mixup_alpha or cutmix_alpha is on), model (forward and backward), optimizer, schedule, ema, statistics, meter and stop
agreement. Then, apart from the per-step figures: one logging boundary (where the loss
statistics and the throughput window are read: reads expected there), one evaluation batch
(0 reads expected), and DALI's batch callbacks timed on their own (they run on the training
thread inside the loader's wait). "non-model" is everything but model, optimizer and standardize.

The counts are exact and repeatable (the same config gives the same numbers); host times are
as noisy as the machine.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import warnings
from collections import Counter, defaultdict
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.bench.measure import endless, summarize
from pipeline.config import Config
from pipeline.distributed import DistInfo, synchronize
from pipeline.training.components import build_components, build_training_step
from pipeline.training.meters import ThroughputMeter
from pipeline.training.preemption import StopAgreement, StopRequest
from pipeline.training.step import evaluate

log = logging.getLogger(__name__)

MODEL_SECTIONS = ("model", "optimizer")  # the model's own work; everything else is overhead
STEP_SECTIONS = ("loader", "standardize", "mix", "model", "optimizer", "schedule", "ema", "statistics", "meter",
                 "stop agreement")
OUTSIDE = "(outside any section)"

# Tensor methods that read device values back to the host without dispatching `_local_scalar_dense`
# (which item(), bool(), int(), float() and format() do, and which the op counter counts).
HOST_READS = frozenset({"tolist", "numpy", "cpu", "__array__"})
# Operators whose output shape depends on the data: on CUDA they wait for the GPU to know it.
DATA_DEPENDENT = frozenset({"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive",
                            "unique_dim", "repeat_interleave", "nonzero_static", "argwhere"})


class Ledger:
    """Sections with exclusive host time; ops, reads and uploads counted by section while counting."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [name, start_ns] of the open sections, innermost last
        self.ns: dict[str, int] = defaultdict(int)
        self.ops: Counter[str] = Counter()
        self.op_names: dict[str, Counter[str]] = defaultdict(Counter)
        self.reads: Counter[str] = Counter()
        self.uploads: Counter[str] = Counter()

    @property
    def current(self) -> str:
        return self.stack[-1][0] if self.stack else OUTSIDE

    def section(self, name: str) -> "_Section":
        return _Section(self, name)

    def reset(self) -> None:
        self.ns.clear()
        self.ops.clear()
        self.op_names.clear()
        self.reads.clear()
        self.uploads.clear()

    def counting(self, device: torch.device) -> "_Counting":
        """A context that counts every operator, read and upload into the current section."""
        return _Counting(self, device)


class _Section:
    __slots__ = ("ledger", "name")

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.ledger, self.name = ledger, name

    def __enter__(self) -> None:
        now = time.perf_counter_ns()
        stack = self.ledger.stack
        if stack:  # the enclosing section pauses: time is exclusive
            outer = stack[-1]
            self.ledger.ns[outer[0]] += now - outer[1]
        stack.append([self.name, now])

    def __exit__(self, *exc: object) -> None:
        now = time.perf_counter_ns()
        stack = self.ledger.stack
        name, start = stack.pop()
        self.ledger.ns[name] += now - start
        if stack:
            stack[-1][1] = now


class _OpCounter(TorchDispatchMode):
    """Every dispatched operator; on the CPU also the reads (`_local_scalar_dense`, data-dependent shapes)
    and tensors made from host data. On CUDA, reads are what CUDA's sync debug mode reports and
    uploads are host-to-device copies."""

    def __init__(self, ledger: Ledger, device: torch.device) -> None:
        super().__init__()
        self.ledger, self.on_cpu = ledger, device.type == "cpu"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        section = self.ledger.current
        name = func.overloadpacket.__name__
        self.ledger.ops[section] += 1
        self.ledger.op_names[section][name] += 1
        if self.on_cpu:
            if name == "_local_scalar_dense" or name in DATA_DEPENDENT:
                self.ledger.reads[section] += 1
            elif name == "lift_fresh":
                self.ledger.uploads[section] += 1
        elif name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0].device if name == "copy_" else kwargs.get("device") or src.device
            if isinstance(src, torch.Tensor) and src.device.type == "cpu" and torch.device(dst).type != "cpu":
                self.ledger.uploads[section] += 1
        return func(*args, **kwargs)


class _ReadCounter(TorchFunctionMode):
    """On the CPU: tensor methods that read values back to the host without dispatching an operator."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS and args and isinstance(args[0], torch.Tensor):
            self.ledger.reads[self.ledger.current] += 1
        elif name == "to" and args and isinstance(args[0], torch.Tensor) and _to_host(args[1:], kwargs or {}):
            self.ledger.reads[self.ledger.current] += 1
        return func(*args, **(kwargs or {}))


def _to_host(args: tuple, kwargs: dict) -> bool:
    target = kwargs.get("device", args[0] if args and isinstance(args[0], (str, torch.device)) else None)
    return target is not None and torch.device(target).type == "cpu"


class _Counting:
    def __init__(self, ledger: Ledger, device: torch.device) -> None:
        self.ledger, self.device = ledger, device
        self.modes = [*([_ReadCounter(ledger)] if device.type == "cpu" else []), _OpCounter(ledger, device)]
        self.saved_showwarning = None

    def __enter__(self) -> "_Counting":
        if self.device.type == "cuda":  # CUDA's own list of synchronizing calls, attributed to the section
            torch.cuda.set_sync_debug_mode("warn")
            self.saved_showwarning = warnings.showwarning
            warnings.simplefilter("always")

            def record(message, category, *args, **kwargs):
                if "synchronizing" in str(message):
                    self.ledger.reads[self.ledger.current] += 1
                else:
                    self.saved_showwarning(message, category, *args, **kwargs)

            warnings.showwarning = record
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self.modes):
            mode.__exit__(*exc)
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = self.saved_showwarning


# --------------------------------------------------------------------------------- the measurement


class LedgerRun:
    """The trainer's per-step pieces, built from the config, with the ledger's sections attached."""

    def __init__(self, cfg: Config, dist: DistInfo) -> None:
        self.cfg, self.dist = cfg, dist
        self.ledger = Ledger()
        self.parts = build_components(cfg, dist)
        self.step = build_training_step(self.parts, cfg.train)
        self.meter = ThroughputMeter(self.parts.local_batch, 0, dist.device)
        self.stop = StopAgreement(StopRequest(), dist.world_size)
        self.step.section = self.ledger.section
        for loader in (self.parts.train_loader, self.parts.eval_loader):
            if hasattr(loader, "section"):
                loader.section = self.ledger.section
        self.batches = self.meter.timed(endless(self.parts.train_loader))
        self.global_step = 0

    def run_steps(self, n: int, per_step: Callable[[], None] | None = None) -> None:
        """n training steps exactly as train_epoch runs them, without its logging boundaries."""
        section = self.ledger.section
        for _ in range(n):
            with section("loader"):
                images, labels = next(self.batches)
            self.step(images, labels, self.global_step)
            with section("meter"):
                self.meter.step_done()
            with section("stop agreement"):
                self.stop.after_step()
            self.global_step += 1
            if per_step is not None:
                per_step()

    def logging_boundary(self) -> None:
        with self.ledger.section("logging boundary"):
            self.step.stats.read()
            self.meter.read()

    def count_steps(self, steps: int) -> dict[str, Any]:
        """Operators, reads and uploads per step and per section (exact: counts over `steps` steps / steps)."""
        self.ledger.reset()
        with self.ledger.counting(self.dist.device):
            self.run_steps(steps)
        counted = self._snapshot(steps)
        self.ledger.reset()
        with self.ledger.counting(self.dist.device):
            self.logging_boundary()
        counted["logging boundary"] = self._snapshot(1).get("logging boundary", _empty())
        return counted

    def time_steps(self, steps: int) -> tuple[dict[str, list[float]], float]:
        """Host microseconds per step of each section (one value per step), and the wall time per step."""
        per_step: dict[str, list[float]] = defaultdict(list)
        last: dict[str, int] = {}

        def sample() -> None:
            for name in set(self.ledger.ns) | set(last):
                now = self.ledger.ns.get(name, 0)
                per_step[name].append((now - last.get(name, 0)) / 1000)
                last[name] = now

        self.ledger.reset()
        synchronize(self.dist.device)
        t0 = time.perf_counter()
        self.run_steps(steps, per_step=sample)
        synchronize(self.dist.device)
        wall_us = (time.perf_counter() - t0) / steps * 1e6
        self.logging_boundary()  # empties the statistics the steps accumulated
        return per_step, wall_us

    def count_evaluation_batch(self) -> dict[str, Any]:
        """Ops, reads and uploads that one more evaluation batch adds (2 batches minus 1: the final sums apart).

        A split of one batch is cut in two halves: the counts do not depend on the batch size.
        """
        loader = self.parts.eval_loader
        if loader is None:
            return _empty()
        batches = list(itertools.islice(iter(loader), 2))
        if len(batches) == 1 and len(batches[0][1]) > 1:
            (images, labels), half = batches[0], len(batches[0][1]) // 2
            batches = [(images[:half], labels[:half]), (images[half:], labels[half:])]
        if len(batches) < 2:
            return _empty()
        counts = []
        for n in (1, 2):
            self.ledger.reset()
            with self.ledger.counting(self.dist.device), self.ledger.section("evaluation"):
                evaluate(self.parts.model, batches[:n], self.parts.precision, self.cfg.eval.tta == "flip")
            counts.append(self._snapshot(1)["evaluation"])
        return {key: counts[1][key] - counts[0][key] for key in ("ops", "reads", "uploads")}

    def time_callbacks(self, steps: int) -> dict[str, Any] | None:
        """Host microseconds of the DALI loader's batch callbacks per batch (they run on the training thread)."""
        callbacks = getattr(self.parts.train_loader, "callbacks", None)
        if not callbacks:
            return None
        times = []
        n = min(steps, len(self.parts.train_loader))
        for i in range(n):
            info = _BatchInfo(iteration=i, epoch_idx=0)
            t0 = time.perf_counter_ns()
            for callback in callbacks:
                callback(info)
            times.append((time.perf_counter_ns() - t0) / 1000)
        return summarize(times)

    def _snapshot(self, steps: int) -> dict[str, Any]:
        led = self.ledger
        names = set(led.ops) | set(led.reads) | set(led.uploads)
        return {name: {"ops": led.ops[name] / steps, "reads": led.reads[name] / steps,
                       "uploads": led.uploads[name] / steps,
                       "op_names": dict(led.op_names[name].most_common(8))} for name in names}


class _BatchInfo:
    def __init__(self, iteration: int, epoch_idx: int) -> None:
        self.iteration, self.epoch_idx = iteration, epoch_idx


def _empty() -> dict[str, Any]:
    return {"ops": 0, "reads": 0, "uploads": 0, "op_names": {}}


def _total(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"component": name, **{key: sum(r[key] for r in rows) for key in ("ops_per_step", "reads_per_step",
                                                                              "uploads_per_step")},
            "host_us_sum_of_medians": sum(r["host_us"]["median"] for r in rows if r["host_us"])}


def step_rows(run: LedgerRun, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per section (per training step), the totals and the logging boundary."""
    run.run_steps(args.warmup)  # buffers, autotuning, compilation
    counted = run.count_steps(args.steps)
    times, wall_us = run.time_steps(args.steps)
    rows = []
    for name in [*STEP_SECTIONS, *sorted(set(counted) - set(STEP_SECTIONS) - {"logging boundary"})]:
        if name not in counted and name not in times:
            continue
        c = counted.get(name, _empty())
        rows.append({"component": name, "ops_per_step": c["ops"], "reads_per_step": c["reads"],
                     "uploads_per_step": c["uploads"], "top_ops": c["op_names"],
                     "host_us": summarize(times[name]) if name in times else None})
    per_step = [r for r in rows if r["component"] != OUTSIDE]
    non_model = [r for r in per_step if r["component"] not in (*MODEL_SECTIONS, "standardize")]
    total, non = _total("total per step", per_step), _total("non-model per step", non_model)
    total["wall_us_per_step"] = wall_us
    rows += [total, non]
    boundary = counted["logging boundary"]
    rows.append({"component": "logging boundary (every logging.log_every steps)", "ops": boundary["ops"],
                 "reads": boundary["reads"], "uploads": boundary["uploads"]})
    return rows


def bench_overhead(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> list[dict[str, Any]]:
    """The step's rows (step_rows), then one evaluation batch and the batch callbacks."""
    run = LedgerRun(cfg, dist)
    rows = step_rows(run, args)
    evaluation = run.count_evaluation_batch()
    rows.append({"component": "evaluation, per batch", "ops": evaluation["ops"], "reads": evaluation["reads"],
                 "uploads": evaluation["uploads"]})
    callbacks = run.time_callbacks(args.steps)
    if callbacks is not None:
        rows.append({"component": "DALI batch callbacks (inside loader)", "host_us": callbacks})
    if dist.is_main:
        total, non = (next(r for r in rows if r["component"] == name) for name in ("total per step",
                                                                                   "non-model per step"))
        log.info("overhead: %d ops per step, %d of them outside the model and optimizer; %d device reads per step",
                 total["ops_per_step"], non["ops_per_step"], total["reads_per_step"])
    return rows
