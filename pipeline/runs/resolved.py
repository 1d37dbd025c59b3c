"""What a run actually ran with, once every `auto` was decided: the `resolved/*` values and tags.

    values = resolved_settings(cfg, dist, parts, env)  # pipeline/training/components.py: {"resolved/precision": "bf16", ...}
    auto_tags(values)                                   # ["bf16", "8gpu", "dali-gpu", "compiled"]

The config says `train.precision: auto` and `data.device: auto`; these say what that became
(bf16 or fp32, gpu or cpu), with the scale of the job (processes, nodes, batch per device, the
learning rate after `optim.lr_scaling`), what it ran on (GPU, versions, git revision) and which
data (`resolved/data_fingerprint`, pipeline/runs/fingerprint.py). Rank 0 writes them to
runs/<name>/resolved.json and the W&B config; the tags make the main axes filterable in W&B.
Benchmarks carry the machine's share of them (`environment_settings`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping


def node_count(env: Mapping[str, str] = os.environ) -> int:
    """Nodes of a torchrun job: its worker groups (one agent per node), else WORLD_SIZE / LOCAL_WORLD_SIZE."""
    if env.get("GROUP_WORLD_SIZE"):
        return int(env["GROUP_WORLD_SIZE"])
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", "0"))
    return max(1, world // local) if local else 1


def environment_settings(env: dict[str, Any]) -> dict[str, Any]:
    """The machine and code: what any job (training or benchmark) ran on. `env` is envinfo.environment()."""
    git = str(env.get("git") or "unknown")
    return {
        "resolved/gpu": env.get("gpu") or "none",
        "resolved/gpu_count": env.get("gpu_count", 0),
        "resolved/nodes": node_count(),
        "resolved/torch": env.get("torch"),
        "resolved/cuda": env.get("cuda"),
        "resolved/cudnn": env.get("cudnn"),
        "resolved/dali": env.get("dali"),
        "resolved/git": git.removesuffix("-dirty"),
        "resolved/git_dirty": git.endswith("-dirty"),
    }


def auto_tags(values: dict[str, Any]) -> list[str]:
    """Tags for the main axes present in `values`: precision, `<N>gpu` or `cpu`, data pipeline, `compiled`."""
    tags = []
    if "resolved/precision" in values:
        tags.append(values["resolved/precision"])
    gpus = values.get("resolved/gpu_count", 0)
    tags.append(f"{gpus}gpu" if gpus else "cpu")
    if "resolved/data_pipeline" in values:
        tags.append(values["resolved/data_pipeline"])
    if values.get("resolved/compile", "off") != "off":  # a torch.compile mode
        tags.append("compiled")
    return tags


def merge_tags(user: list[str], auto: list[str]) -> list[str]:
    """The user's `wandb.tags` first, then the automatic ones they do not already hold."""
    return [*user, *(t for t in auto if t not in user)]
