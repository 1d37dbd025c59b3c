"""Weights & Biases, from rank 0 only, with stable metric names.

Mode `auto` is online when an API key is configured (WANDB_API_KEY or a netrc entry for
api.wandb.ai) and offline otherwise; `disabled` turns tracking off. The key itself is never
read into the config, the metrics or the logs. Validation metrics use `epoch` as their x-axis.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if api_key_configured() else "offline"


class Tracker:
    """A W&B run on rank 0; every method is a no-op elsewhere or when disabled."""

    def __init__(self, cfg: Any, *, enabled: bool, run_dir: Path, run_name: str, experiment: str,
                 config: dict[str, Any], environment: dict[str, Any], job_type: str = "train") -> None:
        self.run = None
        self.mode = resolve_mode(cfg.mode)
        if not enabled or self.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            raise RuntimeError("wandb is not installed: run scripts/setup_env.sh, or set wandb.mode=disabled") from None
        id_file = run_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity or None, group=cfg.group or experiment,
            tags=list(cfg.tags), name=cfg.name or run_name, mode=self.mode, dir=str(run_dir),
            id=run_id, resume="allow", job_type=job_type,
            config={**config, "environment": environment},
            # console="off": our own logs already go to train.log; silent: we print the one line that matters.
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run.define_metric("step")
        self.run.define_metric("epoch")
        self.run.define_metric("train/*", step_metric="step")
        self.run.define_metric("perf/*", step_metric="step")
        self.run.define_metric("val/*", step_metric="epoch")
        if self.mode == "offline":
            log.info("W&B offline run %s; upload it later with: wandb sync %s", run_id, Path(self.run.dir).parent)
        else:
            log.info("W&B run %s", self.run.url)

    def log(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for key, value in values.items():
                self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
