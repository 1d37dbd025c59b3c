"""The DALI backend behind the loader interface: batch callbacks, the pipeline loop, the hand-off to torch.

What happens per batch, and on which thread:

1. DALI's prefetching calls the batch callbacks (in the training process's main thread; they
   only do index arithmetic, a numpy draw and a fancy-index): `SampleSource` gives the samples
   (file paths for DALI's C++ reader, encoded bytes, uint8 arrays, or a gather from a data set
   resident on the GPU); `ArgumentSource` gives labels and the augmentation's per-sample
   arguments. Both depend only on (epoch, iteration), so a restored DALI checkpoint reproduces
   the remaining batches exactly.
2. DALI reads, decodes, resizes and crops in its own threads and CUDA stream (dali_graph.py).
3. `pipe.run(stream)` returns the batch ordered on torch's current stream: no host wait. The
   uint8 NHWC output is viewed by torch through DLPack (no copy) and standardized per image on the
   GPU into a new tensor in the training dtype (NCHW, channels_last). The DALI buffer is kept
   alive until the standardization has run on the GPU (a CUDA event), never longer.
   A CPU trainer gets the batch already standardized by DALI's worker threads (that pass would
   otherwise run in the training thread): the hand-off is then a view, plus the cast to bfloat16.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from typing import Any, Iterator

import numpy as np
import torch

from pipeline.data.crops import CropSource, CropSpec
from pipeline.data.dali_graph import (AugmentSpec, ChannelStats, DecoderOptions, build_crop_pipeline, build_pipeline,
                                      draw_augmentation)
from pipeline.data.images import find_bad_images
from pipeline.data.readers import ReaderSamples, batch_reader
from pipeline.data.sampler import ShardedBatches
from pipeline.data.sources import ImageSet
from pipeline.errors import BadImageError

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def standardize(images_nhwc: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC -> (x - mean) / sqrt(var + eps) per image, as NCHW channels_last in `dtype`.

    The permute is a view whose strides are already channels_last; every later op keeps them.
    """
    x = images_nhwc.permute(0, 3, 1, 2).float()
    var, mean = torch.var_mean(x, dim=(1, 2, 3), correction=0, keepdim=True)
    return ((x - mean) * torch.rsqrt(var + eps)).to(dtype)


@functools.lru_cache(maxsize=8)
def _channel_affine(stats: ChannelStats, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, 3, 1, 1) on `device`, made once: no host-to-device copy per step."""
    scale = torch.tensor([1 / (255 * s) for s in stats.std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(stats.mean, stats.std)], device=device).view(1, 3, 1, 1)
    return scale, shift


def normalize_channels(images_nhwc: torch.Tensor, stats: ChannelStats, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC -> (x / 255 - mean[c]) / std[c], as NCHW channels_last in `dtype` (data.normalize: channel)."""
    x = images_nhwc.permute(0, 3, 1, 2).float()
    scale, shift = _channel_affine(stats, x.device)
    return (x * scale - shift).to(dtype)


def normalize_batch(images_nhwc: torch.Tensor, std_eps: float, stats: ChannelStats | None,
                    dtype: torch.dtype) -> torch.Tensor:
    """The configured normalization of a uint8 NHWC batch: per image (stats None) or per channel."""
    if stats is None:
        return standardize(images_nhwc, std_eps, dtype)
    return normalize_channels(images_nhwc, stats, dtype)


class ArgumentSource:
    """Batch callback: labels and per-sample augmentation arguments of batch `iteration` of an epoch.

    The random draws come from a generator seeded by (seed, epoch, iteration), so a batch is the
    same whenever it is made (first run or resumed). The last few index batches are kept so a
    decode failure can be traced to its file.
    """

    def __init__(self, images: ImageSet, plan: ShardedBatches, spec: AugmentSpec, seed: int, epoch_offset: int,
                 history: int) -> None:
        self.labels, self.plan, self.spec = images.labels, plan, spec
        self.seed, self.epoch_offset = seed, epoch_offset
        self.recent: deque[np.ndarray] = deque(maxlen=history)

    def __call__(self, info: Any) -> tuple[np.ndarray, ...]:
        if info.iteration >= len(self.plan):
            raise StopIteration
        epoch = self.epoch_offset + info.epoch_idx
        idx = self.plan.indices(epoch, info.iteration)
        self.recent.append(idx)
        rng = np.random.default_rng([self.seed, epoch, info.iteration])
        return (self.labels[idx], *draw_augmentation(self.spec, rng, len(idx)))


class SampleSource:
    """Batch callback: the samples of batch `iteration` (same plan and epochs as ArgumentSource).

    kinds: "paths" (file paths as uint8 arrays; DALI's C++ reader reads them), "encoded" (image
    bytes held in memory), "arrays" (decoded uint8 HWC), "resident" (arrays kept on the GPU: the
    batch is a gather there, made on `stream`, and only the indices cross from the host).
    """

    def __init__(self, images: ImageSet, plan: ShardedBatches, epoch_offset: int, kind: str,
                 device: torch.device | None = None) -> None:
        self.plan, self.epoch_offset, self.kind = plan, epoch_offset, kind
        if kind == "paths":
            self.samples: Any = [np.frombuffer(path.encode(), np.uint8) for path in images.files]
        elif kind == "encoded":
            self.samples = images.encoded
        elif kind == "arrays":
            self.samples = images.arrays
        else:
            self.samples = torch.from_numpy(images.arrays).to(device)  # N x H x W x 3 uint8 on the GPU
            self.device, self.stream = device, torch.cuda.Stream(device)

    def __call__(self, info: Any) -> Any:
        if info.iteration >= len(self.plan):
            raise StopIteration
        idx = self.plan.indices(self.epoch_offset + info.epoch_idx, info.iteration)
        if self.kind == "arrays":
            return self.samples[idx]
        if self.kind == "resident":
            with torch.cuda.stream(self.stream):
                return self.samples[torch.from_numpy(idx).to(self.device, non_blocking=True)]
        return [self.samples[i] for i in idx]


def sample_kind(images: ImageSet, dali_device: str) -> str:
    if images.arrays is not None:
        return "resident" if dali_device == "gpu" else "arrays"
    return "paths" if images.files is not None else "encoded"


class DaliLoader:
    """DALI pipeline + sharded index plan behind the loader interface.

    `spec` picks the graph: an AugmentSpec the reference one (build_pipeline), a CropSpec the
    random-resized-crop one (build_crop_pipeline, fed by one CropSource).
    """

    def __init__(
        self,
        images: ImageSet,
        plan: ShardedBatches,
        spec: AugmentSpec,
        *,
        device: torch.device,
        dali_device: str,
        dtype: torch.dtype,
        std_eps: float,
        num_threads: int,
        prefetch_queue_depth: int,
        seed: int,
        channel_stats: ChannelStats | None = None,
        decoder: DecoderOptions = DecoderOptions(),
        state: dict[str, Any] | None = None,
        start_epoch: int = 0,
        stop_after: str | None = None,
    ) -> None:
        self.images, self.plan, self.device, self.dtype, self.std_eps = images, plan, device, dtype, std_eps
        self.channel_stats = channel_stats
        checkpoint = state["dali"] if state else None
        # A restored DALI checkpoint carries its own epoch counter; a fresh pipeline counts from 0.
        epoch_offset = 0 if checkpoint else start_epoch
        kind = sample_kind(images, dali_device)
        self.outputs_on_gpu = device.type == "cuda"  # a CPU graph copies to the trainer's GPU at its end
        # Standardize where the trainer is: torch on the GPU, DALI's threads for a CPU trainer.
        output = "uint8" if self.outputs_on_gpu else ("float16" if dtype == torch.float16 else "float32")
        history = prefetch_queue_depth + 2
        common = dict(device=dali_device, device_id=device.index if self.outputs_on_gpu else None,
                      batch_size=plan.batch_size, num_threads=num_threads, prefetch_queue_depth=prefetch_queue_depth,
                      seed=seed, output=output, std_eps=std_eps, channel_stats=channel_stats, decoder=decoder,
                      checkpoint=checkpoint, stop_after=None if stop_after == "full" else stop_after)
        if isinstance(spec, CropSpec):  # random-resized crops: the window needs the bytes' header sizes
            reader = batch_reader(images, plan, with_sizes=True, ahead=history)
            source = CropSource(images.labels, plan, spec, reader, seed, epoch_offset, history)
            self.recent = source.recent
            self.pipe = build_crop_pipeline(source, spec, **common)
        else:
            arguments = ArgumentSource(images, plan, spec, seed, epoch_offset, history=history)
            self.recent = arguments.recent
            if images.members is not None:  # tar shards: read in the plan's order by the shard reader
                samples: Any = ReaderSamples(plan, batch_reader(images, plan, with_sizes=False, ahead=history),
                                             epoch_offset)
            else:
                samples = SampleSource(images, plan, epoch_offset, kind, device)
            self.pipe = build_pipeline(arguments, samples, spec, sample_kind=kind,
                                       samples_stream=samples.stream if kind == "resident" else None, **common)
        self.raw = stop_after is not None  # benchmark stage timing: yield DALI's outputs untouched
        self._in_flight: deque[tuple[torch.cuda.Event, tuple[torch.Tensor, ...]]] = deque()

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[Batch]:
        """The rest of the current epoch; then the pipeline is reset, ready for the next one."""
        while True:
            try:
                outputs = self.pipe.run(torch.cuda.current_stream(self.device)) if self.outputs_on_gpu \
                    else self.pipe.run()
            except StopIteration:
                self.pipe.reset()
                return
            except RuntimeError as exc:
                raise self.diagnose(exc) from exc
            yield outputs if self.raw else self.hand_off(outputs)

    def hand_off(self, outputs: tuple[Any, Any]) -> Batch:
        """DALI's NHWC batch -> standardized NCHW channels_last in the training dtype, on the device."""
        raw_images, raw_labels = (torch.from_dlpack(out.as_tensor()) for out in outputs)  # views, no copy
        if raw_images.dtype != torch.uint8:  # standardized by DALI (a CPU trainer)
            return raw_images.permute(0, 3, 1, 2).to(self.dtype), raw_labels.view(-1)  # channels_last view
        images = normalize_batch(raw_images, self.std_eps, self.channel_stats, self.dtype)
        labels = raw_labels.view(-1).clone()
        if self.outputs_on_gpu:
            # DALI may reuse its buffer once our view is gone, while the kernels reading it are
            # still queued on torch's stream: keep the views until those kernels have run.
            event = torch.cuda.Event()
            event.record()
            self._in_flight.append((event, (raw_images, raw_labels)))
            while self._in_flight and self._in_flight[0][0].query():
                self._in_flight.popleft()
        return images, labels

    def diagnose(self, exc: RuntimeError) -> Exception:
        """A decode failure of a specific file becomes an error that names it; anything else stays itself.

        DALI reports a bad file as an opaque codec failure and invalidates the pipeline. The
        files of the last few batches are re-read and decoded with Pillow: the ones that fail are
        named. If all of them decode, the failure was not the data's (CUDA, memory, the codec
        library, DALI itself) and DALI's own error is raised with its full message.
        """
        if not self.images.is_encoded:
            return exc
        candidates = sorted({int(i) for idx in self.recent for i in idx})
        bad = find_bad_images(candidates, self.images.read_encoded, self.images.names)
        if not bad:
            return exc
        return BadImageError("undecodable image(s): " + "; ".join(msg for _, msg in bad)
                             + " (remove them, or set data.check_images=skip to leave bad files out)")

    def state_dict(self) -> dict[str, Any]:
        """Position of the pipeline (epoch and iteration consumed), to restore this loader exactly."""
        return {"dali": self.pipe.checkpoint()}
