"""The model's side of training, as free functions: wrap, one training step, one evaluation.

The trainer and the benchmarks call exactly these, so a benchmark measures the step that trains.

    wrapped = wrap_model(model, dist, compile="off")      # channels_last -> compile -> DDP
    loss = train_step(wrapped, optimizer, precision, images, labels)   # stays on the device
    metrics = evaluate(model, eval_loader, precision)     # exact over all ranks
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline import distributed
from pipeline.data import Loader
from pipeline.distributed import DistInfo
from pipeline.training.precision import Precision

_CUDAGRAPH_TREES = "torch._inductor.cudagraph_trees"  # loaded by torch.compile when it builds CUDA graphs


def wrap_model(model: nn.Module, dist: DistInfo, *, compile: str = "off") -> nn.Module:
    """channels_last -> torch.compile -> DDP, in that order; `model` itself stays unwrapped.

    Moves `model` to the device in channels_last memory (in place); the returned module is what
    the training step calls. State dicts and evaluation use `model` (evaluation's partial last
    batch would otherwise cost a recompilation). `compile`: off, or a torch.compile mode
    (default, reduce-overhead = CUDA graphs, max-autotune, max-autotune-no-cudagraphs).
    """
    model.to(dist.device, memory_format=torch.channels_last)
    wrapped: nn.Module = model
    if compile != "off":
        wrapped = torch.compile(wrapped, mode=None if compile == "default" else compile)
    if dist.distributed:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        wrapped = DDP(wrapped, device_ids=device_ids, gradient_as_bucket_view=True)
    return wrapped


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, images: torch.Tensor,
               labels: torch.Tensor, label_smoothing: float = 0.0, poison: bool = False) -> torch.Tensor:
    """Forward, backward and optimizer step; returns the loss on the device (no host sync).

    `poison` makes the loss NaN (train.debug_nan_step, for testing the non-finite guard).
    """
    # A new step for CUDA graphs (compile mode reduce-overhead): the previous step's graph outputs
    # may be overwritten from here on. Only where CUDA graph trees exist: the first call imports
    # inductor (~2 s of start-up for every eager run otherwise).
    if _CUDAGRAPH_TREES in sys.modules:
        torch.compiler.cudagraph_mark_step_begin()
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


@torch.no_grad()
def evaluate(model: nn.Module, loader: Loader, precision: Precision) -> dict[str, float]:
    """Top-1, top-5 and mean loss over the loader's split, summed exactly over ranks.

    Every rank's loader covers a disjoint shard of the split, so the sums over ranks are the
    single-process figures. Call it with the raw (unwrapped) model after the ranks' BatchNorm
    buffers agree.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=precision.device)  # loss, top-1, top-5, count
    for images, labels in loader:
        with precision.autocast():
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == labels[:, None]
        sums += torch.stack([
            F.cross_entropy(logits, labels, reduction="sum").double(),
            hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
            torch.tensor(len(labels), device=sums.device).double(),
        ])
    model.train(was_training)
    total = distributed.all_reduce_sum(sums.cpu())
    count = total[3].item()
    return {"val/loss": total[0].item() / count, "val/top1": total[1].item() / count,
            "val/top5": total[2].item() / count, "val/images": int(count)}
