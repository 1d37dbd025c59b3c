"""SGD with momentum: parameter groups, linear LR scaling and the kernel implementation.

`impl`: auto = fused on CUDA (one kernel for all parameters), foreach elsewhere; `apex` uses
NVIDIA apex's FusedSGD when apex is installed (it is never installed from PyPI, where a package
named "apex" is an unrelated project).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.errors import ConfigError

APEX_HELP = (
    "optim.impl: apex was asked for but NVIDIA apex is not importable. Build it from "
    "https://github.com/NVIDIA/apex (pip install -v --no-build-isolation --config-settings "
    "'--build-option=--cuda_ext' git+https://github.com/NVIDIA/apex), or use optim.impl=auto. "
    "Do not `pip install apex`: that PyPI package is an unrelated project."
)


def scaled_lr(cfg: Any, global_batch_size: int) -> float:
    """Peak learning rate after the optional linear scaling rule."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * global_batch_size / cfg.reference_batch_size
    return cfg.lr


def param_groups(model: nn.Module, cfg: Any) -> list[dict[str, Any]]:
    """One group, or two when BatchNorm weights and biases (1-D tensors) are exempt from decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_norm_and_bias:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _apex_fused_sgd(device: torch.device):
    # apex's FusedSGD is CUDA kernels only: without a GPU its constructor fails with a traceback
    # ("requires cuda extensions"), or it would fail at the first step; say so before importing.
    if device.type != "cuda":
        raise ConfigError(f"optim.impl: apex (NVIDIA apex FusedSGD) runs only on CUDA GPUs, and this process "
                          f"trains on {device.type}; use optim.impl=auto (or foreach)")
    try:
        from apex.optimizers import (
            FusedSGD,  # NVIDIA apex only; the PyPI "apex" lacks this module
        )
    except ImportError:
        raise ConfigError(APEX_HELP) from None
    return FusedSGD


def resolve_impl(impl: str, device: torch.device) -> str:
    """optim.impl: auto = fused on CUDA, else foreach."""
    if impl == "auto":
        return "fused" if device.type == "cuda" else "foreach"
    return impl


def build_optimizer(cfg: Any, model: nn.Module, global_batch_size: int, device: torch.device) -> torch.optim.Optimizer:
    lr = scaled_lr(cfg, global_batch_size)
    groups = param_groups(model, cfg)
    common = dict(lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.impl == "apex":
        return _apex_fused_sgd(device)(groups, **common)
    if cfg.impl == "fused" and device.type != "cuda":
        raise ConfigError("optim.impl: fused needs CUDA here; use optim.impl=auto or optim.impl=foreach on CPU")
    if resolve_impl(cfg.impl, device) == "fused":
        return torch.optim.SGD(groups, fused=True, **common)
    return torch.optim.SGD(groups, foreach=True, **common)
