"""Everything a training run is made of, built in one place from the config.

    data = load_data(cfg.data)                    # the image lists (None for synthetic data)
    cfg = resolve_num_classes(cfg, data)          # model.num_classes: auto -> the data's count
    parts = build_components(cfg, dist, resume, data=data)   # model, wrapped model, optimizer,
                                                  # schedule, precision, EMA, train and eval loaders
    step = build_training_step(parts, cfg.train)  # what runs per step (pipeline/training/step.py)
The trainer and `python -m pipeline.bench train` both call it, so a benchmark measures the
setup that trains. Each builder receives only its own config section.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models import build_model
from pipeline import distributed
from pipeline.config import Config, describe_ignored, ignored_data_keys
from pipeline.data import ImageSet, Loader, build_loader, load_image_sets
from pipeline.data.loader import resolve_dali_device
from pipeline.data.augment.progressive import ProgressiveResize
from pipeline.distributed import DistInfo
from pipeline.errors import ConfigError
from pipeline.runs.fingerprint import data_fingerprint
from pipeline.runs.resolved import environment_settings
from pipeline.training.checkpoint import ResumePoint
from pipeline.training.ema import WeightEMA, Weights, evaluated_models
from pipeline.training.finetune import check_continuation, freeze, initialize_from
from pipeline.training.mixing import BatchMixer
from pipeline.training.optim import build_optimizer, scaled_lr
from pipeline.training.precision import Precision, build_precision
from pipeline.training.recipe import recipe_in_force
from pipeline.training.schedule import build_scheduler, total_steps
from pipeline.training.step import TrainingStep, wrap_model

log = logging.getLogger(__name__)

ImageSets = tuple[ImageSet, ImageSet]  # (training, validation)


@dataclass
class Components:
    """The modules, optimizer state and loaders of one run on one rank."""

    model: nn.Module  # the raw module: state_dicts and evaluation
    wrapped: nn.Module  # channels_last -> compile -> DDP: what the training step calls
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    ema: WeightEMA | None
    train_loader: Loader
    eval_loader: Loader | None
    local_batch: int  # images per step on this rank
    num_classes: int
    train_sides: tuple[int, ...]  # the training input sides of the run: one, or progressive resizing's sizes
    classes: list[str] | None = None  # class names in label order (None: synthetic data has none)
    init_from: dict[str, Any] | None = None  # train.init_from's path, sha256 and weights (fine-tuning); None otherwise
    frozen_norms: tuple[nn.Module, ...] = ()  # train.freeze: BatchNorm layers that stay in eval mode

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def eval_models(self, weights: Weights) -> dict[str, nn.Module]:
        """The modules eval.weights asks for, keyed "ema" / "raw", the headline first."""
        return evaluated_models(self.model, self.ema, weights)

    def train_mode(self) -> None:
        """Training mode for the step, except a frozen backbone's BatchNorm (train.freeze), which keeps its statistics."""
        self.wrapped.train()
        for norm in self.frozen_norms:
            norm.eval()

    def sync_buffers(self) -> None:
        """All ranks adopt rank 0's BatchNorm statistics (model and EMA) before evaluating or saving.

        DDP does not broadcast buffers during training (wrap_model), so between two of these calls
        every rank's statistics follow its own batches. Every evaluation and every checkpoint
        starts here, so a resumed run continues from the same statistics as an uninterrupted one.
        """
        distributed.broadcast_buffers(self.model)
        if self.ema is not None:  # the module only: n_averaged is a CPU tensor, equal on every rank
            distributed.broadcast_buffers(self.ema.module)

    def state_dict(self) -> dict[str, Any]:
        """The run's trainable state, one state_dict per part: what a checkpoint saves and what a time budget's
        measurement puts back (with pipeline/training/state.py's counters and RNG). `scaler` is None without
        fp16, `ema` None without an EMA."""
        scaler = self.precision.scaler
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load `state_dict()`'s entries strictly (the optimizer's hyperparameters with its state: see
        checkpoint.apply_configured_hyperparameters). A scaler or EMA state is loaded where both this run and
        `state` have one: fp16 or the EMA turned on or off by an accepted change starts from its own."""
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.precision.scaler.is_enabled() and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"], strict=True)

    @torch.no_grad()
    def weights_are_finite(self) -> bool:
        """Every parameter (and EMA parameter) finite: one fused max-abs over all of them, one read."""
        params = [*self.model.parameters(), *(self.ema.parameters() if self.ema is not None else [])]
        return bool(torch.stack(torch._foreach_norm(params, float("inf"))).isfinite().all())


def build_training_step(parts: Components, train_cfg: Any) -> TrainingStep:
    """The step the trainer runs (and `bench train` measures): (mixup/CutMix,) model, optimizer, schedule, EMA,
    statistics; with progressive resizing, the first step at each size timed."""
    return TrainingStep(parts.model, parts.wrapped, parts.optimizer, parts.scheduler, parts.precision, parts.ema,
                        label_smoothing=train_cfg.label_smoothing, debug_nan_step=train_cfg.debug_nan_step,
                        mixer=BatchMixer.from_config(train_cfg), num_classes=parts.num_classes,
                        report_sizes=len(parts.train_sides) > 1, compiled=train_cfg.compile != "off")


def train_sides(data_cfg: Any) -> tuple[int, ...]:
    """The training input sides: data.train.crop, or every size of progressive resizing, smallest first."""
    grow = ProgressiveResize.from_config(data_cfg.train)
    return grow.sides() if grow is not None else (data_cfg.train.crop,)


def configure_determinism(train_cfg: Any, rank: int) -> None:
    """Seeds (identical initial weights on every rank) and cudnn's algorithm choice."""
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed + rank)
    if train_cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _takes_side(model: nn.Module, side: int) -> bool:
    try:
        model(torch.zeros(1, 3, side, side))
    except RuntimeError:
        return False
    return True


def smallest_input_side(model: nn.Module, too_small: int, limit: int = 1024) -> int | None:
    """The smallest square input above `too_small` that the network takes (it takes every larger one)."""
    low, high = too_small, max(2 * too_small, 8)
    while not _takes_side(model, high):  # doubling first: forward passes at large sides are slow on a CPU
        low, high = high, 2 * high
        if high > limit:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if _takes_side(model, mid) else (mid, high)
    return high


def check_input_sizes(model: nn.Module, sizes: dict[str, int], num_classes: int) -> None:
    """Run the network once on CPU at each input size, so a size it cannot take fails now."""
    model.eval()
    with torch.no_grad():
        for key, side in sizes.items():
            try:
                out = model(torch.zeros(2, 3, side, side))
            except RuntimeError as exc:
                smallest = smallest_input_side(model, side)
                hint = f"; the smallest it takes is {smallest}x{smallest} (e.g. {key}={smallest})" if smallest else ""
                raise ConfigError(f"{key}: the network cannot take {side}x{side} inputs "
                                  f"({str(exc).splitlines()[0]}){hint}") from None
            if out.shape != (2, num_classes):
                raise ConfigError(f"{key}: a {side}x{side} input gives outputs of shape {tuple(out.shape)}")
    model.train()


def build_network(model_cfg: Any, data_cfg: Any, dist: DistInfo, sync_bn: bool) -> nn.Module:
    """The raw model, checked against the input sizes; SyncBatchNorm when asked for under DDP."""
    model = build_model(model_cfg.name, num_classes=model_cfg.num_classes, dropout=model_cfg.dropout)
    sizes = {"data.train.crop": data_cfg.train.crop, "data.eval.crop": data_cfg.eval.crop}
    if data_cfg.train.progressive_start_crop:  # the smallest training size (the network takes every larger one)
        sizes["data.train.progressive_start_crop"] = data_cfg.train.progressive_start_crop
    check_input_sizes(model, sizes, model_cfg.num_classes)
    if sync_bn and dist.distributed:
        if dist.device.type != "cuda":
            raise ConfigError("dist.sync_bn: torch's SyncBatchNorm runs only on GPUs; set dist.sync_bn=false on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def load_data(data_cfg: Any) -> ImageSets | None:
    """This rank's (training, validation) image sets; None for synthetic data, which has no files."""
    return None if data_cfg.source == "synthetic" else load_image_sets(data_cfg)


def resolve_num_classes(cfg: Config, data: ImageSets | None) -> Config:
    """`cfg` with model.num_classes: auto replaced by the number of classes in rank 0's training split.

    Call it on every rank (rank 0's count is broadcast), before anything records the config: the
    resolved number is what the model, config.yaml, checkpoints (and the check that refuses to
    resume a different setup) and W&B see. A number given explicitly comes back unchanged;
    `build_loaders` checks it against the data.
    """
    if cfg.model.num_classes != "auto":
        return cfg
    assert data is not None, "the config refuses num_classes: auto with data.source = synthetic"
    resolved = cfg.model_copy(deep=True)
    resolved.model.num_classes = distributed.broadcast_object(len(data[0].classes))
    return resolved


def rebuild_train_loader(cfg: Config, dist: DistInfo, data: ImageSets | None, parts: Components) -> None:
    """A new training loader for `parts`, at the run's first batch (after train.time_budget measured the run)."""
    parts.train_loader, _ = build_loaders(cfg, dist, data, parts.precision.dtype, None, with_eval=False, quiet=True)


def rebuild_eval_loader(cfg: Config, dist: DistInfo, data: ImageSets | None, parts: Components) -> None:
    """A new evaluation loader for `parts`, at its first batch (after a measurement cut an evaluation short)."""
    _, parts.eval_loader = build_loaders(cfg, dist, data, parts.precision.dtype, None, quiet=True)


def build_loaders(cfg: Config, dist: DistInfo, data: ImageSets | None, dtype: torch.dtype,
                  resume: ResumePoint | None, with_eval: bool = True,
                  quiet: bool = False) -> tuple[Loader, Loader | None]:
    """This rank's training loader (at the resume point's position) and evaluation loader."""
    train_set, val_set = data if data is not None else (None, None)
    if train_set is not None:
        if len(train_set.classes) != cfg.model.num_classes:
            found = len(train_set.classes)
            raise ConfigError(f"model.num_classes: {cfg.model.num_classes}, but the data has {found} classes; set "
                              f"model.num_classes={found}, or model.num_classes=auto to take the data's count")
        if train_set.skipped or val_set.skipped:
            log.warning("left out %d undecodable training and %d validation file(s)",
                        len(train_set.skipped), len(val_set.skipped))
    local_batch = cfg.train.global_batch_size // dist.world_size
    common = dict(rank=dist.rank, world_size=dist.world_size, seed=cfg.train.seed, device=dist.device,
                  dtype=dtype, num_classes=cfg.model.num_classes, compile_standardize=cfg.train.compile != "off")
    train_loader = build_loader(cfg.data, images=train_set, train=True, batch_size=local_batch,
                                max_steps=cfg.train.max_steps_per_epoch, total_epochs=cfg.train.epochs,
                                state=resume.loader_state(dist) if resume else None,
                                start_epoch=resume.epoch if resume else 0, **common)
    if cfg.train.max_steps and hasattr(train_loader, "set_total_steps"):  # progressive resizing runs over them
        train_loader.set_total_steps(total_steps(cfg.train.epochs, len(train_loader), cfg.train.max_steps))
    eval_loader = (build_loader(cfg.data, images=val_set, train=False, batch_size=cfg.eval.batch_size, **common)
                   if with_eval else None)
    if dist.is_main and not quiet:
        for key in ignored_data_keys(cfg.data):  # the harmless ones; keys that select data are config errors
            log.warning("%s", describe_ignored(cfg.data, key))
        n_train = len(train_set) if train_set is not None else cfg.data.synthetic_images
        log.info("data: %s, %d training images (%d steps of %d per epoch), %d validation images, %d classes",
                 cfg.data.source, n_train, len(train_loader), cfg.train.global_batch_size,
                 len(val_set) if val_set is not None else 0, cfg.model.num_classes)
    return train_loader, eval_loader


def build_components(cfg: Config, dist: DistInfo, resume: ResumePoint | None = None, *,
                     with_eval: bool = True, data: ImageSets | None = None) -> Components:
    """Seeds, loaders, model (wrapped), optimizer, schedule, precision and EMA for this rank.

    With `resume`, the training loader starts at the saved position; the state_dicts are loaded
    afterwards by `CheckpointManager.restore`. `data` is `load_data(cfg.data)` when the caller
    has listed it already (listed here otherwise).
    """
    if data is None:
        data = load_data(cfg.data)
    cfg = resolve_num_classes(cfg, data)  # a no-op when the caller resolved it
    configure_determinism(cfg.train, dist.rank)
    precision = build_precision(cfg.train.precision, dist.device)
    train_loader, eval_loader = build_loaders(cfg, dist, data, precision.dtype, resume, with_eval)
    model = build_network(cfg.model, cfg.data, dist, cfg.dist.sync_bn)
    check_continuation(cfg.train, resume)
    init = initialize_from(model, cfg.train) if resume is None else None
    frozen_norms = freeze(model, cfg.train.freeze)  # before DDP, which registers the parameters that train
    sides = train_sides(cfg.data)
    wrapped = wrap_model(model, dist, compile=cfg.train.compile, dynamic=False if len(sides) > 1 else None)
    torch.manual_seed(cfg.train.seed + 1000 + dist.rank)  # dropout differs per rank
    optimizer = build_optimizer(cfg.optim, model, cfg.train.global_batch_size, dist.device)
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.train.epochs, len(train_loader), cfg.train.max_steps)
    ema = WeightEMA(model, cfg.train.ema_decay, warmup=cfg.train.ema_warmup) if cfg.train.ema_decay > 0 else None
    return Components(model=model, wrapped=wrapped, optimizer=optimizer, scheduler=scheduler, precision=precision,
                      ema=ema, train_loader=train_loader, eval_loader=eval_loader,
                      local_batch=cfg.train.global_batch_size // dist.world_size, num_classes=cfg.model.num_classes,
                      train_sides=sides, classes=list(data[0].classes) if data is not None else None,
                      init_from=init.record() if init else (resume.ckpt.get("init_from") if resume else None),
                      frozen_norms=frozen_norms)


def resolved_settings(cfg: Config, dist: DistInfo, parts: Components, env: dict[str, Any]) -> dict[str, Any]:
    """Every resolved value of a training run (rank 0 calls this: the data fingerprint lists or hashes the data)."""
    on_gpu = dist.device.type == "cuda"
    if cfg.data.source == "synthetic":
        data_device, pipeline = ("gpu" if on_gpu else "cpu"), "synthetic"
    else:
        data_device = resolve_dali_device(cfg.data.device)
        pipeline = f"dali-{data_device}"
    return {
        **environment_settings(env),
        "resolved/gpu_count": dist.world_size if on_gpu else 0,  # GPUs this job trains on
        "resolved/precision": parts.precision.name,
        "resolved/data_device": data_device,
        "resolved/data_pipeline": pipeline,
        "resolved/compile": cfg.train.compile,
        "resolved/world_size": dist.world_size,
        "resolved/per_device_batch": parts.local_batch,
        "resolved/global_batch_size": cfg.train.global_batch_size,
        "resolved/effective_lr": scaled_lr(cfg.optim, cfg.train.global_batch_size),
        "resolved/steps_per_epoch": parts.steps_per_epoch,
        "resolved/data_fingerprint": data_fingerprint(cfg.data),
        **({"resolved/init_from_sha256": parts.init_from["sha256"]} if parts.init_from else {}),
        **recipe_in_force(cfg, total_steps(cfg.train.epochs, parts.steps_per_epoch, cfg.train.max_steps),
                          parts.train_sides),
    }
