"""How a run ends on the console and in its summary: final/*, best/*, mean throughput; and eval.only.

    summary = final_summary(counters, meter, dist, all_ranks=True)   # records.summary(summary)
    report_final(counters, cfg.train, dist, summary.get("perf/mean_images_per_sec", 0.0), run_dir)
    metrics = evaluate_checkpoint(evaluate, counters, cfg.checkpoint, run_dir, dist)   # eval.only: eval.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from pipeline import distributed
from pipeline.distributed import DistInfo
from pipeline.errors import CheckpointError
from pipeline.training.checkpoint import Counters
from pipeline.training.meters import ThroughputMeter
from pipeline.training.tta import describe_tta

log = logging.getLogger("pipeline")


def final_summary(counters: Counters, meter: ThroughputMeter, dist: DistInfo, all_ranks: bool) -> dict[str, Any]:
    """final/*, best/* and mean throughput. `all_ranks` False after a crash: no collective (ranks may be
    gone), so only this rank's own throughput, and the total only when it is the only rank."""
    per_device = meter.mean_images_per_sec_per_device
    summary: dict[str, Any] = dict(counters.result_summary())
    if all_ranks:
        total = distributed.all_reduce_sum(torch.nan_to_num(torch.tensor([per_device], dtype=torch.float64))).item()
        if total > 0:  # 0 means no window was measured (epochs shorter than the warm-up): not a rate
            summary.update({"perf/mean_images_per_sec": total,
                            "perf/mean_images_per_sec_per_device": total / dist.world_size})
    elif per_device == per_device:  # measured
        summary["perf/mean_images_per_sec_per_device"] = per_device
        if dist.world_size == 1:
            summary["perf/mean_images_per_sec"] = per_device
    return summary


def report_final(c: Counters, train_cfg: Any, dist: DistInfo, total: float, run_dir: Path) -> None:
    """The console's last lines of a run that finished (or reached its target): results, speed, time to accuracy."""
    if not (dist.is_main and c.final):
        return
    speed = (f"{total:,.0f} img/s ({total / dist.world_size:,.0f} per device, warm-up and evaluation "
             "excluded)" if total > 0 else "throughput not measured (epochs shorter than "
             "logging.perf_warmup_steps)")
    log.info("done: final top-1 %.2f%% (epoch %d), best top-1 %.2f%% (epoch %d); %s",
             100 * c.final["val/top1"], c.final["epoch"], 100 * c.best_top1, c.best_epoch, speed)
    log.info("time to accuracy: %s; %.1f s of training in all (evaluation and checkpoints excluded)",
             describe_tta(c.tta, train_cfg.tta_thresholds), c.train_seconds)
    log.info("run directory: %s", run_dir)


def evaluate_checkpoint(evaluate: Callable[[], dict[str, float]], counters: Counters, checkpoint_cfg: Any,
                        run_dir: Path, dist: DistInfo) -> dict[str, float]:
    """eval.only: evaluate the restored weights, write eval.json, print the figures."""
    if counters.global_step == 0 and checkpoint_cfg.resume == "auto":
        raise CheckpointError(f"eval.only: no checkpoint in {run_dir}")
    metrics = evaluate()
    if dist.is_main:
        (run_dir / "eval.json").write_text(json.dumps({**metrics, "step": counters.global_step}, indent=1))
        log.info("evaluation of step %d: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images",
                 counters.global_step, 100 * metrics["val/top1"], 100 * metrics["val/top5"],
                 metrics["val/loss"], metrics["val/images"])
    return metrics
