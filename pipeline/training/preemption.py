"""SIGTERM/SIGINT handling: finish the current step, checkpoint, exit; a second Ctrl-C exits at once.

Only a second SIGINT (a person pressing Ctrl-C again) means "exit now". A repeated SIGTERM does
not: under SLURM and torchrun one stop request commonly arrives twice (`scancel --signal=TERM`
reaches every process of the step, and torchrun's agent forwards its own SIGTERM a moment later),
and exiting on the second would skip the checkpoint the first one asked for.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

from pipeline import distributed

log = logging.getLogger(__name__)


class StopRequest:
    """Set by the first SIGTERM/SIGINT; the training loop polls `requested` between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopRequest":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum != signal.SIGINT:
                return  # the same stop request again: the checkpoint is already on its way
            os.write(2, f"second {signal.Signals(signum).name}: exiting now without a checkpoint\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s received: stopping after the current step and writing a checkpoint "
                    "(press Ctrl-C again to exit at once)", signal.Signals(signum).name)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class StopAgreement:
    """Has any rank been asked to stop? One rank alone stops at once; several compare notes every
    `every` steps (a CPU message on the control group, no GPU sync), so all stop after the same step."""

    def __init__(self, request: StopRequest, world_size: int, every: int = 10) -> None:
        self.request, self.world_size, self.every = request, world_size, every

    def __call__(self, global_step: int) -> bool:
        if self.world_size == 1:
            return self.request.requested
        return global_step % self.every == 0 and distributed.any_rank(self.request.requested)
