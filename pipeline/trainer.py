"""The training loop: setup, train steps, evaluation, checkpoints, tracking.

    trainer = Trainer(cfg, init_distributed(cfg.dist.backend))
    exit_code = trainer.fit()

`fit()` reads as a table of contents: prepare the run directory, build data, model and
optimizer, resume if a checkpoint exists, then per epoch `train_epoch()` -> `evaluate()` ->
`save()`. The model is wrapped in one place (`wrap_model`): channels_last -> optional
torch.compile -> DDP, with the raw module kept for state_dicts and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from models import build_model
from pipeline import checkpoint as ckpt_io
from pipeline import distributed
from pipeline.config import Config, save_config
from pipeline.data import build_loader, load_image_sets
from pipeline.distributed import DistInfo
from pipeline.envinfo import describe, environment
from pipeline.metrics import MetricsLog, StepStats, ThroughputMeter, read_metrics
from pipeline.optim import build_optimizer
from pipeline.plots import plot_curves
from pipeline.precision import Precision, build_precision
from pipeline.preemption import StopRequest
from pipeline.progress import Progress
from pipeline.rundir import default_run_name, prepare_run_dir, resolve_run_dir, setup_logging
from pipeline.schedule import build_scheduler
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline")

STOP_CHECK_EVERY = 10  # steps between the ranks' agreement on a stop request (a CPU message)


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    BAD_INPUT = 2  # config, data or checkpoint problem found before or during start-up
    NONFINITE = 4  # the loss stayed NaN/inf for train.nonfinite_limit steps
    PREEMPTED = 75  # stopped by SIGTERM/SIGINT after writing a checkpoint (EX_TEMPFAIL: run again)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Counters:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps completed in the current epoch
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = -1  # 1-based epoch of best_top1
    final: dict[str, float] = field(default_factory=dict)  # latest evaluation


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, images: torch.Tensor,
               labels: torch.Tensor, label_smoothing: float = 0.0, poison: bool = False) -> torch.Tensor:
    """Forward, backward and optimizer step; returns the loss on the device (no host sync).

    The one training step, used by the trainer and by the benchmarks. `poison` makes the loss
    NaN (train.debug_nan_step, for testing the non-finite guard).
    """
    with precision.autocast():
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if poison:
        loss = loss * float("nan")
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return loss.detach()


def check_input_sizes(model: nn.Module, sizes: dict[str, int], num_classes: int) -> None:
    """Run the network once on CPU at each input size, so a size it cannot take fails now."""
    model.eval()
    with torch.no_grad():
        for key, side in sizes.items():
            try:
                out = model(torch.zeros(2, 3, side, side))
            except RuntimeError as exc:
                raise ValueError(f"{key}: the network cannot take {side}x{side} inputs "
                                 f"({str(exc).splitlines()[0]})") from None
            if out.shape != (2, num_classes):
                raise ValueError(f"{key}: a {side}x{side} input gives outputs of shape {tuple(out.shape)}")
    model.train()


def wrap_model(model: nn.Module, cfg: Config, dist: DistInfo) -> nn.Module:
    """channels_last -> (SyncBatchNorm) -> torch.compile -> DDP; `model` itself stays unwrapped."""
    model.to(dist.device, memory_format=torch.channels_last)
    wrapped: nn.Module = model
    if cfg.train.compile:
        wrapped = torch.compile(wrapped)
    if dist.distributed:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        wrapped = DDP(wrapped, device_ids=device_ids, gradient_as_bucket_view=True)
    return wrapped


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal on all ranks unless DDP replicas diverged."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo) -> None:
        self.cfg, self.dist = cfg, dist
        self.counters = Counters()
        self.stop = StopRequest()
        self.tracker: Tracker | None = None

    # ------------------------------------------------------------------------------- fit

    def fit(self) -> ExitCode:
        self.setup()
        if self.cfg.eval.only:
            return self.evaluate_only()
        self.stop.install()
        try:
            return self._run_epochs()
        except NonFiniteLossError as exc:
            log.error("stopping: %s. Checkpoints in %s were not overwritten; resume from the last good "
                      "one with a lower optim.lr, or set train.nonfinite_limit.", exc, self.run_dir)
            return ExitCode.NONFINITE
        finally:
            self.stop.uninstall()
            self.finish()

    def _run_epochs(self) -> ExitCode:
        epochs = self.cfg.train.epochs
        while self.counters.epoch < epochs:
            epoch = self.counters.epoch
            if not self.train_epoch(epoch):
                self.save_step_checkpoint()
                log.warning("preempted at step %d: checkpoint written to %s; exit status %d",
                            self.counters.global_step, self.run_dir, ExitCode.PREEMPTED)
                return ExitCode.PREEMPTED
            self.counters.epoch, self.counters.step_in_epoch = epoch + 1, 0
            metrics = self.evaluate() if self.eval_due(epoch + 1) else None
            if metrics is not None:
                self.record_evaluation(metrics)
            self.save_epoch_checkpoint(new_best=metrics is not None and self.counters.best_epoch == epoch + 1)
        self.report_final()
        return ExitCode.OK

    def evaluate_only(self) -> ExitCode:
        """eval.only: evaluate the restored weights, write eval.json, print the figures."""
        try:
            if self.counters.global_step == 0 and self.cfg.checkpoint.resume == "auto":
                raise ckpt_io.CheckpointError(f"eval.only: no checkpoint in {self.run_dir}")
            metrics = self.evaluate()
            if self.dist.is_main:
                (self.run_dir / "eval.json").write_text(json.dumps({**metrics, "step": self.counters.global_step}, indent=1))
                log.info("evaluation of step %d: top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images",
                         self.counters.global_step, 100 * metrics["val/top1"], 100 * metrics["val/top5"],
                         metrics["val/loss"], metrics["val/images"])
            return ExitCode.OK
        finally:
            self.finish(plot=False)

    def eval_due(self, epochs_done: int) -> bool:
        every = self.cfg.eval.every
        return epochs_done == self.cfg.train.epochs or (every > 0 and epochs_done % every == 0)

    # ----------------------------------------------------------------------------- setup

    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.run_dir = self.setup_run_dir()
        setup_logging(dist.rank, self.run_dir / "train.log")
        self.env = environment()
        if dist.is_main:
            log.info("run directory: %s", self.run_dir)
            log.info("%d process(es) on %s; %s", dist.world_size, dist.device, describe(self.env))
        self.precision: Precision = build_precision(cfg.train.precision, dist.device)
        self.configure_determinism()
        resume_from = self.find_resume_checkpoint()
        self.build_data(resume_from)
        self.build_model_and_optimizer()
        if resume_from is not None:
            self.restore(*resume_from)
        self.stats = StepStats(dist.device)
        self.meter = ThroughputMeter(self.local_batch, cfg.logging.perf_warmup_steps, dist.device)
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=dist.is_main)
        self.metrics_log.truncate_after(self.counters.global_step)
        self.progress = Progress(cfg.logging.progress, enabled=dist.is_main)
        self.tracker = Tracker(cfg.wandb, enabled=dist.is_main, run_dir=self.run_dir, run_name=self.run_dir.name,
                               experiment=cfg.name, config=cfg.to_dict(), environment=self.env)

    def setup_run_dir(self) -> Path:
        cfg = self.cfg
        name = cfg.logging.run_name or (default_run_name(cfg.name) if self.dist.is_main else None)
        name = distributed.broadcast_object(name)
        run_dir = resolve_run_dir(cfg.logging.runs_dir, name)
        if self.dist.is_main:
            prepare_run_dir(run_dir)
            save_config(cfg, run_dir / "config.yaml")
        distributed.barrier()
        return run_dir

    def configure_determinism(self) -> None:
        seed = self.cfg.train.seed
        torch.manual_seed(seed)  # identical initial weights on every rank
        random.seed(seed + self.dist.rank)
        if self.cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True

    def find_resume_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        mode = self.cfg.checkpoint.resume
        if mode == "never":
            return None
        if mode == "auto":
            path = None
            if self.dist.is_main:
                found = ckpt_io.latest_good(self.run_dir)
                path = str(found[0]) if found else None
            path = distributed.broadcast_object(path)
            if path is None:
                return None
            path = Path(path)
        else:
            path = Path(mode).expanduser()
        ckpt = ckpt_io.load(path)
        ckpt_io.check_compatible(ckpt, self.cfg.to_dict(), path)
        if ckpt["world_size"] != self.dist.world_size and ckpt["counters"]["step_in_epoch"] != 0:
            raise ckpt_io.CheckpointError(
                f"{path}: written mid-epoch by {ckpt['world_size']} process(es); exact resume needs the same "
                f"number (this run has {self.dist.world_size}). Resume from an epoch-end checkpoint instead "
                f"(checkpoint.resume={path.parent / 'last.pt'})")
        return path, ckpt

    def build_data(self, resume_from: tuple[Path, dict[str, Any]] | None) -> None:
        cfg, dist = self.cfg, self.dist
        self.local_batch = cfg.train.global_batch_size // dist.world_size
        train_set = val_set = None
        if cfg.data.source != "synthetic":
            train_set, val_set = load_image_sets(cfg.data)
            if len(train_set.classes) != cfg.model.num_classes:
                raise ValueError(f"model.num_classes: {cfg.model.num_classes}, but the data has "
                                 f"{len(train_set.classes)} classes")
            if train_set.skipped or val_set.skipped:
                log.warning("left out %d undecodable training and %d validation file(s)",
                            len(train_set.skipped), len(val_set.skipped))
        loader_state, start_epoch = None, 0
        if resume_from is not None:
            ckpt = resume_from[1]
            start_epoch = ckpt["counters"]["epoch"]
            if ckpt["world_size"] == dist.world_size:
                loader_state = ckpt["rank_states"][dist.rank]["loader"]
        common = dict(rank=dist.rank, world_size=dist.world_size, seed=cfg.train.seed, device=dist.device,
                      dtype=self.precision.dtype, num_classes=cfg.model.num_classes)
        self.train_loader = build_loader(cfg.data, images=train_set, train=True, batch_size=self.local_batch,
                                         max_steps=cfg.train.max_steps_per_epoch, state=loader_state,
                                         start_epoch=start_epoch, **common)
        self.eval_loader = build_loader(cfg.data, images=val_set, train=False, batch_size=cfg.eval.batch_size,
                                        **common)
        self.steps_per_epoch = len(self.train_loader)
        if dist.is_main:
            n_train = len(train_set) if train_set is not None else cfg.data.synthetic_images
            log.info("data: %s, %d training images (%d steps of %d per epoch), %d validation images",
                     cfg.data.source, n_train, self.steps_per_epoch, cfg.train.global_batch_size,
                     len(val_set) if val_set is not None else 0)

    def build_model_and_optimizer(self) -> None:
        cfg, dist = self.cfg, self.dist
        model = build_model(cfg.model.name, num_classes=cfg.model.num_classes, dropout=cfg.model.dropout)
        check_input_sizes(model, {"data.train.crop": cfg.data.train.crop, "data.eval.crop": cfg.data.eval.crop},
                          cfg.model.num_classes)
        if cfg.dist.sync_bn and dist.distributed:
            if dist.device.type != "cuda":
                raise ValueError("dist.sync_bn: torch's SyncBatchNorm runs only on GPUs; set dist.sync_bn=false on CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model  # the raw module: state_dicts and evaluation
        self.wrapped = wrap_model(model, cfg, dist)
        torch.manual_seed(cfg.train.seed + 1000 + dist.rank)  # dropout differs per rank
        self.optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size, dist.device)
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.epochs, self.steps_per_epoch)
        self.ema = None
        if cfg.train.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)

    def restore(self, path: Path, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.precision.scaler.is_enabled() and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"], strict=True)
        self.counters = Counters(**ckpt["counters"])
        if ckpt["world_size"] == self.dist.world_size:
            set_rng_state(ckpt["rank_states"][self.dist.rank]["rng"], self.dist.device)
        if self.dist.is_main:
            log.info("resumed from %s: epoch %d, step %d of the epoch, global step %d", path,
                     self.counters.epoch, self.counters.step_in_epoch, self.counters.global_step)

    # ---------------------------------------------------------------------------- train

    def train_epoch(self, epoch: int) -> bool:
        """Run the rest of `epoch`; False if a stop was requested (the loop ends after a whole step)."""
        c, log_every = self.counters, self.cfg.logging.log_every
        self.wrapped.train()
        self.meter.start_epoch()
        self.progress.start_epoch(epoch, self.cfg.train.epochs, self.steps_per_epoch, c.step_in_epoch)
        try:
            for images, labels in self.meter.timed(self.train_loader):
                loss = self.train_step(images, labels)
                self.stats.add(loss)
                self.meter.step_done()
                c.step_in_epoch += 1
                c.global_step += 1
                self.progress.advance()
                if c.global_step % log_every == 0 or c.step_in_epoch == self.steps_per_epoch:
                    self.log_training()
                every = self.cfg.checkpoint.every_steps
                if every and c.global_step % every == 0 and c.step_in_epoch < self.steps_per_epoch:
                    self.save_step_checkpoint()
                if self.stop_agreed():
                    return False
        finally:
            self.progress.end_epoch()
        return not distributed.any_rank(self.stop.requested)

    def stop_agreed(self) -> bool:
        """Has any rank been asked to stop? Ranks compare notes every STOP_CHECK_EVERY steps."""
        if not self.dist.distributed:
            return self.stop.requested
        return self.counters.global_step % STOP_CHECK_EVERY == 0 and distributed.any_rank(self.stop.requested)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        poison = 0 <= self.cfg.train.debug_nan_step <= self.counters.global_step  # testing aid
        loss = train_step(self.wrapped, self.optimizer, self.precision, images, labels,
                          self.cfg.train.label_smoothing, poison=poison)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss

    def log_training(self) -> None:
        c = self.counters
        stats = self.stats.read()
        if stats["max_bad_streak"] >= self.cfg.train.nonfinite_limit:
            raise NonFiniteLossError(
                f"the loss was NaN/inf for {stats['max_bad_streak']} consecutive steps "
                f"(train.nonfinite_limit = {self.cfg.train.nonfinite_limit}) at global step {c.global_step}")
        record: dict[str, Any] = {
            "step": c.global_step,
            "epoch": round(c.global_step / self.steps_per_epoch, 4),
            "train/loss": stats["loss"],
            "train/lr": self.optimizer.param_groups[0]["lr"],
        }
        perf = self.meter.read()
        if perf is not None:
            record.update(perf)
        if self.dist.device.type == "cuda":
            record["perf/gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        self.metrics_log.write(record)
        self.tracker.log(record)
        self.progress.report(c.step_in_epoch, self.steps_per_epoch, record, self.eta_seconds())

    def eta_seconds(self) -> float:
        ips = self.meter.mean_images_per_sec_per_device
        remaining = self.cfg.train.epochs * self.steps_per_epoch - self.counters.global_step
        return remaining * self.local_batch / ips if ips == ips and ips > 0 else float("nan")

    # ------------------------------------------------------------------------- evaluate

    def sync_buffers(self) -> None:
        """All ranks adopt rank 0's BatchNorm statistics (model and EMA) before evaluating or saving."""
        distributed.broadcast_buffers(self.model)
        if self.ema is not None:
            distributed.broadcast_buffers(self.ema)

    def eval_model(self) -> nn.Module:
        if self.ema is not None and self.cfg.eval.use_ema:
            return self.ema.module
        return self.model

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1, top-5 and mean loss over the whole validation split, summed exactly over ranks."""
        self.sync_buffers()
        model = self.eval_model()
        was_training = model.training
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.dist.device)  # loss, top1, top5, count
        for images, labels in self.eval_loader:
            with self.precision.autocast():
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices == labels[:, None]
            sums += torch.stack([
                F.cross_entropy(logits, labels, reduction="sum").double(),
                hits[:, 0].sum().double(), hits.any(dim=1).sum().double(), torch.tensor(len(labels), device=sums.device).double(),
            ])
        model.train(was_training)
        total = distributed.all_reduce_sum(sums.cpu())
        count = total[3].item()
        return {"val/loss": total[0].item() / count, "val/top1": total[1].item() / count,
                "val/top5": total[2].item() / count, "val/images": int(count)}

    def record_evaluation(self, metrics: dict[str, float]) -> None:
        c = self.counters
        c.final = {**metrics, "epoch": c.epoch}
        if metrics["val/top1"] > c.best_top1:
            c.best_top1, c.best_epoch = metrics["val/top1"], c.epoch
        record = {"step": c.global_step, "epoch": c.epoch, **metrics}
        self.metrics_log.write(record)
        self.tracker.log(record)
        log.info("epoch %d/%d: val top-1 %.2f%%, top-5 %.2f%%, loss %.4f (best %.2f%% at epoch %d)",
                 c.epoch, self.cfg.train.epochs, 100 * metrics["val/top1"], 100 * metrics["val/top5"],
                 metrics["val/loss"], 100 * c.best_top1, c.best_epoch)

    # ------------------------------------------------------------------------ checkpoints

    def weights_are_finite(self) -> bool:
        params = [p for p in self.model.parameters()] + ([*self.ema.parameters()] if self.ema else [])
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def checkpoint_payload(self) -> dict[str, Any] | None:
        """The full checkpoint on rank 0 (None elsewhere); every rank contributes its own state."""
        self.sync_buffers()
        loader_state = self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        rank_states = distributed.gather_objects({"loader": loader_state, "rng": rng_state(self.dist.device),
                                                  "digest": parameter_digest(self.model)})
        if not self.dist.is_main:
            return None
        if len({r["digest"] for r in rank_states}) > 1:
            raise RuntimeError("model replicas differ between ranks (parameter digests disagree); "
                               "this is a bug in the distributed setup, not in the data")
        return {
            "format_version": ckpt_io.FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler.is_enabled() else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "counters": asdict(self.counters),
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
            "rank_states": rank_states,
        }

    def write_checkpoint(self, names: list[Path]) -> None:
        if distributed.any_rank(not self.weights_are_finite()):
            log.error("weights are not finite: not writing %s", ", ".join(p.name for p in names))
            return
        payload = self.checkpoint_payload()
        if payload is not None:
            for path in names:
                ckpt_io.atomic_save(payload, path)
        distributed.barrier()  # nobody resumes or exits before the file is complete

    def save_step_checkpoint(self) -> None:
        path = ckpt_io.step_path(self.run_dir, self.counters.global_step)
        self.write_checkpoint([path])
        if self.dist.is_main:
            ckpt_io.prune_step_checkpoints(self.run_dir, self.cfg.checkpoint.keep_last)

    def save_epoch_checkpoint(self, new_best: bool) -> None:
        epoch = self.counters.epoch
        names = []
        if epoch % self.cfg.checkpoint.every_epochs == 0 or epoch == self.cfg.train.epochs:
            names.append(self.run_dir / "last.pt")
        if new_best and self.cfg.checkpoint.save_best:
            names.append(self.run_dir / "best.pt")
        if names:
            self.write_checkpoint(names)

    # ----------------------------------------------------------------------------- finish

    def report_final(self) -> None:
        c = self.counters
        per_device = torch.tensor([self.meter.mean_images_per_sec_per_device], dtype=torch.float64)
        per_device = torch.nan_to_num(per_device, nan=0.0)
        total = distributed.all_reduce_sum(per_device.clone()).item()
        summary = {"perf/mean_images_per_sec": total, "perf/mean_images_per_sec_per_device": total / self.dist.world_size}
        if c.final:
            summary.update({"final/top1": c.final["val/top1"], "final/top5": c.final["val/top5"],
                            "final/loss": c.final["val/loss"], "final/epoch": c.final["epoch"],
                            "best/top1": c.best_top1, "best/epoch": c.best_epoch})
        self.tracker.summary(summary)
        if self.dist.is_main and c.final:
            speed = (f"{total:,.0f} img/s ({total / self.dist.world_size:,.0f} per device, warm-up and evaluation "
                     "excluded)" if total > 0 else "throughput not measured (epochs shorter than "
                     "logging.perf_warmup_steps)")
            log.info("done: final top-1 %.2f%% (epoch %d), best top-1 %.2f%% (epoch %d); %s",
                     100 * c.final["val/top1"], c.final["epoch"], 100 * c.best_top1, c.best_epoch, speed)
            log.info("run directory: %s", self.run_dir)

    def finish(self, plot: bool = True) -> None:
        if plot and self.dist.is_main and getattr(self, "metrics_log", None) is not None:
            records = read_metrics(self.metrics_log.path) if self.metrics_log.path.exists() else []
            if records:
                plot_curves(records, self.run_dir / "curves.png", title=self.run_dir.name)
        if self.tracker is not None:
            self.tracker.finish()
