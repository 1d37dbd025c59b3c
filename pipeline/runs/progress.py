"""Rank-0 console progress: a tqdm bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("pipeline")


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN / unknown
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """One bar per epoch (bar mode) or one line per logging step (lines mode); silent if disabled."""

    def __init__(self, mode: str, enabled: bool) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "off"
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True,
                            leave=False, file=sys.stderr)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, step_in_epoch: int, steps: int, record: dict[str, Any], eta_s: float) -> None:
        ips = record.get("perf/images_per_sec")
        fields = [f"loss {record['train/loss']:.4f}", f"lr {record['train/lr']:.4g}"]
        if ips is not None:
            fields += [f"{ips:,.0f} img/s", f"data {100 * record['perf/data_wait_frac']:.0f}%"]
        fields.append(f"eta {format_duration(eta_s)}")
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(fields), refresh=False)
        elif self.mode == "lines":
            log.info("epoch %d/%d step %d/%d  %s", self.epoch + 1, self.epochs, step_in_epoch, steps, "  ".join(fields))

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
