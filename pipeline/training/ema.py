"""The weight EMA, and which weights an evaluation reports.

    ema = WeightEMA(model, decay=0.999, warmup=True)   # train.ema_decay, train.ema_warmup
    ema.update_parameters(model)                       # after every optimizer step
    models = evaluated_models(model, ema, "both")      # eval.weights: {"ema": ..., "raw": ...}, headline first
    metrics = name_evaluations({name: evaluate(m, loader, precision) for name, m in models.items()})

**Warm-up.** Update n (n = updates done before it, counting from 0) uses the decay
`min(decay, (1 + n) / (10 + n))` (the num_updates rule of TensorFlow's ExponentialMovingAverage):
0.1, 0.18, 0.25, ... so the average follows the live weights closely at first and reaches `decay`
after about 10 / (1 - decay) updates. Without it, the average is still mostly the random
initialisation for the first ~1 / (1 - decay) steps (several epochs at decay 0.999: an earlier
fast recipe evaluated near chance early on, docs/fast-recipe.md "What was tried", row 1).
`warmup=False` keeps the behaviour of torch's `AveragedModel` with `get_ema_multi_avg_fn`: the
first update copies the weights, later ones use `decay`.

**Buffers.** BatchNorm running mean and variance are averaged with the same decay as the
weights: evaluation runs the averaged weights, and their activations are approximately the
average of the recent models' activations, so averaged statistics match them, while the live
model's statistics belong to the live weights (a mismatch that is largest early and at a high
learning rate, where the two sets of weights differ most). Recomputing the statistics with a pass
over training data (`torch.optim.swa_utils.update_bn`) would be exact but costs a pass per
evaluation. Integer buffers (`num_batches_tracked`) are copied: `AveragedModel(use_buffers=True)`
feeds them through `p * decay + q * (1 - decay)` and truncates the result back to an integer,
so on torch 2.14 the counter stays at its first value (1, 1, 1, ... where the model has 1, 2, 3)
rather than counting batches.

**State.** `n_averaged` (a CPU int64 buffer, mirrored by a Python int so the step reads no tensor) and
`module.*` are the state_dict, the same keys `AveragedModel` had, so checkpoints written before
this module load strictly and a resume continues the warm-up where it stopped.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

Weights = Literal["ema", "raw", "both"]


def warmup_decay(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0-based) under the warm-up rule."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightEMA(nn.Module):
    """An exponential moving average of a model's parameters and buffers.

    `module` is a copy of the model (same device and memory format) that holds the average;
    evaluate it, never train it.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))  # updates so far (CPU)
        self.updates = 0  # n_averaged as a Python int: the decay is computed without reading a tensor
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.count_updates())
        self.pairs: _Pairs | None = None  # the tensor lists of the first update, reused by every later one

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def count_updates(self) -> None:
        self.updates = int(self.n_averaged)

    def current_decay(self) -> float:
        """The decay the next update will use (0 = copy)."""
        if self.warmup:
            return warmup_decay(self.decay, self.updates)
        return 0.0 if self.updates == 0 else self.decay

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Move the average towards `model` (the raw module, not a DDP or compiled wrapper).

        Three operators whatever the model's size: one fused lerp of every floating-point tensor,
        one fused copy of the integer buffers, the counter. The tensor lists are taken at the first
        update: the optimizer, BatchNorm and `load_state_dict` all update tensors in place, so they
        stay the tensors that train (do not move `model` to another device after the EMA's first update).
        """
        if self.pairs is None or self.pairs.live is not model:
            self.pairs = _Pairs.of(self.module, model)
        pairs = self.pairs
        if pairs.averaged:
            torch._foreach_lerp_(pairs.averaged, pairs.live_float, 1.0 - self.current_decay())
        if pairs.counters:
            torch._foreach_copy_(pairs.counters, pairs.live_counters)
        self.n_averaged += 1
        self.updates += 1


class _Pairs:
    """The averaged model's tensors beside the live model's: floating point (averaged) and integer (copied)."""

    def __init__(self, live: nn.Module) -> None:
        self.live = live
        self.averaged: list[torch.Tensor] = []
        self.live_float: list[torch.Tensor] = []
        self.counters: list[torch.Tensor] = []
        self.live_counters: list[torch.Tensor] = []

    @classmethod
    def of(cls, averaged: nn.Module, live: nn.Module) -> "_Pairs":
        pairs = cls(live)
        mine_all = [*averaged.parameters(), *averaged.buffers()]
        theirs_all = [*live.parameters(), *live.buffers()]
        for mine, theirs in zip(mine_all, theirs_all, strict=True):
            if mine.shape != theirs.shape or mine.dtype != theirs.dtype or mine.device != theirs.device:
                raise ValueError(f"EMA: the live model's tensors ({theirs.dtype} {tuple(theirs.shape)} on "
                                 f"{theirs.device}) differ from the averaged copy's ({mine.dtype} "
                                 f"{tuple(mine.shape)} on {mine.device}): build the EMA from the model it averages")
            if mine.is_floating_point():
                pairs.averaged.append(mine)
                pairs.live_float.append(theirs.detach())  # detached once, here, not at every step
            else:
                pairs.counters.append(mine)
                pairs.live_counters.append(theirs)
        return pairs


def evaluated_models(model: nn.Module, ema: WeightEMA | None, weights: Weights) -> dict[str, nn.Module]:
    """The modules an evaluation runs, keyed "ema" / "raw", the headline first.

    ema: the EMA alone when there is one, else the raw weights; raw: the raw weights alone;
    both: the EMA (headline) and the raw weights.
    """
    if ema is None or weights == "raw":
        return {"raw": model}
    if weights == "ema":
        return {"ema": ema.module}
    return {"ema": ema.module, "raw": model}


def name_evaluations(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """`val/*` from the headline (first) evaluation; with several, also `val_<name>/*` for each.

    {"ema": {"val/top1": .9}, "raw": {"val/top1": .8}}
      -> {"val/top1": .9, "val_ema/top1": .9, "val_raw/top1": .8}
    """
    names = list(results)
    metrics = dict(results[names[0]])
    if len(names) > 1:
        for name in names:
            metrics.update({key.replace("val/", f"val_{name}/", 1): value for key, value in results[name].items()})
    return metrics
