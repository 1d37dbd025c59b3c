"""`bench doctor`: where is the bottleneck of this config on this machine, and which knob to turn.

    python -m pipeline.bench doctor configs/squeezenet_cifar10.yaml data.source=imagefolder data.root=...

Four measurements, each alone, through the same builders as training (per process, batch =
train.global_batch_size / processes):

1. the loader alone: the configured DALI loader, batches consumed and dropped;
2. the model alone: training steps on device-resident synthetic input (the ceiling);
3. end to end: training steps fed by the loader;
4. the model alone at 4x the batch: if images/sec rises a lot, the GPU was idle between kernels
   at this batch (launch-bound), not busy computing;
5. the host-overhead ledger of the step (`bench overhead`): on a GPU, the host microseconds spent
   issuing a step against its wall time.

The verdict (see `diagnose`): input-bound (end to end < 95% of the model alone), then whether the
loader alone is too slow or the two fight over the same cores; launch-bound (the host needs
>= 85% of a GPU step to issue it, or 4x the batch is 1.3x faster per image); or compute-bound.
The knobs it names are ones that act on the device it ran on: CUDA graphs, torch.compile's
autotuning, bf16 and GPU decoding are advised on a GPU only.

It takes minutes: each phase says when it starts and what it measured, with its duration.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from pipeline.bench.loader import backend_loader
from pipeline.bench.measure import batch_consumer, measure, summarize
from pipeline.bench.overhead import MODEL_SECTIONS, LedgerRun, step_rows
from pipeline.bench.train import training_rates
from pipeline.config import Config
from pipeline.data import load_image_sets
from pipeline.data.loader import resolve_dali_device
from pipeline.distributed import DistInfo
from pipeline.errors import ConfigError
from pipeline.training.precision import build_precision, resolve_precision

log = logging.getLogger(__name__)

INPUT_BOUND_BELOW = 0.95  # end to end under this share of the model alone: the input is the limit
LAUNCH_BOUND_ABOVE = 1.3  # 4x batch this much faster per image: the GPU idled between kernels
HOST_BOUND_SHARE = 0.85  # the host busy issuing this share of a GPU step's wall time: it is the limit
PHASES = 4  # loader; model and end to end; model at 4x batch; the host's work (each logs its start and end)


def loader_rate(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> dict[str, Any]:
    device = dist.device
    dtype = build_precision(cfg.train.precision, device).dtype
    images = load_image_sets(cfg.data)[0]
    name = f"dali-{resolve_dali_device(cfg.data.device)}"
    loader = backend_loader(name, cfg, images, cfg.train.global_batch_size // dist.world_size, device, dtype)
    return measure(batch_consumer(loader), warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)


def diagnose(loader: float, model: float, end_to_end: float, model_4x: float, cfg: Config, device: torch.device,
             world_size: int, within_noise: bool = False, host: dict[str, Any] | None = None) -> dict[str, str]:
    """The verdict and the knob to turn, from the four per-process rates (images/sec) and the ledger.

    `within_noise`: the end-to-end and model-alone spreads overlap, so a gap between their
    medians is not evidence of an input bottleneck. `host`: the host-overhead ledger's step
    (`host_us`, `wall_us`, `non_model_us`, `largest`: the costliest non-model section); on a GPU, a
    host that needs most of a step's wall time to issue it is the limit (launch-bound).
    """
    threads, cores = cfg.data.num_threads, os.cpu_count() or 1
    batch, gpu = cfg.train.global_batch_size, device.type == "cuda"
    if end_to_end < INPUT_BOUND_BELOW * model and not within_noise:
        if loader < model:
            knobs = []
            if cfg.data.device == "cpu" and gpu:
                knobs.append("data.device=gpu (decode and resize on the GPU)")
            if threads * world_size < cores:
                knobs.append(f"data.num_threads={min(cores // world_size, 2 * threads)} "
                             f"(now {threads} per process, {cores} cores)")
            if cfg.data.source == "imagefolder":
                knobs.append("an in-memory source (data.source=cifar10 for CIFAR-sized data)")
            knobs.append("a larger data.prefetch_queue_depth if the rate varies")
            return {"verdict": "input-bound",
                    "why": f"the loader alone delivers {loader:,.0f} img/s, less than the model takes ({model:,.0f})",
                    "knob": "; ".join(knobs)}
        fit = max(1, min(threads - 1, cores // world_size))  # ranks x threads within the cores
        knobs = [f"data.num_threads={fit} (now {threads} per process on {cores} cores)"] if threads > 1 else []
        knobs += ["data.device=gpu"] if gpu else []
        knobs.append("more CPU cores per process")
        return {"verdict": "input-bound (contention)",
                "why": f"the loader alone keeps up ({loader:,.0f} img/s) but not while training: the two share "
                       f"{'CPU cores or the GPU' if gpu else 'the CPU cores'}",
                "knob": ", or ".join(knobs)}
    host_share = host["host_us"] / host["wall_us"] if host and host.get("wall_us") else 0.0
    if gpu and host_share >= HOST_BOUND_SHARE:
        return {"verdict": "launch-bound",
                "why": f"the host needs {host['host_us']:,.0f} of every {host['wall_us']:,.0f} us step to issue it "
                       f"({100 * host_share:.0f}%; outside the model {host['non_model_us']:,.0f} us, most of it "
                       f"in {host['largest']}): the GPU waits for the host",
                "knob": f"train.compile=reduce-overhead (CUDA graphs: one launch per step), or "
                        f"train.global_batch_size={4 * batch} (with optim.lr_scaling=linear)"}
    if model_4x > LAUNCH_BOUND_ABOVE * model:
        graphs = ", or train.compile=reduce-overhead (CUDA graphs)" if gpu else ""
        return {"verdict": "launch-bound",
                "why": f"4x the batch runs {model_4x / model:.1f}x faster per image: the device idles between "
                       f"kernels at batch {batch}",
                "knob": f"train.global_batch_size={4 * batch} (with optim.lr_scaling=linear){graphs}"}
    return {"verdict": "compute-bound",
            "why": f"end to end reaches {100 * end_to_end / model:.0f}% of the model alone, and larger batches do "
                   f"not help",
            "knob": compute_knobs(cfg, device)}


def compute_knobs(cfg: Config, device: torch.device) -> str:
    """What speeds up the model itself on `device`. On a CPU torch.compile's autotuning and bf16 are not
    advised: neither was measured to help there (most CPUs lack bf16 matrix units), so the knob is the device."""
    if device.type != "cuda":
        return (f"the model itself is the limit on this CPU ({os.cpu_count() or 1} cores): train on a GPU, or a CPU "
                f"with more cores")
    knobs = [] if cfg.train.compile == "max-autotune" else ["train.compile=max-autotune"]
    if resolve_precision(cfg.train.precision, device) == "fp32":
        knobs.append("train.precision=bf16")
    return "the model itself: " + ", ".join([*knobs, "more devices"])


@contextmanager
def phase(number: int, what: str, is_main: bool) -> Iterator[None]:
    """A line as a phase starts and one as it ends, with its duration: the doctor runs for minutes."""
    started = time.perf_counter()
    if is_main:
        log.info("doctor %d/%d: %s ...", number, PHASES, what)
    yield
    if is_main:
        log.info("doctor %d/%d: %s done in %.0f s", number, PHASES, what, time.perf_counter() - started)



def bench_doctor(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> list[dict[str, Any]]:
    if cfg.data.source == "synthetic":
        raise ConfigError("data.source: bench doctor needs real images (sample, cifar10 or imagefolder), not "
                          "synthetic (e.g. data.source=sample)")
    per_process, main = 1.0 / dist.world_size, dist.is_main
    with phase(1, "the loader alone", main):
        rows = [{"what": "loader alone", **_rate(loader_rate(cfg, args, dist))}]
    with phase(2, "training steps on synthetic input (the model alone), then fed by the loader", main):
        rates, _ = training_rates(cfg, args, dist, ["synthetic", "real"])
    rows.append({"what": "model alone (synthetic input)", **_rate(summarize([r * per_process for r in rates["synthetic"]]))})
    rows.append({"what": "end to end", **_rate(summarize([r * per_process for r in rates["real"]]))})
    bigger = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"source": "synthetic"}),
        "train": cfg.train.model_copy(update={"global_batch_size": 4 * cfg.train.global_batch_size})})
    with phase(3, f"the model alone at 4x the batch ({4 * cfg.train.global_batch_size})", main):
        rates_4x, _ = training_rates(bigger, args, dist, ["synthetic"])
    rows.append({"what": "model alone at 4x batch", **_rate(summarize([r * per_process for r in rates_4x["synthetic"]]))})
    loader, model, e2e, model_4x = (row["images_per_sec"]["median"] for row in rows)
    within_noise = rows[2]["images_per_sec"]["max"] >= rows[1]["images_per_sec"]["min"]
    with phase(4, "the host's work per step (bench overhead's ledger)", main):
        host = host_work(cfg, args, dist)
    rows.append({"what": "host work per step (bench overhead)", **host})
    rows.append(diagnose(loader, model, e2e, model_4x, cfg, dist.device, dist.world_size, within_noise, host))
    if dist.is_main:
        log.info("doctor: %s: %s; turn: %s", rows[-1]["verdict"], rows[-1]["why"], rows[-1]["knob"])
    return rows


def host_work(cfg: Config, args: argparse.Namespace, dist: DistInfo) -> dict[str, Any]:
    """The ledger's step (pipeline/bench/overhead.py): host and wall microseconds, operators, the costliest extra."""
    rows = {r["component"]: r for r in step_rows(LedgerRun(cfg, dist), args)}
    total, extra = rows["total per step"], rows["non-model per step"]
    sections = [r for r in rows.values() if r.get("host_us") and "ops_per_step" in r
                and r["component"] not in MODEL_SECTIONS]
    largest = max(sections, key=lambda r: r["host_us"]["median"])["component"] if sections else "-"
    return {"host_us": total["host_us_sum_of_medians"], "wall_us": total["wall_us_per_step"],
            "non_model_us": extra["host_us_sum_of_medians"], "ops": total["ops_per_step"],
            "non_model_ops": extra["ops_per_step"], "reads": total["reads_per_step"], "largest": largest}


def _rate(stat: dict[str, Any]) -> dict[str, Any]:
    return {"images_per_sec": stat}
