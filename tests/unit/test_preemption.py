"""pipeline/training/preemption.py: a repeated SIGTERM is one stop request; a signal at start-up ends it at once, one
during a checkpoint write waits for it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch


def test_a_signal_during_start_up_ends_it_at_once_and_one_during_a_checkpoint_write_waits_for_it(tmp_path):
    import os

    from pipeline.errors import Interrupted
    from pipeline.training.checkpoint import atomic_save
    from pipeline.training.preemption import StopRequest

    stop_request = StopRequest().install(at_once=True)
    try:
        with pytest.raises(Interrupted, match="SIGTERM received during start-up"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here, at the next bytecode
        stop_request = StopRequest().install()  # the loop's mode: a signal waits for the write

        # A real write of 200 MB in 400 tensors, and a SIGTERM from another thread while it runs.
        payload = {"format_version": 3, "weights": [torch.full((125_000,), float(i)) for i in range(400)]}
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        atomic_save(payload, tmp_path / "last.pt")
        assert stop_request.requested, f"the signal came after the write ({time.monotonic() - started:.2f} s)"
        saved = torch.load(tmp_path / "last.pt", weights_only=True)["weights"]  # not a whole checkpoint: the file
        assert len(saved) == 400 and saved[-1][0] == 399  # complete
    finally:
        stop_request.uninstall()


def test_a_repeated_sigterm_is_the_same_stop_request():
    """Under SLURM + torchrun one stop arrives twice (scancel, then the agent): it must not skip the checkpoint."""
    from pipeline.training.preemption import StopRequest

    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # would have been os._exit(143) before
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGTERM
    finally:
        stop.uninstall()

