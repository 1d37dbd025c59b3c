"""python -m pipeline.export RUN_DIR|CHECKPOINT [--weights ema|raw] [--int8] [--calibration N] [--out DIR]

Writes into DIR (default RUN_DIR/export/, or export/ beside the checkpoint):
  model.onnx        fp32; input `images` uint8 NHWC [N, crop, crop, 3] (N dynamic), the eval transform's
                    normalization inside, output `logits` [N, classes]; metadata_props: class names, eval
                    transform, opset, versions, the checkpoint's sha256 and its recorded top-1/top-5, git
  model.int8.onnx   with --int8: static QDQ quantization, signed int8, per channel (quantize.py)
  export.json       the same metadata, the gates' figures and the table below

Steps, each a gate (nothing is written into DIR unless every step before it passed; files are made in a
temporary folder beside it and renamed into place):
1. export (graph.py) and `onnx.checker` with full_check;
2. parity on real images of the run's evaluation split: onnxruntime against eager PyTorch at batches
   1, 7 and 64, max |logit difference| <= PARITY_ATOL and every top-1 the same, else exit 1, nothing kept;
3. accuracy of the checkpoint (eager), the fp32 and the int8 model through the project's own eval graph
   (DALI decode, resize, crop -> the model) on the run's evaluation split;
4. --int8: calibration on --calibration training images through the eval transform; the int8 model's
   top-1 must lie within INT8_MAX_DROP points of the fp32 model's, else exit 1 naming the drop, with no
   model.int8.onnx (model.onnx and export.json are kept: they passed theirs);
5. img/s and p99 latency at batch 1 and 64 on this machine (runtime.py), the table printed and kept.

Exit status: 0 done; 1 a gate failed (the message says which, by how much); 2 bad input (a folder without
a checkpoint, a checkpoint of another model or format, a corrupt file, too few calibration images), one line
naming it. W&B: the models are logged as Artifacts of type `model` in an `export` job of the run's group,
the table in its summary (wandb.mode of the run's config; WANDB_MODE=disabled turns it off).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.loader import load_image_sets
from pipeline.data.sources import ImageSet
from pipeline.deploy.graph import OPSET, DeployedModel, export_onnx, exportable, metadata_props
from pipeline.deploy.runtime import (accuracy, eval_images, latency, open_session, session_runner, torch_runner)
from pipeline.deploy.source import resolve_model_path
from pipeline.entry import print_user_error
from pipeline.errors import DataError, ExitCode, UserError
from pipeline.files import atomic_write_text, fsync_dir, temporary_name
from pipeline.runs.envinfo import cpu_model, environment
from pipeline.training.weights import WeightsSource, find_checkpoint, read_weights

log = logging.getLogger("pipeline")

PARITY_BATCHES = (1, 7, 64)
PARITY_ATOL = 1e-4  # max |logit difference|, onnxruntime vs eager PyTorch, fp32
INT8_MAX_DROP = 1.0  # percentage points of top-1 the int8 model may lose against the fp32 one
LATENCY_BATCHES = (1, 64)
EVAL_BATCH = 256


class GateFailed(Exception):
    """A check of the exported model failed (not the input's fault): exit 1 with this message."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="RUN_DIR|CHECKPOINT",
                        help="a run directory (its best.pt, else last.pt), a checkpoint, or a quoted glob of runs "
                             "(the newest with a checkpoint)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="the EMA weights (the raw ones when the run had no EMA; default), or the raw ones")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (static QDQ quantization)")
    parser.add_argument("--calibration", type=int, default=512, metavar="N",
                        help="training images to calibrate the int8 model on (default 512)")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/export)")
    parser.add_argument("--latency-seconds", type=float, default=2.0, metavar="S",
                        help="timing per model and batch size in the table (default 2 s)")
    return parser.parse_args(argv)


def parity(module: DeployedModel, onnx_path: Path, images: np.ndarray) -> dict[str, Any]:
    """Eager vs onnxruntime on real images at PARITY_BATCHES: max |difference| and top-1 agreement."""
    run = session_runner(open_session(onnx_path))
    eager = torch_runner(module)
    worst, agree, checked = 0.0, 0, 0
    for batch in PARITY_BATCHES:
        x = images[:batch]
        ours, theirs = eager(x), run(x)
        worst = max(worst, float(np.abs(ours - theirs).max()))
        agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
        checked += len(x)
    result = {"batches": list(PARITY_BATCHES), "max_abs_logit_difference": worst, "top1_agreement": agree / checked}
    if worst > PARITY_ATOL or agree != checked:
        raise GateFailed(f"parity: onnxruntime and PyTorch differ on real images (max |logit difference| {worst:.2e}, "
                         f"limit {PARITY_ATOL:.0e}; top-1 agreement {agree}/{checked}); nothing was written")
    return result


def first_images(loader: Any, count: int) -> np.ndarray:
    """The first `count` uint8 NHWC images the eval graph yields."""
    got: list[np.ndarray] = []
    for images, _ in loader:
        got.append(images.numpy().copy())
        if sum(len(g) for g in got) >= count:
            break
    return np.concatenate(got)[:count]


def check_calibration(data_cfg: Any, train_set: ImageSet, count: int) -> None:
    if count < 1 or len(train_set) < count:
        where = data_cfg.root or f"data.source={data_cfg.source}"
        raise DataError(f"--calibration {count}: the training split of {where} has {len(train_set)} images "
                        f"(e.g. --calibration {min(512, len(train_set))})")


def calibration_batches(data_cfg: Any, train_set: ImageSet, source: WeightsSource, count: int) -> list[np.ndarray]:
    """`count` training images drawn at random (seed 0), through the eval transform, as uint8 batches."""
    chosen = np.sort(np.random.default_rng(0).choice(len(train_set), count, replace=False))
    subset = train_set.subset(chosen)
    return [images.numpy().copy() for images, _ in eval_images(data_cfg, subset, source.transform, 64)]


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def table_text(rows: list[dict[str, Any]]) -> str:
    header = ["model", "size MB", "top-1 %", "top-5 %", "diff pt", "img/s b1", "p99 ms b1", "img/s b64", "p99 ms b64"]
    lines = []
    for r in rows:
        t1, t64 = r["latency"]["1"], r["latency"]["64"]
        diff = "" if r["top1_difference_points"] is None else f"{r['top1_difference_points']:+.2f}"
        lines.append([r["model"], f"{r['size_mb']:.2f}", f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}", diff,
                      f"{t1['images_per_sec']:,.0f}", f"{t1['p99_ms']:.2f}", f"{t64['images_per_sec']:,.0f}",
                      f"{t64['p99_ms']:.2f}"])
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def table_row(name: str, path: Path, result: dict[str, float], reference: float | None, run: Any, side: int,
              seconds: float) -> dict[str, Any]:
    return {"model": name, "file": path.name, "size_mb": file_mb(path), "top1": result["top1"], "top5": result["top5"],
            "top1_difference_points": None if reference is None else 100 * (result["top1"] - reference),
            "latency": {str(b): latency(run, b, side, seconds=seconds) for b in LATENCY_BATCHES}}


def export(args: argparse.Namespace) -> int:
    import onnx
    import onnxruntime

    model_path = find_checkpoint(resolve_model_path(args.model))
    source = read_weights(model_path, args.weights)
    for note in source.notes:
        log.info("%s: %s", model_path.name, note)
    out = args.out or model_path.parent / "export"
    cfg = source.run_config()
    train_set, val_set = load_image_sets(cfg.data)
    if args.int8:
        check_calibration(cfg.data, train_set, args.calibration)
    side = source.transform.crop
    module = DeployedModel(exportable(source.build_model()), source.transform)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = temporary_name(out)  # a folder beside `out`, named as atomic_open names its files
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        env = environment()
        meta = metadata_props(
            classes=source.classes, eval_transform=source.transform.to_dict(), input="images: uint8 NHWC [N, "
            f"{side}, {side}, 3], RGB, decoded, resized and centre-cropped as eval_transform says", output="logits",
            model=source.model_name, weights=source.weights, opset=OPSET, torch=torch.__version__,
            onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, checkpoint=str(model_path),
            checkpoint_sha256=source.sha256, git=env.get("git"), recorded_top1=source.recorded.get("top1"),
            recorded_top5=source.recorded.get("top5"))
        fp32 = work / "model.onnx"
        log.info("exporting %s (%s weights, %d classes, %s)", model_path, source.weights, len(source.classes),
                 source.transform.describe())
        export_onnx(module, fp32, meta)
        onnx.checker.check_model(str(fp32), full_check=True)
        gate = parity(module, fp32, first_images(eval_images(cfg.data, val_set, source.transform, 64), 64))
        log.info("parity: max |logit difference| %.2e at batches %s, top-1 agreement 100%%",
                 gate["max_abs_logit_difference"], list(PARITY_BATCHES))
        evaluated = lambda run: accuracy(run, eval_images(cfg.data, val_set, source.transform, EVAL_BATCH))  # noqa: E731
        eager = torch_runner(module)
        rows = [table_row("checkpoint", model_path, evaluated(eager), None, eager, side, args.latency_seconds)]
        fp32_run = session_runner(open_session(fp32))
        rows.append(table_row("fp32", fp32, evaluated(fp32_run), rows[0]["top1"], fp32_run, side, args.latency_seconds))
        record: dict[str, Any] = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python -m pipeline.export", *sys.argv[1:]]),
            "metadata": {**meta, "classes": source.classes, "eval_transform": source.transform.to_dict()},
            "recorded": source.recorded, "notes": source.notes, "parity": gate,
            "evaluated_on": {"split": "evaluation", "images": len(val_set), "data": cfg.data.source,
                             "root": cfg.data.root},
            "machine": {"cpu": cpu_model(), "int8_features": int8_features(), **env}, "table": rows}
        failure = None
        if args.int8:
            failure = quantize_and_gate(args, cfg, train_set, source, fp32, work, rows, record, evaluated, side)
        atomic_write_text(work / "export.json", json.dumps(record, indent=1) + "\n")
        written = sorted(p.name for p in work.iterdir())
        publish(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table_text(rows))
    print(f"wrote {', '.join(written)} to {out}")
    log_to_wandb(cfg, out, record, model_path)
    if failure:
        raise GateFailed(failure)
    return int(ExitCode.OK)


def quantize_and_gate(args: argparse.Namespace, cfg: Any, train_set: ImageSet, source: WeightsSource, fp32: Path,
                      work: Path, rows: list[dict[str, Any]], record: dict[str, Any], evaluated: Any,
                      side: int) -> str | None:
    """model.int8.onnx in `work` and its table row, or the gate's failure message (and no int8 file)."""
    from pipeline.deploy.quantize import operator_counts, quantize_int8

    batches = calibration_batches(cfg.data, train_set, source, args.calibration)
    int8 = work / "model.int8.onnx"
    log.info("int8: calibrating on %d training images", args.calibration)
    quantize_int8(fp32, int8, batches, work)
    run = session_runner(open_session(int8))
    row = table_row("int8", int8, evaluated(run), rows[1]["top1"], run, side, args.latency_seconds)
    ops = operator_counts(int8)
    drop = -row["top1_difference_points"]
    record["int8"] = {"calibration_images": args.calibration, "operators": ops, "top1_drop_points": drop,
                      "max_drop_points": INT8_MAX_DROP}
    log.info("int8: %d operators quantized, %d stay float (%s)", ops["quantized"], ops["float"],
             ", ".join(f"{k} {v}" for k, v in sorted(ops["float_types"].items())))
    if drop > INT8_MAX_DROP:
        int8.unlink()
        record["int8"]["refused"] = True
        return (f"int8: top-1 dropped {drop:.2f} points against fp32 ({100 * rows[1]['top1']:.2f}% -> "
                f"{100 * row['top1']:.2f}%), more than {INT8_MAX_DROP} allowed: model.int8.onnx not written")
    rows.append(row)
    return None


def int8_features() -> list[str]:
    """The CPU's int8 instructions that onnxruntime's kernels use (x86: VNNI, AMX), from /proc/cpuinfo."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in set(flags) if "vnni" in f or f.startswith("amx") or f in ("avx512f", "avx2"))


def publish(work: Path, out: Path) -> None:
    """Move every file of `work` into `out`: each rename is atomic; an earlier export's int8 model goes when
    this one has none (it would describe other weights)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (work / "model.int8.onnx").exists():
        (out / "model.int8.onnx").unlink(missing_ok=True)
    for path in sorted(work.iterdir()):
        os.replace(path, out / path.name)
    fsync_dir(out)


def log_to_wandb(cfg: Any, out: Path, record: dict[str, Any], model_path: Path) -> None:
    """An `export` job in the run's W&B group: the models as Artifacts of type `model`, the table in its summary."""
    from pipeline.runs.resolved import environment_settings
    from pipeline.runs.tracking import Tracker

    run_name = model_path.parent.name
    tracker = Tracker(cfg.wandb, enabled=True, run_dir=out, run_name=f"{run_name}-export", experiment=cfg.name,
                      config={**cfg.to_dict(), "export": record["metadata"]}, environment=record["machine"],
                      job_type="export", resolved=environment_settings(environment()))
    if tracker.run is None:
        return
    import wandb

    summary = {f"export/{r['model']}/{k}": r[k] for r in record["table"] for k in ("size_mb", "top1", "top5")}
    summary |= {f"export/{r['model']}/images_per_sec_b{b}": r["latency"][b]["images_per_sec"]
                for r in record["table"] for b in r["latency"]}
    columns = ["model", "size_mb", "top1", "top5", "top1_difference_points"]
    summary["export/table"] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in record["table"]])
    tracker.summary(summary)
    for name in ("model.onnx", "model.int8.onnx"):
        if (out / name).is_file():
            tracker.log_model(out / name, f"{run_name}-{name.replace('.onnx', '').replace('.', '-')}", ["latest"],
                              {"checkpoint_sha256": record["metadata"]["checkpoint_sha256"], "file": name})
    tracker.finish()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pipeline.runs.rundir import setup_logging

    setup_logging(0)
    try:
        return export(args)
    except UserError as exc:
        print_user_error(exc, "export error")
        return int(ExitCode.BAD_INPUT)
    except GateFailed as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return int(ExitCode.ERROR)
