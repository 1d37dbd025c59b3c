"""Encoded images of a plan's batches, read ahead of DALI by background threads.

    reader = batch_reader(images, plan, ahead=4, with_sizes=True)
    batch = reader.batch(epoch, step)     # EncodedBatch: bytes (and header sizes) of plan.indices(epoch, step)

The DALI graph reads image files itself when it only needs their bytes (`fn.io.file.read` in
dali_graph.py). Two cases need Python to read them instead:

- tar shards: a member is a byte range of a shard. `ShardStreamReader` follows the plan's read
  order (ShardStreamBatches.epoch_stream): one thread walks this rank's part of the epoch's shard
  sequence from start to end, holds what it read until the shuffle buffer emits it, and never
  reads a byte twice: the reads a shared filesystem sees are sequential, one shard after another.
- random-resized crops: the crop window is drawn in numpy from each image's size, read from its
  header (images.py: image_size), so the bytes must pass through Python. `FileReader` reads
  image files for the next batches in a small thread pool.

Reads release the GIL; the header parse costs a few microseconds per JPEG. With the sizes read, an
image over the pixel limit (`max_pixels`, data.max_pixels) is refused there, naming it, before
DALI decodes anything. Batches stay a pure
function of (epoch, step): a reader asked for a step it did not expect (a resumed loader, a new
epoch) starts over from there, so resuming needs nothing of its state.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.data.images import check_pixels, image_size
from pipeline.data.sampler import ShardStreamBatches
from pipeline.data.sources import ImageSet


@dataclass
class EncodedBatch:
    data: list[np.ndarray]  # encoded bytes (uint8 1-D), in plan order
    sizes: np.ndarray | None  # (n, 2) int64 height, width as decoded (EXIF orientation applied); None if not asked


class BatchReader(Protocol):
    def batch(self, epoch: int, step: int) -> EncodedBatch: ...


def _read_one(images: ImageSet, index: int, with_sizes: bool, max_pixels: int = 0) -> Any:
    """One image's bytes, with its decoded (height, width) if asked (checked against `max_pixels`; 0 = no limit)."""
    data = images.fetch_encoded(index)
    if not with_sizes:
        return data
    size = image_size(data, images.names[index])
    check_pixels(size, images.names[index], max_pixels)
    return data, size


def _batch(items: list[Any], with_sizes: bool) -> EncodedBatch:
    if not with_sizes:
        return EncodedBatch(items, None)
    return EncodedBatch([d for d, _ in items], np.asarray([s for _, s in items], np.int64).reshape(-1, 2))


def _read_batch(images: ImageSet, plan: Any, with_sizes: bool, max_pixels: int, epoch: int,
                step: int) -> EncodedBatch:
    """The batch of plan.indices(epoch, step), read in plan order."""
    return _batch([_read_one(images, int(i), with_sizes, max_pixels) for i in plan.indices(epoch, step)], with_sizes)


class MemoryReader:
    """Images already in memory (an archive read at listing): no thread, no read-ahead."""

    def __init__(self, images: ImageSet, plan: Any, with_sizes: bool, max_pixels: int = 0) -> None:
        self.images, self.plan, self.with_sizes, self.max_pixels = images, plan, with_sizes, max_pixels

    def batch(self, epoch: int, step: int) -> EncodedBatch:
        return _read_batch(self.images, self.plan, self.with_sizes, self.max_pixels, epoch, step)


class FileReader:
    """Image files, each batch read by a thread pool `ahead` batches before it is asked for."""

    def __init__(self, images: ImageSet, plan: Any, with_sizes: bool, ahead: int, threads: int = 2,
                 max_pixels: int = 0) -> None:
        self.images, self.plan, self.with_sizes, self.ahead = images, plan, with_sizes, ahead
        self.max_pixels = max_pixels
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="file-reader")
        self.pending: dict[tuple[int, int], Future] = {}

    def batch(self, epoch: int, step: int) -> EncodedBatch:
        for ahead in range(step, min(step + self.ahead + 1, len(self.plan))):
            if (epoch, ahead) not in self.pending:
                self.pending[(epoch, ahead)] = self.pool.submit(_read_batch, self.images, self.plan, self.with_sizes,
                                                                self.max_pixels, epoch, ahead)
        future = self.pending.pop((epoch, step))
        for key in [k for k in self.pending if k[0] != epoch or k[1] < step]:  # an epoch or a resume left behind
            self.pending.pop(key).cancel()
        return future.result()


class ShardStreamReader:
    """Shard members in the plan's read order, by one thread; each batch's bytes handed over once.

    The walk (stream position, what is held) lives in the worker thread only: every task runs
    there, in submission order, so it needs no lock. `batch()` hands out each step's bytes and
    submits the next `ahead` steps.
    """

    def __init__(self, images: ImageSet, plan: ShardStreamBatches, with_sizes: bool, ahead: int,
                 max_pixels: int = 0) -> None:
        self.images, self.plan, self.with_sizes, self.ahead = images, plan, with_sizes, ahead
        self.max_pixels = max_pixels
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="shard-reader")
        self.pending: dict[int, Future] = {}
        self.epoch: int | None = None
        self.submitted = -1  # the last step handed to the worker this epoch
        # the walk, in the worker thread
        self._stream = self._order = self._emitted_at = np.empty(0, np.int64)
        self._next = self._first = self._used = 0
        self._held: dict[int, Any] = {}

    def _start(self, epoch: int, step: int) -> None:
        """Walk this epoch's stream from its start, skipping what steps before `step` used."""
        stream, order = self.plan.epoch_stream(epoch)
        self._stream, self._order = stream, order
        self._used = min(len(self.plan) * self.plan.batch_size, len(order))  # emitted this epoch
        self._emitted_at = np.full(len(stream), len(stream), np.int64)  # past the end: never used
        self._emitted_at[order[:self._used]] = np.arange(self._used)
        self._first, self._next, self._held = step * self.plan.batch_size, 0, {}

    def _read(self, step: int) -> EncodedBatch:
        batch_size = self.plan.batch_size
        positions = self._order[step * batch_size:min((step + 1) * batch_size, self._used)]
        last = int(positions.max())
        emitted_at, first, used = self._emitted_at, self._first, self._used
        while self._next <= last:  # forward through the stream: each member read once, in file order
            at = self._next
            if first <= emitted_at[at] < used:
                index = int(self._stream[at])
                self._held[at] = _read_one(self.images, index, self.with_sizes, self.max_pixels)
            self._next += 1
        return _batch([self._held.pop(int(p)) for p in positions], self.with_sizes)

    def _restart(self, epoch: int, step: int) -> None:
        for future in self.pending.values():
            future.cancel()
        for future in self.pending.values():
            if not future.cancelled():
                future.exception()  # let a running task finish before the walk is reset
        self.pending.clear()
        self.epoch, self.submitted = epoch, step - 1
        self.pool.submit(self._start, epoch, step)

    def batch(self, epoch: int, step: int) -> EncodedBatch:
        if epoch != self.epoch or (step not in self.pending and step != self.submitted + 1):
            self._restart(epoch, step)
        while self.submitted < min(step + self.ahead, len(self.plan) - 1):
            self.submitted += 1
            self.pending[self.submitted] = self.pool.submit(self._read, self.submitted)
        return self.pending.pop(step).result()


def batch_reader(images: ImageSet, plan: Any, *, with_sizes: bool, ahead: int, max_pixels: int = 0) -> BatchReader:
    """The reader for where `images` lives: shard members, image files, or bytes in memory. With
    `with_sizes`, an image over `max_pixels` (0 = no limit) raises BadImageError naming it."""
    if images.members is not None:
        if not isinstance(plan, ShardStreamBatches):
            raise TypeError("tar shards are read in the order of a ShardStreamBatches plan")
        return ShardStreamReader(images, plan, with_sizes, ahead, max_pixels)
    if images.files is not None:
        return FileReader(images, plan, with_sizes, ahead, max_pixels=max_pixels)
    if images.encoded is not None:
        return MemoryReader(images, plan, with_sizes, max_pixels)
    raise ValueError("decoded arrays have no encoded bytes to read")


class ReaderSamples:
    """Batch callback of the reference graph for samples Python reads (tar shards): their bytes."""

    def __init__(self, reader: BatchReader, position: Any) -> None:
        self.reader, self.position = reader, position  # position: dali_loader.Position

    def __call__(self, info: Any) -> list[np.ndarray]:
        return self.reader.batch(*self.position(info)).data
