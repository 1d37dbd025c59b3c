"""The model's side of training: wrap the model, one training step, one evaluation.

    wrapped = wrap_model(model, dist, compile="off")      # channels_last -> compile -> DDP
    step = TrainingStep(model, wrapped, optimizer, scheduler, precision, ema, label_smoothing=0.1)
    step(images, labels, global_step)                     # what the trainer runs per step: (mixup/CutMix,)
                                                          # forward, backward, optimizer, schedule, EMA, loss statistics
    metrics = evaluate(model, eval_loader, precision, flip=False)   # exact over all ranks; flip: eval.tta

The trainer and `python -m pipeline.bench train` both run `TrainingStep` (built by
`build_training_step` in components.py from the config), so a benchmark measures the step that
trains, the EMA included. `train_step` (forward, backward, optimizer) is the model alone, for
`bench model`.

Nothing here reads a device value back to the host: the losses stay on the device until a
logging boundary (meters.py), the evaluation sums until the end of the split
(`python -m pipeline.bench overhead` counts it).

CUDA graphs (`train.compile=reduce-overhead`) are captured on the second or third call of the
compiled model, while DALI's own threads keep issuing CUDA work for the next batches. That is
safe: torch's CUDA-graph trees capture with `capture_error_mode="thread_local"`
(torch/_inductor/cudagraph_trees.py), under which CUDA prohibits unsafe calls (allocations,
synchronizations) only from the capturing thread, so DALI's threads and streams neither break
nor join the capture; the batches they produce are inputs that the graph copies into its static
buffers before each replay.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline import distributed
from pipeline.data import Loader
from pipeline.distributed import DistInfo, synchronize
from pipeline.sections import no_section
from pipeline.training.confusion import ClassCounts
from pipeline.training.ema import WeightEMA
from pipeline.training.meters import StepStats
from pipeline.training.mixing import BatchMixer
from pipeline.training.precision import Precision

log = logging.getLogger("pipeline")

_CUDAGRAPH_TREES = "torch._inductor.cudagraph_trees"  # loaded by torch.compile when it builds CUDA graphs


def wrap_model(model: nn.Module, dist: DistInfo, *, compile: str = "off", dynamic: bool | None = None) -> nn.Module:
    """channels_last -> torch.compile -> DDP, in that order; `model` itself stays unwrapped.

    Moves `model` to the device in channels_last memory (in place); the returned module is what
    the training step calls. State dicts and evaluation use `model` (evaluation's partial last
    batch would otherwise cost a recompilation). `compile`: off, or a torch.compile mode
    (default, reduce-overhead = CUDA graphs, max-autotune, max-autotune-no-cudagraphs). `dynamic`:
    torch.compile's; False under progressive resizing, so each input size compiles its own
    specialised graph once (torch's default would recompile the second size with dynamic shapes).

    DDP does not broadcast buffers before every forward (`broadcast_buffers=False`: 75 BatchNorm
    buffers, one collective each, per step): the BatchNorm statistics are used only by
    evaluation and checkpoints, and `Components.sync_buffers` makes every rank adopt rank 0's
    right before those. Between two of them each rank's statistics follow its own batches.
    """
    model.to(dist.device, memory_format=torch.channels_last)
    wrapped: nn.Module = model
    if compile != "off":
        wrapped = torch.compile(wrapped, mode=None if compile == "default" else compile, dynamic=dynamic)
    if dist.distributed:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        with warnings.catch_warnings():  # torch 2.14 renamed the option; 2.11 (the GPU hosts) lacks the new name
            warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
            wrapped = DDP(wrapped, device_ids=device_ids, gradient_as_bucket_view=True, broadcast_buffers=False)
    return wrapped


def forward_backward(model: nn.Module, precision: Precision, images: torch.Tensor, labels: torch.Tensor,
                     label_smoothing: float = 0.0, poison: bool = False) -> torch.Tensor:
    """Forward and backward; returns the loss on the device (no host sync). Gradients are replaced, not added.

    `labels`: class indices (N,), or soft targets (N, classes) that sum to one per image (mixup/CutMix:
    their smoothing is in them already). `poison` makes the loss NaN (train.debug_nan_step, for
    testing the non-finite guard).
    """
    # A new step for CUDA graphs (compile mode reduce-overhead): the previous step's graph outputs
    # may be overwritten from here on. Only where CUDA graph trees exist: the first call imports
    # inductor (seconds of start-up for every eager run otherwise: BENCHMARKS.md).
    if _CUDAGRAPH_TREES in sys.modules:
        torch.compiler.cudagraph_mark_step_begin()
    with precision.autocast():
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if poison:
        loss = loss * float("nan")
    precision.scaler.scale(loss).backward()
    return loss.detach()


def optimizer_step(optimizer: torch.optim.Optimizer, precision: Precision) -> None:
    """The optimizer step (through the fp16 gradient scaler when there is one); then the gradients go."""
    precision.scaler.step(optimizer)
    precision.scaler.update()
    optimizer.zero_grad(set_to_none=True)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, images: torch.Tensor,
               labels: torch.Tensor, label_smoothing: float = 0.0, poison: bool = False) -> torch.Tensor:
    """The model alone: forward, backward and optimizer step; returns the loss on the device."""
    loss = forward_backward(model, precision, images, labels, label_smoothing, poison)
    optimizer_step(optimizer, precision)
    return loss


class TrainingStep:
    """One training step as the trainer runs it: (mixing,) model, optimizer, schedule, EMA, loss statistics.

    Everything stays on the device; `stats` (meters.StepStats) is read at logging boundaries.
    `section` is the host-overhead ledger's hook (pipeline/sections.py); a no-op otherwise.
    `mixer` (train.mixup_alpha, train.cutmix_alpha; pipeline/training/mixing.py) mixes each batch
    and trains on soft targets of `num_classes`. `report_sizes` (progressive resizing): the first
    step at each new input size is timed (one device synchronization per size), logged, and kept for
    `pop_size_reports`; its log line says what the figure includes: the compilation for that size
    when `compiled` (train.compile), cuDNN's autotuning on a GPU otherwise.
    """

    def __init__(self, model: nn.Module, wrapped: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, precision: Precision, ema: WeightEMA | None, *,
                 label_smoothing: float = 0.0, debug_nan_step: int = -1, mixer: BatchMixer | None = None,
                 num_classes: int = 0, report_sizes: bool = False, compiled: bool = False) -> None:
        self.model, self.wrapped, self.optimizer, self.scheduler = model, wrapped, optimizer, scheduler
        self.precision, self.ema = precision, ema
        self.label_smoothing, self.debug_nan_step = label_smoothing, debug_nan_step
        self.mixer, self.num_classes, self.report_sizes, self.compiled = mixer, num_classes, report_sizes, compiled
        self.stats = StepStats()
        self.section = no_section
        self.side = 0  # the input side of the last step (report_sizes)
        self.size_reports: dict[str, float] = {}  # perf/first_step_seconds_<side>px of new sizes, until popped

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, global_step: int) -> None:
        """Train on one batch; `global_step` is the number of steps done before this one."""
        poison = 0 <= self.debug_nan_step <= global_step  # testing aid
        new_size = self.report_sizes and images.shape[-1] != self.side
        started = time.perf_counter() if new_size else 0.0
        smoothing = self.label_smoothing
        if self.mixer is not None:
            with self.section("mix"):
                images, labels = self.mixer(images, labels, global_step, self.num_classes, smoothing)
            smoothing = 0.0  # in the soft targets already
        with self.section("model"):
            loss = forward_backward(self.wrapped, self.precision, images, labels, smoothing, poison)
        with self.section("optimizer"):
            optimizer_step(self.optimizer, self.precision)
        with self.section("schedule"):
            self.scheduler.step()
        if self.ema is not None:
            with self.section("ema"):
                self.ema.update_parameters(self.model)
        with self.section("statistics"):
            self.stats.add(loss)
        if new_size:
            self.first_step_at(images.shape[-1], started)

    def first_step_at(self, side: int, started: float) -> None:
        """Record how long the first step at input side `side` took (and what that includes)."""
        synchronize(self.precision.device)
        seconds = time.perf_counter() - started
        self.side = side
        self.size_reports[f"perf/first_step_seconds_{side}px"] = seconds
        included = (" (its compilation for this size included: train.compile)" if self.compiled
                    else " (cuDNN's autotuning for this size included)" if self.precision.device.type == "cuda" else "")
        log.info("first training step at %dx%d px: %.2f s%s", side, side, seconds, included)

    def pop_size_reports(self) -> dict[str, float]:
        """The first-step times of the sizes seen since the last call (for the next metrics record)."""
        reports, self.size_reports = self.size_reports, {}
        return reports


def _batch_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(summed loss, top-1 hits, top-5 hits) of one batch, float64 on the device."""
    k = min(5, logits.shape[1])
    hits = logits.topk(k, dim=1).indices == labels[:, None]
    return torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                        hits[:, 0].sum().double(), hits.any(dim=1).sum().double()])


@torch.no_grad()
def evaluate(model: nn.Module, loader: Loader, precision: Precision, flip: bool = False,
             should_stop: Callable[[], bool] | None = None,
             class_counts: ClassCounts | None = None) -> dict[str, float] | None:
    """Top-1, top-5 and mean loss over the loader's split, summed exactly over ranks.

    Every rank's loader covers a disjoint shard of the split, so the sums over ranks are the
    single-process figures. Call it with the raw (unwrapped) model after the ranks' BatchNorm
    buffers agree. The sums stay on the device and the image count on the host until the end:
    no host-device transfer per batch.

    `flip` (eval.tta=flip): each image is also evaluated mirrored and the two logit sets are
    averaged (FFCV's and airbench's flip test-time augmentation); those figures are the headline
    `val/*`, and the plain ones are reported beside them as `val/*_noflip`. (Not "tta/*": those
    keys are time to accuracy, pipeline/training/time_to_accuracy.py.)

    `should_stop` is asked before every batch (a stop signal): when it says yes on any rank, every
    rank returns None after its current batch (the ranks agree in the final sum, so none waits for
    another's whole evaluation when all were signalled).

    `class_counts` (confusion.py), when given, also counts each class's predictions of the headline
    logits, summed over ranks at the end (a second collective, only then).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(6 if flip else 3, dtype=torch.float64, device=precision.device)  # (loss, top-1, top-5) x 1-2
    count, stopped = 0, False
    for images, labels in loader:
        if should_stop is not None and should_stop():
            stopped = True
            break
        with precision.autocast():
            logits = model(images)
            mirrored = model(images.flip(3)) if flip else None
        logits = logits.float()
        if mirrored is not None:
            averaged = (logits + mirrored.float()) / 2
            sums += torch.cat([_batch_sums(averaged, labels), _batch_sums(logits, labels)])
        else:
            averaged = logits
            sums += _batch_sums(logits, labels)
        if class_counts is not None:
            class_counts.add(averaged, labels)
        count += len(labels)
    model.train(was_training)
    total = distributed.all_reduce_sum(torch.cat([sums.cpu(), torch.tensor([stopped, count], dtype=torch.float64)]))
    if total[-2].item() > 0:
        return None
    count = total[-1].item()
    names = ["val/loss", "val/top1", "val/top5"] + (["val/loss_noflip", "val/top1_noflip", "val/top5_noflip"]
                                                    if flip else [])
    return {**{name: total[i].item() / count for i, name in enumerate(names)}, "val/images": int(count)}


def evaluation_notes(metrics: dict[str, float]) -> str:
    """What an evaluation's log line adds after its headline: the raw weights' top-1, the top-1 without flip."""
    notes = ""
    if "val_raw/top1" in metrics:
        notes += f", raw weights {100 * metrics['val_raw/top1']:.2f}%"
    if "val/top1_noflip" in metrics:
        notes += (f"; the headline top-1 averages each image with its mirror (eval.tta=flip), without: "
                  f"{100 * metrics['val/top1_noflip']:.2f}%")
    return notes
