"""The DALI backend behind the loader interface: batch callbacks, the pipeline loop, the hand-off to torch.

What happens per batch, and on which thread:

1. DALI's prefetching calls the batch callbacks (in the training process's main thread; they
   only do index arithmetic, a slice of the epoch's random draws and a fancy-index): `SampleSource` gives the samples
   (file paths for DALI's C++ reader, encoded bytes, uint8 arrays, or a gather from a data set
   resident on the GPU); `ArgumentSource` gives labels and the augmentation's per-sample
   arguments. Both depend only on (epoch, step), so a loader built at a saved position
   (`state_dict()`) reproduces the remaining batches exactly.
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
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pipeline.data.crops import CropSource, CropSpec
from pipeline.data.dali_graph import (AugmentSpec, ChannelStats, DecoderOptions, GraphSettings, build_crop_pipeline,
                                      build_pipeline, decoder_refusals, draw_augmentation)
from pipeline.data.images import REMOVE_OR_SKIP, find_bad_images, undecodable_error
from pipeline.data.augment.progressive import SideSchedule
from pipeline.data.readers import ReaderSamples, batch_reader
from pipeline.data.sampler import ShardedBatches
from pipeline.data.sources import ImageSet
from pipeline.sections import no_section

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def standardize(images_nhwc: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC -> (x - mean) / sqrt(var + eps) per image, as NCHW channels_last in `dtype`.

    The permute is a view whose strides are already channels_last; every later op keeps them.
    Three passes over the batch (the float copy, the statistics, one fused x * scale + shift
    written straight in `dtype`) instead of six: at batch 1024 x 122 px, 0.7 GB of memory traffic
    instead of 1.4. `compiled_standardize` fuses it further, for compiled trainers.
    """
    x = images_nhwc.permute(0, 3, 1, 2).float()
    var, mean = torch.var_mean(x, dim=(1, 2, 3), correction=0, keepdim=True)
    scale = torch.rsqrt(var + eps)
    return torch.addcmul(-mean * scale, x, scale, out=torch.empty_like(x, dtype=dtype))


@functools.cache
def compiled_standardize() -> Any:
    """`standardize` through torch.compile: one or two fused kernels reading the uint8 batch, writing `dtype`.

    Used when the trainer compiles its model (train.compile != off), which has paid for the compiler
    already; the first batch (and the evaluation's partial last one) compile it.
    """
    return torch.compile(standardize, dynamic=None)


class Position:
    """Which (epoch, step) of the plan DALI's batch number (epoch_idx, iteration) is, for both callbacks.

    A loader resumed at step `first_step` of epoch `first_epoch` starts its pipeline there: the
    first epoch it runs is shortened, later ones are whole. DALI keeps no state we need: every
    batch is a pure function of (epoch, step), so the position alone restores it.
    """

    def __init__(self, plan: ShardedBatches, first_epoch: int, first_step: int) -> None:
        self.plan, self.first_epoch, self.first_step = plan, first_epoch, first_step

    def __call__(self, info: Any) -> tuple[int, int]:
        step = info.iteration + (self.first_step if info.epoch_idx == 0 else 0)
        if step >= len(self.plan):
            raise StopIteration
        return self.first_epoch + info.epoch_idx, step


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
                    dtype: torch.dtype, compiled: bool = False) -> torch.Tensor:
    """The configured normalization of a uint8 NHWC batch: per image (stats None) or per channel.

    `compiled`: the per-image standardization through torch.compile (for trainers that compile).
    """
    if stats is None:
        return (compiled_standardize() if compiled else standardize)(images_nhwc, std_eps, dtype)
    return normalize_channels(images_nhwc, stats, dtype)


class ArgumentSource:
    """Batch callback: labels and per-sample augmentation arguments of batch `iteration` of an epoch.

    The random draws of a whole epoch are made at its first batch, from a generator seeded by
    (seed, epoch), and each batch takes its row: a batch is the same whenever it is made (first run
    or resumed mid-epoch), and the training thread pays one vectorised draw per epoch instead of a
    new generator and its draws per step. The last few index batches are kept so a decode failure
    can be traced to its file.
    """

    STREAM = 0x617567  # "aug": keeps these draws apart from the index plan's generator of (seed, epoch)

    def __init__(self, images: ImageSet, plan: Any, spec: AugmentSpec, seed: int, position: Position,
                 history: int, sides: SideSchedule | None = None) -> None:
        self.labels, self.plan, self.spec = images.labels, plan, spec
        self.seed, self.position = seed, position
        self.sides = sides or SideSchedule(None, spec.out_side, len(plan))  # the crop side of each batch
        self.recent: deque[np.ndarray] = deque(maxlen=history)
        self.epoch, self.draws = -1, ()  # the epoch whose draws are held: (steps, batch, ...) per draw

    def epoch_draws(self, epoch: int) -> tuple[np.ndarray, ...]:
        if epoch != self.epoch:
            steps, batch = len(self.plan), self.plan.batch_size
            rng = np.random.default_rng([self.seed, epoch, self.STREAM])
            self.epoch = epoch
            self.draws = tuple(d.reshape(steps, batch, *d.shape[1:])
                               for d in draw_augmentation(self.spec, rng, steps * batch))
        return self.draws

    def __call__(self, info: Any) -> tuple[np.ndarray, ...]:
        epoch, step = self.position(info)
        idx = self.plan.indices(epoch, step)  # any plan: a permutation's slice, or a shard stream's batch
        self.recent.append(idx)
        rows = tuple(d[step, :len(idx)] for d in self.epoch_draws(epoch))
        return (self.labels[idx], *self.spec.batch_arguments(rows, self.sides(epoch, step)))


class SampleSource:
    """Batch callback: the samples of batch `iteration` (same plan and epochs as ArgumentSource).

    kinds: "paths" (file paths as uint8 arrays; DALI's C++ reader reads them), "encoded" (image
    bytes held in memory), "arrays" (decoded uint8 HWC), "resident" (arrays kept on the GPU: the
    batch is a gather there, made on `stream`; the epoch's order goes to the GPU once, from pinned
    memory, so no index crosses from the host per step).
    """

    def __init__(self, images: ImageSet, plan: ShardedBatches, position: Position, kind: str,
                 device: torch.device | None = None) -> None:
        self.plan, self.position, self.kind = plan, position, kind
        if kind == "paths":
            self.samples: Any = [np.frombuffer(path.encode(), np.uint8) for path in images.files]
        elif kind == "encoded":
            self.samples = images.encoded
        elif kind == "arrays":
            self.samples = images.arrays
        else:
            self.samples = torch.from_numpy(images.arrays).to(device)  # N x H x W x 3 uint8 on the GPU
            self.device, self.stream = device, torch.cuda.Stream(device)
            self.epoch, self.order = -1, None  # the epoch whose order is on the GPU

    def __call__(self, info: Any) -> Any:
        epoch, step = self.position(info)
        if self.kind == "resident":
            with torch.cuda.stream(self.stream):
                if epoch != self.epoch:
                    order = torch.from_numpy(self.plan.epoch_order(epoch)).pin_memory()
                    self.epoch, self.order = epoch, order.to(self.device, non_blocking=True)
                begin, end = self.plan.bounds(step)
                return self.samples[self.order[begin:end]]
        idx = self.plan.indices(epoch, step)
        if self.kind == "arrays":
            return self.samples[idx]
        return [self.samples[i] for i in idx]


def sample_kind(images: ImageSet, dali_device: str) -> str:
    if images.arrays is not None:
        return "resident" if dali_device == "gpu" else "arrays"
    return "paths" if images.files is not None else "encoded"


class DaliLoader:
    """DALI pipeline + sharded index plan behind the loader interface.

    `spec` picks the graph: an AugmentSpec the reference one (build_pipeline), a CropSpec the
    random-resized-crop one (build_crop_pipeline, fed by one CropSource).

    `total_steps`: the run's planned training steps, which progressive resizing
    (data.train.progressive_start_crop) sizes each batch by; `set_total_steps` changes it before
    the first batch. None: every batch at the final size.
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
        compile_standardize: bool = False,
        total_steps: int | None = None,
        uint8_output: bool = False,
    ) -> None:
        self.images, self.plan, self.device, self.dtype, self.std_eps = images, plan, device, dtype, std_eps
        self.channel_stats, self.compiled, self.max_pixels = channel_stats, compile_standardize, decoder.max_pixels
        self.uint8_output = uint8_output  # hand out DALI's uint8 NHWC images as they are (exported models)
        # Where the consumer is: the epoch being read and the batches of it handed out so far.
        self.epoch, self.step = (state["epoch"], state["step"]) if state else (start_epoch, 0)
        position = Position(plan, self.epoch, self.step)
        self.sides = SideSchedule(spec.levers.progressive, spec.out_side, len(plan), total_steps)
        kind = sample_kind(images, dali_device)
        self.outputs_on_gpu = device.type == "cuda"  # a CPU graph copies to the trainer's GPU at its end
        # Standardize where the trainer is: torch on the GPU, DALI's threads for a CPU trainer.
        output = ("uint8" if self.outputs_on_gpu or uint8_output
                  else "float16" if dtype == torch.float16 else "float32")
        history = prefetch_queue_depth + 2
        settings = GraphSettings(
            device=dali_device, device_id=device.index if self.outputs_on_gpu else None, batch_size=plan.batch_size,
            num_threads=num_threads, prefetch_queue_depth=prefetch_queue_depth, seed=seed, output=output,
            std_eps=std_eps, channel_stats=channel_stats, decoder=decoder,
            stop_after=None if stop_after == "full" else stop_after)
        if isinstance(spec, CropSpec):  # random-resized crops: the window needs the bytes' header sizes
            reader = batch_reader(images, plan, with_sizes=True, ahead=history, max_pixels=decoder.max_pixels)
            source = CropSource(images.labels, plan, spec, reader, seed, position, history, self.sides)
            self.recent = source.recent
            self.callbacks: tuple[Any, ...] = (source,)  # what DALI calls per batch, on the training thread
            self.pipe = build_crop_pipeline(source, spec, settings)
        else:
            arguments = ArgumentSource(images, plan, spec, seed, position, history=history, sides=self.sides)
            self.recent = arguments.recent
            if images.members is not None:  # tar shards: read in the plan's order by the shard reader
                samples: Any = ReaderSamples(batch_reader(images, plan, with_sizes=False, ahead=history), position)
            else:
                samples = SampleSource(images, plan, position, kind, device)
            self.callbacks = (arguments, samples)
            self.pipe = build_pipeline(arguments, samples, spec, settings, sample_kind=kind,
                                       samples_stream=samples.stream if kind == "resident" else None)
        self.raw = stop_after is not None  # benchmark stage timing: yield DALI's outputs untouched
        self.section = no_section  # the host-overhead ledger's hook (pipeline/sections.py)
        self._in_flight: deque[tuple[torch.cuda.Event, tuple[torch.Tensor, ...]]] = deque()
        self._free_events: list[torch.cuda.Event] = []

    def __len__(self) -> int:
        return len(self.plan)

    def set_total_steps(self, total_steps: int, position: Callable[[int, int], float] | None = None) -> None:
        """The run's planned training steps (progressive resizing sizes batches by them), and optionally
        where each batch is on them (SideSchedule). Call it before the first batch (and with the same
        values on resume): batches DALI has prepared already keep their size."""
        self.sides.total_steps, self.sides.position = total_steps, position

    def __iter__(self) -> Iterator[Batch]:
        """The rest of the current epoch; then the pipeline is reset, ready for the next one."""
        while True:
            try:
                outputs = self.pipe.run(torch.cuda.current_stream(self.device)) if self.outputs_on_gpu \
                    else self.pipe.run()
            except StopIteration:
                self.pipe.reset()
                self.epoch, self.step = self.epoch + 1, 0
                return
            except RuntimeError as exc:
                raise self.diagnose(exc) from exc
            batch = outputs if self.raw else self.hand_off(outputs)
            self.step += 1  # handed out: a checkpoint taken after this batch's step resumes with the next
            yield batch

    def hand_off(self, outputs: tuple[Any, Any]) -> Batch:
        """DALI's NHWC batch -> standardized NCHW channels_last in the training dtype, on the device."""
        raw_images, raw_labels = (torch.from_dlpack(out.as_tensor()) for out in outputs)  # views, no copy
        if self.uint8_output:  # a kept DALI output stays valid (its memory is not reused)
            return raw_images, raw_labels.view(-1)
        if raw_images.dtype != torch.uint8:  # standardized by DALI (a CPU trainer)
            return raw_images.permute(0, 3, 1, 2).to(self.dtype), raw_labels.view(-1)  # channels_last view
        with self.section("standardize"):
            images = normalize_batch(raw_images, self.std_eps, self.channel_stats, self.dtype, self.compiled)
        labels = raw_labels.view(-1).clone()
        if self.outputs_on_gpu:
            # DALI may reuse its buffer once our view is gone, while the kernels reading it are
            # still queued on torch's stream: keep the views until those kernels have run.
            # Events are recycled: a new one only when every earlier one is still pending.
            event = self._free_events.pop() if self._free_events else torch.cuda.Event()
            event.record()
            self._in_flight.append((event, (raw_images, raw_labels)))
            while self._in_flight and self._in_flight[0][0].query():
                self._free_events.append(self._in_flight.popleft()[0])
        return images, labels

    def diagnose(self, exc: RuntimeError) -> Exception:
        """A decode failure of a specific file becomes an error that names it; anything else stays itself.

        DALI reports a bad file as an opaque codec failure and invalidates the pipeline. The
        files of the last few batches are re-read and decoded with Pillow (after their header sizes
        are checked against the pixel limit, which the graph refused them for): the ones that fail
        are named. Pillow decodes some damaged files that DALI's decoder refuses: when Pillow decodes
        them all, each is tried alone with DALI's CPU decoder, and the ones it refuses are named. If
        all of them decode, the failure was not the data's (CUDA, memory, the codec library, DALI
        itself) and DALI's own error is raised with its full message.
        """
        if not self.images.is_encoded:
            return exc
        candidates = sorted({int(i) for idx in self.recent for i in idx})
        bad = find_bad_images(candidates, self.images.read_encoded, self.images.names, max_pixels=self.max_pixels)
        if bad:
            return undecodable_error([msg for _, msg in bad], REMOVE_OR_SKIP)
        refused = decoder_refusals([self.images.read_encoded(i) for i in candidates])
        if not refused:
            return exc
        return undecodable_error([f"{self.images.names[candidates[at]]}: cannot decode (damaged: DALI's image decoder "
                                  "refuses it, though Pillow reads it)" for at in refused],
                                 " (remove or replace them: data.check_images decodes with Pillow, which reads them)")

    def state_dict(self) -> dict[str, Any]:
        """The consumer's position (epoch, batches of it handed out), to restore this loader exactly.

        Not DALI's own checkpoint: the batches depend on the position only, so a run resumes
        exactly whichever graph reads them (decoded once or decoded every step, another DALI version).
        """
        return {"epoch": self.epoch, "step": self.step}
