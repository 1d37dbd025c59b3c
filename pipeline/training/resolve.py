"""What the `auto` values of a config become on this machine, without training.

    python train_dist.py configs/quickstart.yaml data.source=imagefolder data.root=/data/my-images \
        model.num_classes=auto --resolve

`python -m pipeline.config` prints a config as validated; its `auto` values are decided at
start-up by the rules the trainer applies (pipeline/training/precision.py, optim.py,
pipeline/data/loader.py, pipeline/distributed.py, pipeline/runs/tracking.py). This applies the same
rules here, for a process on this machine's first GPU (or its CPU), and lists the training data
for `model.num_classes: auto`. A torchrun job resolves them in every process, on the machines it
runs on; runs/<run-name>/config.yaml and resolved.json record what a run resolved.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config import Config, validated_yaml
from pipeline.data.loader import resolve_dali_device
from pipeline.distributed import resolve_backend
from pipeline.runs.tracking import resolve_mode
from pipeline.training.components import load_data
from pipeline.training.optim import resolve_impl
from pipeline.training.precision import resolve_precision


def this_machine_device() -> torch.device:
    """The device a single training process here would use (rank 0: the first GPU)."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_auto(cfg: Config) -> tuple[Config, dict[str, str]]:
    """(`cfg` with its machine-dependent `auto` values replaced, {key: "auto -> value (why)"})."""
    device = this_machine_device()
    where = f"CUDA ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "no CUDA here"
    resolved = cfg.model_copy(deep=True)
    notes: dict[str, str] = {}

    def resolve(section: Any, key: str, value: str, why: str) -> None:
        if getattr(section, key.rsplit(".", 1)[1]) == "auto":
            setattr(section, key.rsplit(".", 1)[1], value)
            notes[key] = f"auto -> {value} ({why})"

    if cfg.model.num_classes == "auto":  # the config refuses auto with synthetic data: there is data to list
        train, val = load_data(cfg.data)
        shown = ", ".join(train.classes[:5]) + (", ..." if len(train.classes) > 5 else "")
        resolved.model.num_classes = len(train.classes)
        notes["model.num_classes"] = (f"auto -> {len(train.classes)} (the classes of the training split: {shown}; "
                                      f"{len(train)} training and {len(val)} validation images)")
    resolve(resolved.train, "train.precision", resolve_precision("auto", device), where)
    if cfg.data.source != "synthetic":  # synthetic batches are made on the training device
        resolve(resolved.data, "data.device", resolve_dali_device("auto"), where)
    resolve(resolved.optim, "optim.impl", resolve_impl("auto", device), where)
    resolve(resolved.dist, "dist.backend", resolve_backend("auto", device),
            f"{where}; used only with several processes")
    resolve(resolved.wandb, "wandb.mode", resolve_mode("auto"), "WANDB_MODE, or whether a W&B API key is configured")
    return resolved, notes


def resolved_yaml(cfg: Config) -> str:
    """The config as YAML after `resolve_auto`, headed by one comment line per resolved value."""
    resolved, notes = resolve_auto(cfg)
    head = ["# Resolved on this machine (what a single training process here would use):"]
    head += [f"#   {key}: {note}" for key, note in notes.items()]
    return "\n".join(head) + "\n" + validated_yaml(resolved, resolved=True)
