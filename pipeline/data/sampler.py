"""Which sample indices each rank reads at each step: exact sharding by global rank.

Training (`drop_last=True`): each epoch draws one permutation of all N samples from
(seed, epoch), identical on every rank; step s uses the slice [s*G, (s+1)*G) with G the global
batch, and rank r takes its per-rank part of that slice. So every rank runs exactly N // G steps
(no DDP hang at the epoch's end), no sample repeats within an epoch, and the N mod G samples left
over are different ones each epoch.

Evaluation (`drop_last=False`, no shuffle): rank r reads the contiguous shard
[r*N//W, (r+1)*N//W) in batches, the last one partial. Shards are disjoint and cover every
sample once, so sums over ranks equal the single-process result exactly (ranks may run a
different number of batches; evaluation runs no collective per batch).

Pure numpy: no DALI or torch needed, so the arithmetic is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ShardedBatches:
    num_samples: int  # N, the whole split
    batch_size: int  # per rank
    rank: int  # global rank
    world_size: int
    shuffle: bool
    drop_last: bool
    seed: int = 0
    max_steps: int = 0  # cap on steps per epoch; 0 = none
    _orders: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # {epoch: order}

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.drop_last and self.num_samples < self.global_batch_size:
            raise ValueError(
                f"{self.num_samples} samples cannot fill one global batch of {self.global_batch_size} images"
            )

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _shard_bounds(self) -> tuple[int, int]:
        n, w, r = self.num_samples, self.world_size, self.rank
        return r * n // w, (r + 1) * n // w

    def __len__(self) -> int:
        """Steps per epoch on this rank."""
        if self.drop_last:
            steps = self.num_samples // self.global_batch_size
        else:
            start, end = self._shard_bounds()
            steps = -(-(end - start) // self.batch_size)
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order all ranks agree on for this epoch."""
        if epoch not in self._orders:
            self._orders.clear()  # one epoch at a time: O(N) memory
            self._orders[epoch] = (
                np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
                if self.shuffle else np.arange(self.num_samples)
            )
        return self._orders[epoch]

    def bounds(self, step: int) -> tuple[int, int]:
        """The slice [begin, end) of the epoch's order that this rank reads at `step` (any epoch)."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} outside the epoch's {len(self)} steps")
        if self.drop_last:
            begin = step * self.global_batch_size + self.rank * self.batch_size
            return begin, begin + self.batch_size
        start, end = self._shard_bounds()
        begin = start + step * self.batch_size
        return begin, min(begin + self.batch_size, end)

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """Sample indices this rank reads at `step` of `epoch` (int64, at most batch_size)."""
        begin, end = self.bounds(step)
        return self.epoch_order(epoch)[begin:end]
