"""SIGTERM/SIGINT: a bounded stop. Checkpoint after the current step, exit 75; a second Ctrl-C exits at once.

Where the signal lands decides what happens (docs/fault-tolerance.md has the measured times):
- start-up (listing and decoding data, building the model, the loaders, the first compile):
  `StopRequest.install(at_once=True)` makes the signal end start-up at once with `Interrupted`
  (exit 75): nothing new exists to checkpoint, and the run's latest checkpoint is still there.
- a training step: the step finishes, a checkpoint is written, exit 75 (`StopAgreement`).
- an evaluation: it stops after the current batch; the checkpoint marks the epoch's evaluation as
  pending and a resumed run redoes it, so each evaluation is recorded once.
- a checkpoint write: the write completes; the run then stops without training another step.

Only a second SIGINT (a person pressing Ctrl-C again) means "exit now". A repeated SIGTERM does
not: under SLURM and torchrun one stop request commonly arrives twice (`scancel --signal=TERM`
reaches every process of the step, and torchrun's agent forwards its own SIGTERM a moment later),
and exiting on the second would skip the checkpoint the first one asked for.

Stop means stop: under ./launch.sh (pipeline/tools/launch.py is torchrun's agent) a worker that is
asked to stop passes the request on to the agent, which stops the whole job instead of restarting
the worker (`--max-restarts` is for crashes). When the agent itself stops the workers because one
of them ended (it says so first: pipeline/entry.py LAUNCHER_STOP), their SIGTERM is neither announced
nor passed back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from types import FrameType
from typing import Any, Iterator

from pipeline import distributed
from pipeline.entry import LAUNCHER_STOP, tell_the_agent
from pipeline.errors import Interrupted

log = logging.getLogger(__name__)


class StopRequest:
    """Set by the first SIGTERM/SIGINT; the training loop polls `requested` between steps.

    `phase` is where the run is (start-up, training, the evaluation): what a signal stops, which its
    message says."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, phase: str = "start-up") -> None:
        self.signum: int | None = None
        self.at_once = False
        self.phase = phase
        self._previous: dict[int, Any] = {}

    def install(self, at_once: bool = False) -> "StopRequest":
        """Catch the signals; `at_once`: a signal raises `Interrupted` where it lands (see `defer`)."""
        self.at_once = at_once
        for sig in self.SIGNALS:
            self._previous.setdefault(sig, signal.signal(sig, self._handle))
        return self

    def defer(self) -> None:
        """From here on a signal only sets `requested`: the run can checkpoint, and stops at the next boundary."""
        self.at_once, self.phase = False, "training"

    @contextlib.contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """`phase` for the length of the block (`with stop.during("the evaluation"): ...`)."""
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

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
        tell_the_agent()
        name = signal.Signals(signum).name
        if LAUNCHER_STOP.is_set():  # the launcher stops the job because another worker ended: it says so itself
            if self.at_once:
                raise Interrupted(signum, f"{name} from the launcher: stopping now")
            return
        if self.at_once:
            raise Interrupted(signum, f"{name} received during {self.phase}: stopping now")
        what = ("stopping the evaluation after its current batch and writing a checkpoint (the evaluation is redone "
                "when the run continues)" if self.phase == "the evaluation"
                else "stopping after the current step and writing a checkpoint")
        log.warning("%s received: %s (press Ctrl-C again to exit at once)", name, what)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class StopAgreement:
    """Has any rank been asked to stop? All ranks must stop after the same step.

    One process: its own request, after every step. Several: after every step each rank starts a
    non-blocking max-reduce of its request on the control group (a CPU message: no GPU sync, and no
    step waits for it) and reads the one it started after the previous step. So the ranks agree
    after the step in progress when the signal arrived, or the next one.
    """

    def __init__(self, request: StopRequest, world_size: int) -> None:
        self.request, self.world_size = request, world_size
        self.pending: distributed.PendingFlag | None = None

    def after_step(self) -> bool:
        if self.world_size == 1:
            return self.request.requested
        if self._collect():
            return True
        self.pending = distributed.start_any_rank(self.request.requested)
        return False

    def now(self) -> bool:
        """Blocking: does any rank want to stop? (before training starts, at epoch ends)."""
        if self.world_size == 1:
            return self.request.requested
        earlier = self._collect()
        return distributed.any_rank(self.request.requested) or earlier

    def _collect(self) -> bool:
        pending, self.pending = self.pending, None
        return pending.result() if pending is not None else False
