"""Mixed precision as one object: the autocast context, the input dtype and the gradient scaler.

bf16 and fp32 need no scaler; fp16 adds a GradScaler. `train.precision: auto` is bf16 on CUDA
and fp32 on CPU. The training step is written once and uses `precision.autocast()`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Precision:
    name: str  # bf16 | fp16 | fp32
    device: torch.device
    scaler: torch.amp.GradScaler

    @property
    def dtype(self) -> torch.dtype:
        """Training dtype: what the loader emits and autocast computes in."""
        return DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return name


def build_precision(name: str, device: torch.device) -> Precision:
    name = resolve_precision(name, device)
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return Precision(name, device, scaler)
