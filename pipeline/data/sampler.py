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

Tar shards (`ShardStreamBatches`) are read in a different order, because a shard is read fastest
from start to end: each epoch permutes the shards (from (seed, epoch), the same on every rank),
rank r reads the contiguous part [r*N//W, (r+1)*N//W) of that sequence of samples in order, and a
shuffle buffer of `buffer_size` samples (simulated here, from (seed, epoch, rank)) decides the
order they leave it. Every rank runs (N // W) // B = N // G steps; evaluation is exactly the
contiguous shards above.

Pure numpy: no DALI or torch needed, so the arithmetic is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RankPlan:
    """What both index plans compute alike from num_samples, batch_size, rank, world_size, drop_last
    and max_steps: validation, the global batch, rank r's contiguous part [r*N//W, (r+1)*N//W) and
    the steps per epoch. Training runs N // G steps on every rank ((N // W) // B, the smallest part's
    full batches, is the same number); evaluation the batches of the rank's part, the last partial."""

    num_samples: int
    batch_size: int
    rank: int
    world_size: int
    drop_last: bool
    max_steps: int

    def __post_init__(self) -> None:
        """The rank, batch size and (training) sample count make sense, or ValueError says which does not."""
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.drop_last and self.num_samples < self.global_batch_size:
            raise ValueError(f"{self.num_samples} samples cannot fill one global batch of {self.global_batch_size} "
                             "images")

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def rank_part(self) -> tuple[int, int]:
        n, w, r = self.num_samples, self.world_size, self.rank
        return r * n // w, (r + 1) * n // w

    def __len__(self) -> int:
        """Steps per epoch on this rank: equal on every rank when training."""
        if self.drop_last:
            steps = self.num_samples // self.global_batch_size
        else:
            start, end = self.rank_part()
            steps = -(-(end - start) // self.batch_size)
        return min(steps, self.max_steps) if self.max_steps else steps


@dataclass(frozen=True)
class ShardedBatches(RankPlan):
    num_samples: int  # N, the whole split
    batch_size: int  # per rank
    rank: int  # global rank
    world_size: int
    shuffle: bool
    drop_last: bool
    seed: int = 0
    max_steps: int = 0  # cap on steps per epoch; 0 = none
    _orders: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # {epoch: order}

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
        start, end = self.rank_part()
        begin = start + step * self.batch_size
        return begin, min(begin + self.batch_size, end)

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """Sample indices this rank reads at `step` of `epoch` (int64, at most batch_size)."""
        begin, end = self.bounds(step)
        return self.epoch_order(epoch)[begin:end]


def buffer_shuffle(n: int, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """The order in which a stream of `n` items leaves a shuffle buffer of `buffer_size` items.

    The buffer is filled with the first items; each step emits a uniformly chosen one and puts the
    next item of the stream in its place (webdataset's and DALI's readers shuffle this way).
    Returns the stream positions in emission order; item t is never emitted before step
    t - buffer_size + 1, so a reader needs to hold at most `buffer_size` items.
    """
    if buffer_size <= 1 or n <= 1:
        return np.arange(n)
    buffer = list(range(min(buffer_size, n)))
    upcoming = len(buffer)
    order = np.empty(n, np.int64)
    for t, pick in enumerate(rng.random(n).tolist()):  # Python floats: ~0.3 us per item, once per epoch
        j = int(pick * len(buffer))
        order[t] = buffer[j]
        if upcoming < n:
            buffer[j] = upcoming
            upcoming += 1
        else:
            buffer[j] = buffer[-1]
            buffer.pop()
    return order


@dataclass(frozen=True)
class ShardStreamBatches(RankPlan):
    """The index plan for tar shards: per-epoch shard order, contiguous parts per rank, a shuffle buffer.

    Sample indices follow the listing (shards in name order, each shard's samples contiguous, in
    file order). Same interface as ShardedBatches, plus `epoch_stream`, which the shard reader
    follows to read every shard from start to end.
    """

    shard_sizes: tuple[int, ...]  # samples per shard, in listing order
    batch_size: int  # per rank
    rank: int  # global rank
    world_size: int
    shuffle: bool  # training: shard order per epoch and the buffer; evaluation: listing order
    drop_last: bool
    seed: int = 0
    buffer_size: int = 2048  # samples in each rank's shuffle buffer
    max_steps: int = 0  # cap on steps per epoch; 0 = none
    _streams: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # {epoch: (stream, order)}

    @property
    def num_samples(self) -> int:
        return sum(self.shard_sizes)

    def epoch_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream, order): this rank's samples in the order they are read, and the positions in
        `stream` in the order they are used (batch s is stream[order[s*B:(s+1)*B]])."""
        cached = self._streams.get(epoch)  # the shard reader's thread asks too: no check-then-lookup
        if cached is None:
            start, end = self.rank_part()
            if self.shuffle:
                firsts = np.cumsum([0, *self.shard_sizes[:-1]])
                shards = np.random.default_rng([self.seed, epoch]).permutation(len(self.shard_sizes))
                sequence = np.concatenate([np.arange(firsts[s], firsts[s] + self.shard_sizes[s]) for s in shards])
                stream = sequence[start:end]
                order = buffer_shuffle(len(stream), self.buffer_size,
                                       np.random.default_rng([self.seed, epoch, 1 + self.rank]))
            else:
                stream, order = np.arange(start, end), np.arange(end - start)
            cached = (stream, order)
            self._streams.clear()  # one epoch at a time: O(N / W) memory
            self._streams[epoch] = cached
        return cached

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """Sample indices this rank reads at `step` of `epoch` (int64, at most batch_size)."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} outside the epoch's {len(self)} steps")
        stream, order = self.epoch_stream(epoch)
        return stream[order[step * self.batch_size:(step + 1) * self.batch_size]]
