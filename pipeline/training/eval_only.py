"""eval.only: evaluate a checkpoint, and write the result beside the run it belongs to.

    python train_dist.py configs/quickstart.yaml eval.only=true checkpoint.resume=runs/qs-1/best.pt
    python train_dist.py configs/quickstart.yaml eval.only=true logging.run_name=qs-1   # its latest checkpoint
    code = evaluate_only(cfg, dist)        # train_dist.py, for eval.only=true

Nothing is trained and no run is started or continued: no new run directory, no W&B run, and the
evaluated run's record (config.yaml, metrics.jsonl, summary.json, config-changes.jsonl) is never
touched. The first lines say which checkpoint is evaluated, on which split, with which weights,
and where the result goes: `evaluation_folder`, a folder of its own per evaluation inside the
evaluated run's directory, `<run>/eval/<checkpoint>-<split>-<date>-<time>/`, holding eval.json
(the figures, the checkpoint, its step and epoch, the split, the weights, the config evaluated
with) and the per-class report (per_class.csv, confusion.csv, confusion.png). A checkpoint outside any run directory gets `<logging.runs_dir>/eval-<checkpoint>-<split>-<date>-<time>/`.
Other files of the same evaluation belong in that folder too.

The command's config says how to evaluate (the data, its evaluation preprocessing, eval.tta,
eval.weights, the batch); the keys that shape the model must match the checkpoint's (as on resume).
A stop signal ends the evaluation at once (exit 75): nothing is left half-written.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path, PurePath
from typing import Any

from pipeline import distributed
from pipeline.config import Config
from pipeline.data import ImageSet
from pipeline.sources import EVAL_SPLIT_CANDIDATES
from pipeline.distributed import DistInfo
from pipeline.errors import CheckpointError, ConfigError, ExitCode
from pipeline.files import atomic_write_text
from pipeline.runs.rundir import RUN_NAME_STAMP, setup_logging
from pipeline.runs.per_class import write_per_class
from pipeline.training.checkpoint import check_compatible, load, scan_checkpoints
from pipeline.training.components import Components, build_components, load_data, resolve_num_classes
from pipeline.training.evaluation import EpochEvaluation
from pipeline.training.preemption import StopRequest

log = logging.getLogger("pipeline")

RESULT_FILE = "eval.json"


def evaluate_only(cfg: Config, dist: DistInfo) -> ExitCode:
    """Evaluate the checkpoint eval.only names; rank 0 writes eval.json into `evaluation_folder`."""
    stop = StopRequest(phase="the evaluation").install(at_once=True)  # nothing to checkpoint: a signal ends it now
    try:
        setup_logging(dist.rank)
        data = load_data(cfg.data)
        cfg = resolve_num_classes(cfg, data)
        path = checkpoint_to_evaluate(cfg, dist)
        ckpt = load(path)
        check_compatible(ckpt, cfg.to_dict(), path)
        parts = build_components(cfg, dist, data=data)
        weights = load_weights(ckpt, parts, cfg)
        split = split_name(cfg.data, data[1] if data is not None else None)
        folder = evaluation_folder(path, split, cfg.logging.runs_dir, datetime.datetime.now())
        counters = ckpt["counters"]
        if dist.is_main:
            log.info("evaluating %s (step %d, epoch %d; %s weights) on the %s split of data.source=%s (%d images); "
                     "the result goes to %s", path, counters["global_step"], counters["epoch"], weights, split,
                     cfg.data.source, len(data[1]) if data is not None else 0, folder / RESULT_FILE)
        evaluation = EpochEvaluation(cfg, parts)
        metrics = evaluation.run(per_class=True)
        if dist.is_main:
            write_result(folder, metrics, path, ckpt, split, weights, cfg)
            write_per_class(folder, evaluation.class_report)
        return ExitCode.OK
    finally:
        stop.uninstall()


def checkpoint_to_evaluate(cfg: Config, dist: DistInfo) -> Path:
    """checkpoint.resume as a path, or with auto the newest good checkpoint of logging.run_name's run."""
    if cfg.checkpoint.resume != "auto":
        return Path(cfg.checkpoint.resume).expanduser()
    if not cfg.logging.run_name:
        raise ConfigError("eval.only: name the checkpoint (checkpoint.resume=runs/<run>/best.pt) or the run whose "
                          "latest checkpoint to evaluate (logging.run_name=<run>)")
    run_dir = Path(cfg.logging.runs_dir).expanduser() / cfg.logging.run_name
    found, unreadable = None, ""
    if dist.is_main:  # rank 0 picks, as on resume
        scan = scan_checkpoints(run_dir)
        found = str(scan.newest[0]) if scan.newest else None
        unreadable = "; ".join(str(exc) for exc in scan.unreadable)
    found, unreadable = distributed.broadcast_object((found, unreadable))
    if found is None:
        why = f": none of its checkpoints loads ({unreadable})" if unreadable else ""
        raise CheckpointError(f"eval.only: no checkpoint in {run_dir}{why} (checkpoint.resume=<file> names one)")
    return Path(found)


def load_weights(ckpt: dict[str, Any], parts: Components, cfg: Config) -> str:
    """The checkpoint's model (and EMA) weights into `parts`, strictly; returns which weights are evaluated."""
    parts.model.load_state_dict(ckpt["model"], strict=True)
    if parts.ema is not None:
        if ckpt.get("ema") is None:
            raise CheckpointError("eval.only: the checkpoint has no EMA weights (it was trained with "
                                  "train.ema_decay=0); evaluate with train.ema_decay=0 or eval.weights=raw")
        parts.ema.load_state_dict(ckpt["ema"], strict=True)
    return {"ema": "EMA" if parts.ema is not None else "raw", "raw": "raw",
            "both": "EMA and raw"}[cfg.eval.weights]


def split_name(data_cfg: Any, images: ImageSet | None) -> str:
    """The name of the split the evaluation reads: data.eval_split, or what `auto` found (val, test, validation;
    the sample's and CIFAR-10's test split)."""
    if data_cfg.source == "synthetic":
        return "synthetic"
    if data_cfg.eval_split != "auto":
        return data_cfg.eval_split
    if data_cfg.source in ("sample", "cifar10"):
        return "test"
    name = str(images.names[0]) if images is not None and len(images) else ""
    parts = PurePath(name.split(":", 1)[-1]).parts  # archive:member and shard:member name the member
    return next((c for part in parts for c in EVAL_SPLIT_CANDIDATES if part == c or part.startswith(c + "-")),
                "validation")


def evaluation_folder(checkpoint: Path, split: str, runs_dir: str, when: datetime.datetime) -> Path:
    """Where an evaluation of `checkpoint` on `split` writes its files: a folder of its own per evaluation, in the
    evaluated run's directory (`<run>/eval/<checkpoint>-<split>-<date>-<time>/`), or, for a checkpoint outside any
    run directory, `<runs_dir>/eval-<checkpoint>-<split>-<date>-<time>/`. Created by the caller, when it writes."""
    name = f"{checkpoint.stem}-{split}-{when.strftime(RUN_NAME_STAMP)}"
    run = checkpoint.expanduser().resolve().parent
    folder = run / "eval" / name if (run / "config.yaml").is_file() else Path(runs_dir).expanduser() / f"eval-{name}"
    suffix = 2
    unique = folder
    while unique.exists():  # two evaluations within a second
        unique, suffix = folder.with_name(f"{folder.name}-{suffix}"), suffix + 1
    return unique


def write_result(folder: Path, metrics: dict[str, float], path: Path, ckpt: dict[str, Any], split: str, weights: str,
                 cfg: Config) -> None:
    """eval.json in `folder`, and the figures on the console."""
    folder.mkdir(parents=True, exist_ok=True)
    counters = ckpt["counters"]
    result = {**metrics, "checkpoint": str(path), "step": counters["global_step"], "epoch": counters["epoch"],
              "split": split, "weights": weights, "config": cfg.to_dict(),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(folder / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    log.info("evaluation of %s: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images; written to %s", path.name,
             100 * metrics["val/top1"], 100 * metrics["val/top5"], metrics["val/loss"], metrics["val/images"],
             folder / RESULT_FILE)

