"""What a result was measured on: machine, accelerator, library versions, code revision."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from pipeline.constants import REPO_ROOT


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    rev = _run(["git", "rev-parse", "--short=12", "HEAD"])
    if rev is None:  # a copy without .git (e.g. shipped to a benchmark machine) can be told its revision
        return os.environ.get("GIT_REVISION", "unknown")
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return rev + ("-dirty" if dirty else "")


def dali_version() -> str | None:
    try:
        import nvidia.dali

        return nvidia.dali.__version__
    except ImportError:
        return None


def environment() -> dict[str, Any]:
    """Plain data describing this process's machine and software (no environment variables)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "dali": dali_version(),
        "git": git_revision(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if info["gpu_count"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        info["driver"] = driver.splitlines()[0] if driver else None
    return info


def describe(info: dict[str, Any]) -> str:
    accel = f"{info['gpu_count']} x {info['gpu']} (driver {info.get('driver')})" if info.get("gpu_count") else "no GPU"
    return (f"{info['cpu']} ({info['cpu_count']} cores), {accel}; torch {info['torch']}, CUDA {info['cuda']}, "
            f"DALI {info['dali']}, git {info['git']}")
