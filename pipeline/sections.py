"""Named sections of the hot path, so the host-overhead ledger can attribute work to them.

    self.section = no_section            # the default: a shared no-op context manager
    with self.section("ema"):            # costs ~0.1 us per step when nothing is attached
        ema.update_parameters(model)

`python -m pipeline.bench overhead` (pipeline/bench/overhead.py) attaches a recorder instead of
`no_section` to the training step, the loader and the loop pieces, and counts the torch operators,
host microseconds and device reads of each section. Nothing else ever sets it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

Section = Callable[[str], ContextManager[object]]

_NOTHING = contextlib.nullcontext()


def no_section(name: str) -> ContextManager[object]:
    return _NOTHING
