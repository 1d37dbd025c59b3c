"""Fine-tuning: a new run that starts from another run's weights (train.init_from), optionally training the
classifier alone (train.freeze).

    source = initialize_from(model, train_cfg)           # a new run: copies the weights in; None without init_from
    frozen = freeze(model, train_cfg.freeze)             # the frozen BatchNorm modules (kept in eval mode)

Weights only: the optimizer, the schedule and the epoch count start fresh, unlike continuing a run
(checkpoint.resume). Keys whose shapes differ, the classifier of a model trained for another
`model.num_classes`, keep their fresh initialisation, and the log names them; every other key must
match the network (a checkpoint of another model is refused, naming the file). The source file's
sha256 goes into resolved.json and W&B (`resolved/init_from_sha256`) and into every checkpoint of the
new run (its model card). A run that continues from its own checkpoint takes its weights from there:
with another train.init_from than it started with it is refused, in one line.

`freeze: features` stops gradients to the network's `features` (every registry model but resnet50
has one) and keeps their BatchNorm layers in eval mode, so their statistics stay the source's: a
frozen backbone is a fixed feature extractor, whatever the new data's batch statistics are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import CheckpointError, ConfigError
from pipeline.training.weights import find_checkpoint, read_weights

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class InitSource:
    """Where a fine-tuned run's weights came from (recorded in its checkpoints, resolved.json and W&B)."""

    path: str
    sha256: str
    weights: str  # "ema" or "raw"
    reinitialized: tuple[str, ...]  # keys left at their fresh initialisation (another class count)

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "weights": self.weights}


def check_continuation(train_cfg: Any, resume: Any) -> None:
    """A run that continues from its checkpoint takes its weights from there: another train.init_from is refused."""
    if resume is None:
        return
    started = resume.ckpt["config"].get("train", {}).get("init_from", "")
    if train_cfg.init_from != started:
        raise ConfigError(f"train.init_from: {train_cfg.init_from or '(none)'}, but this run continues from its "
                          f"checkpoint {resume.path} (started from {started or 'random weights'}); fine-tuning starts "
                          "a new run: ./launch.sh --new ..., or another logging.run_name")


def initialize_from(model: nn.Module, train_cfg: Any) -> InitSource | None:
    """Copy train.init_from's weights into `model` (before it is wrapped); None when it is not set."""
    if not train_cfg.init_from:
        return None
    path = find_checkpoint(Path(train_cfg.init_from))
    source = read_weights(path, train_cfg.init_weights)
    own = model.state_dict()
    unknown = sorted(set(source.state) - set(own))
    missing = sorted(set(own) - set(source.state))
    if unknown or missing:
        example = (unknown or missing)[0]
        raise CheckpointError(f"{path}: not weights of this network ({source.model_name} there, keys differ: "
                              f"{len(unknown)} unknown here, {len(missing)} missing, e.g. {example}); "
                              "train.init_from takes a checkpoint of the same model.name")
    reshaped = tuple(k for k, v in source.state.items() if tuple(v.shape) != tuple(own[k].shape))
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in source.state.items() if k not in reshaped} | {k: own[k] for k in reshaped},
                              strict=True)
    for note in source.notes:
        log.info("train.init_from: %s", note)
    if reshaped:
        log.warning("train.init_from: %d key(s) re-initialised (%s classes there, %s here): %s", len(reshaped),
                    source.num_classes, own[reshaped[0]].shape[0], ", ".join(reshaped))
    log.info("train.init_from: %s weights of %s (sha256 %s...), %d of %d keys", source.weights, path,
             source.sha256[:12], len(own) - len(reshaped), len(own))
    return InitSource(str(path), source.sha256, source.weights, reshaped)


def freeze(model: nn.Module, how: str) -> tuple[nn.Module, ...]:
    """train.freeze: `features` freezes model.features; returns its BatchNorm modules (to keep in eval mode)."""
    if how == "none":
        return ()
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise ConfigError(f"train.freeze: features, but {type(model).__name__} has no `features` part to freeze "
                          "(set train.freeze=none)")
    for param in features.parameters():
        param.requires_grad_(False)
    norms = tuple(m for m in features.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("train.freeze: features frozen (%d BatchNorm layers in eval mode); %d parameters train", len(norms),
             trainable)
    return norms
