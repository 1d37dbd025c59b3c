"""The DALI graph: read, decode, resize the shorter side, crop + flip; uint8 out (or standardized on CPU).

One function builds the graph for every source and device (`GraphSettings`: device, batches,
output; shared with the crop graph). On GPU the JPEG decoder is DALI's
`mixed` one and the resize and crop run as GPU operators; on CPU (`device_id=None`) the same code
builds CPU operators, and a CPU graph feeding a GPU trainer ends with a copy to the GPU inside
DALI (so it overlaps with training).

The augmentation is the reference's, operation for operation: resize the shorter side to
s ~ U{min_side..max_side} with a (per-image) filter, take a crop x crop window at a uniformly
random position, flip it with p = flip_prob. Evaluation resizes the shorter side to `size` and
takes the centred crop.

Where the per-image random numbers come from, and why: every random draw (s, the crop
position, the flip, the filter) is made in numpy (`draw_augmentation`, for a whole epoch at its first
batch, from a generator seeded by (seed, epoch)), and enters the graph as a per-sample argument
given by the batch callback.
The graph itself has no random or arithmetic operators. DALI runs CPU operators one sample at a
time, so a graph that computed the crop window from the image shape with DALI arithmetic spent
~40 tiny per-sample operators per image, which capped the loader on a 16-core GPU host (BENCHMARKS.md,
"H200: DALI on the GPU") and made up most of the CPU graph's time here. Batches also stay a pure function of
(epoch, iteration): exact resume needs only the position, not DALI's random state.

Before decoding, the reference graph refuses images larger than `data.max_pixels`: DALI's own
header parser (`fn.peek_image_shape`, no decoding) gives each image's size, and an image over the
limit reaches the decoder as three bytes no decoder takes, so its decode fails at once instead of
allocating gigabytes, and the loader names the file (dali_loader.py: `DaliLoader.diagnose`). It
costs one conditional per batch (no difference measured on the CPU loader, CIFAR-10 files); the
random-resized-crop graph's readers check the header sizes they parse anyway (readers.py).

A second graph, `build_crop_pipeline`, serves `data.train.kind: random_resized_crop`: the window
(drawn in numpy from each image's header size, pipeline/data/crops.py) is the only part of the
file decoded (`fn.decoders.image_slice`), then resized to the output side and flipped.

Normalization is per image by default (below); `data.normalize: channel` uses per-channel
statistics instead ((x / 255 - mean[c]) / std[c], `ChannelStats`), in either graph.

The training-only levers (pipeline/data/augment/levers.py: automatic augmentation, random erasing,
progressive resizing; all off by default) run in both graphs, drawn in numpy like the rest and
fed the same way: the automatic augmentation and the erasing between the crop (uint8 HWC) and the
normalization, the crop side of progressive resizing as a per-sample argument of the crop (or the
resize) and of the resize range. The graph is built with `enable_conditionals=True` only when the
automatic augmentation is on (its `select` splits the batch by operation).

Standardization, (x - mean) / sqrt(var + eps) per image over all pixels and channels, happens
where the training happens. For a GPU trainer the graph hands uint8 to torch, which standardizes
and casts on the GPU in one pass (`pipeline/data/dali_loader.py`): DALI cannot emit bfloat16,
`fn.normalize` cannot emit float16, and uint8 moves a quarter of the bytes of float32. For a CPU
trainer that pass would run in the training process's own thread, so the graph standardizes in
DALI's worker threads instead (`output="float32"` or `"float16"`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from pipeline.constants import INTERPOLATIONS, MAX_IMAGE_PIXELS
from pipeline.data.augment.levers import TrainLevers
from pipeline.data.augment.progressive import scaled_sides

STAGES = ("read", "decode", "resize", "full")  # cumulative graph prefixes, for benchmarking
AUGMENT_ARGS = ("side", "crop_x", "crop_y", "mirror")  # per-sample arguments, in output order (+ "interp")


@dataclass(frozen=True)
class AugmentSpec:
    """What the graph does to each image (sizes in pixels)."""

    out_side: int  # side of the square output
    min_side: int  # resized shorter side drawn from [min_side, max_side]; eval: min = max = size
    max_side: int
    random_crop: bool  # False: centred window (evaluation)
    flip_prob: float
    interpolation: str  # nearest | bilinear | bicubic | random
    levers: TrainLevers = TrainLevers()  # training only: automatic augmentation, erasing, progressive resizing

    @classmethod
    def for_train(cls, aug: Any) -> "AugmentSpec":
        return cls(aug.crop, aug.min_side, aug.max_side, True, aug.flip_prob, aug.interpolation,
                   TrainLevers.from_config(aug))

    @property
    def base_names(self) -> tuple[str, ...]:
        """The resize-and-crop arguments: AUGMENT_ARGS, plus "interp" for a random filter."""
        return AUGMENT_ARGS + (("interp",) if self.interpolation == "random" else ())

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The per-sample arguments the graph takes: `base_names`, then the levers' (TrainLevers)."""
        return self.base_names + self.levers.argument_names

    def batch_arguments(self, rows: tuple[np.ndarray, ...], side: int) -> tuple[np.ndarray, ...]:
        """One batch's arguments, in `argument_names` order, from its rows of `draw_augmentation` and its
        crop side (progressive resizing: the drawn resize side scales with it)."""
        base, drawn = rows[:len(self.base_names)], rows[len(self.base_names):]
        if side != self.out_side:
            base = (scaled_sides(base[0], side, self.out_side), *base[1:])
        return (*base, *self.levers.batch_arguments(drawn, len(base[0]), side))


def draw_augmentation(spec: AugmentSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Per-sample draws for `n` images: `spec.base_names` in that order, then the levers' (TrainLevers.draw).

    side: resized shorter side (float32 px, for the final crop); crop_x, crop_y: the window's
    position as a fraction of the free space (0 = left/top, 1 = right/bottom); mirror: 1 = flip
    (int32); interp (random filter only): an index into INTERPOLATIONS (int32).
    """
    side = rng.integers(spec.min_side, spec.max_side, n, endpoint=True).astype(np.float32)
    if spec.random_crop:
        crop_x, crop_y = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    else:
        crop_x = crop_y = np.full(n, 0.5, np.float32)
    mirror = (rng.random(n) < spec.flip_prob).astype(np.int32)
    base: tuple[np.ndarray, ...] = (side, crop_x, crop_y, mirror)
    if spec.interpolation == "random":
        base += (rng.integers(0, len(INTERPOLATIONS), n).astype(np.int32),)
    return base + spec.levers.draw(rng, n)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel normalization, (x / 255 - mean[c]) / std[c] (data.normalize: channel)."""

    mean: tuple[float, float, float]  # R, G, B on the 0-1 scale
    std: tuple[float, float, float]


@dataclass(frozen=True)
class DecoderOptions:
    """What the decoder may decode (`max_pixels`, on every device) and the GPU (`mixed`) decoder's settings."""

    hw_decoder_load: float = 0.65  # share of each batch for the hardware decoder (A100/H100/H200)
    preallocate_width_hint: int = 0  # px; sizes the hardware decoder's buffers up front (0: DALI's default)
    preallocate_height_hint: int = 0
    device_memory_padding: int = 16 << 20  # bytes added to each device buffer it allocates
    host_memory_padding: int = 8 << 20  # bytes added to each pinned host buffer
    max_pixels: int = MAX_IMAGE_PIXELS  # larger images (header width x height) are refused undecoded; 0: no limit

    @classmethod
    def from_config(cls, data_cfg: Any) -> "DecoderOptions":
        return cls(data_cfg.hw_decoder_load, data_cfg.preallocate_width_hint, data_cfg.preallocate_height_hint,
                   data_cfg.device_memory_padding, data_cfg.host_memory_padding, data_cfg.max_pixels)

    def arguments(self, gpu: bool) -> dict[str, Any]:
        """Keyword arguments of a DALI decoder on the GPU (`mixed`) or the CPU."""
        if not gpu:
            return dict(device="cpu")
        hints = {k: v for k, v in (("preallocate_width_hint", self.preallocate_width_hint),
                                   ("preallocate_height_hint", self.preallocate_height_hint)) if v}
        return dict(device="mixed", hw_decoder_load=self.hw_decoder_load,
                    device_memory_padding=self.device_memory_padding, host_memory_padding=self.host_memory_padding,
                    **hints)


@dataclass(frozen=True)
class GraphSettings:
    """What both graphs share: where they run, their batches and threads, and what they emit.

    `output`: uint8, or normalized float32/float16: per image with `std_eps`, or per channel with
    `channel_stats`. A CPU graph (`device="cpu"`) with a `device_id` copies its outputs to that GPU
    at the end. `stop_after` ("read", "decode", "resize") truncates the graph, for the benchmark's
    per-stage breakdown only.
    """

    device: Literal["gpu", "cpu"]
    device_id: int | None
    batch_size: int
    num_threads: int
    prefetch_queue_depth: int
    seed: int
    output: Literal["uint8", "float32", "float16"] = "uint8"
    std_eps: float = 1e-5
    channel_stats: ChannelStats | None = None
    decoder: DecoderOptions = DecoderOptions()
    stop_after: str | None = None

    def __post_init__(self) -> None:
        if self.stop_after not in (None, *STAGES[:-1]):
            raise ValueError(f"stop_after must be one of {STAGES[:-1]}, got {self.stop_after!r}")

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    def decoder_arguments(self) -> dict[str, Any]:
        return self.decoder.arguments(self.gpu)

    def finish(self, images: Any, labels: Any, augment: Callable[[Any], Any] | None = None,
               **window: Any) -> tuple[Any, Any]:
        """The graph's last step and its outputs: crop/mirror (`window`), `augment` (uint8 HWC in and
        out: the training levers), normalize, then the copy to the trainer's GPU where the graph runs
        on the CPU for a GPU trainer."""
        if augment is None:  # one operator: crop, mirror, normalize
            images = crop_mirror_normalize(images, self.output, self.std_eps, self.channel_stats, **window)
        else:
            images = augment(crop_mirror_normalize(images, "uint8", self.std_eps, None, **window))
            if self.output != "uint8":
                images = crop_mirror_normalize(images, self.output, self.std_eps, self.channel_stats)
        if self.gpu:
            return images, labels.gpu()
        if self.device_id is not None:  # a CPU graph feeding a GPU trainer: the copy happens in DALI
            return images.gpu(), labels.gpu()
        return images, labels

    def build(self, graph: Callable[..., Any]) -> Any:
        """The built pipeline of a `@pipeline_def` graph."""
        pipe = graph(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                     seed=self.seed, prefetch_queue_depth=self.prefetch_queue_depth)
        with warnings.catch_warnings():
            if self.stop_after is not None:  # a truncated graph leaves the per-sample arguments unused, on purpose
                warnings.filterwarnings("ignore", message="The external source node .* not used")
            pipe.build()
        return pipe


def _interp_types(codes: Any) -> Any:
    """INTERPOLATIONS indices -> DALI interpolation types (nearest, linear, cubic), per sample."""
    from nvidia.dali import fn, types

    table = np.array([int(types.INTERP_NN), int(types.INTERP_LINEAR), int(types.INTERP_CUBIC)], np.int32)
    return fn.cast(fn.lookup_table(codes, keys=list(range(len(table))), values=table.tolist(), dtype=types.INT32),
                   dtype=types.INTERP_TYPE)


def crop_mirror_normalize(images: Any, output: str, std_eps: float, channel_stats: ChannelStats | None,
                          **window: Any) -> Any:
    """The graph's last step: crop/mirror (`window`: crop_mirror_normalize's arguments), then uint8 or
    normalized float32/float16 HWC."""
    from nvidia.dali import fn, types

    per_channel = channel_stats is not None and output != "uint8"
    if per_channel:  # one operator: crop, mirror, (x - 255 mean) / (255 std), cast
        dtype = types.FLOAT16 if output == "float16" else types.FLOAT
        stats = dict(mean=[255 * m for m in channel_stats.mean], std=[255 * s for s in channel_stats.std])
    else:
        dtype, stats = (types.UINT8 if output == "uint8" else types.FLOAT), {}
    images = fn.crop_mirror_normalize(images, dtype=dtype, output_layout="HWC", **stats, **window)
    if output != "uint8" and not per_channel:
        images = fn.normalize(images, axis_names="HWC", epsilon=std_eps)
        if output == "float16":
            images = fn.cast(images, dtype=types.FLOAT16)  # fn.normalize cannot emit float16
    return images


def refuse_too_large(data: Any, max_pixels: int) -> Any:
    """Encoded images whose header announces more than `max_pixels` replaced by three bytes that are no
    image (their height, width and channels, cast to uint8): the decoder fails on them at once, before
    allocating anything. Needs a graph built with `enable_conditionals=True`."""
    from nvidia.dali import fn, types

    shape = fn.peek_image_shape(data)  # (height, width, channels) as decoded, EXIF orientation applied
    if shape[0] * shape[1] > max_pixels:
        data = fn.cast(shape, dtype=types.UINT8)
    return data


def decoder_refusals(samples: list[np.ndarray]) -> list[int]:
    """The positions of the encoded images in `samples` that DALI's CPU decoder refuses, each tried alone
    (its header parse, then the decode): the file behind an opaque decode failure of a batch that Pillow,
    more lenient with damaged data, decodes (DaliLoader.diagnose)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def decode_one():
        data = fn.external_source(name="encoded")
        return fn.peek_image_shape(data), fn.decoders.image(data, output_type=types.RGB, device="cpu")

    refused, pipe = [], None
    for position, sample in enumerate(samples):
        if pipe is None:
            pipe = decode_one()
            pipe.build()
        pipe.feed_input("encoded", [sample])
        try:
            pipe.run()
        except RuntimeError:
            refused.append(position)
            pipe = None  # a failed run leaves the pipeline unusable
    return refused


def _resize_filter(spec: Any, arg: dict[str, Any]) -> Any:
    from nvidia.dali import types

    if spec.interpolation == "random":
        return _interp_types(arg["interp"])
    return {"nearest": types.INTERP_NN, "bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}[
        spec.interpolation]


def build_pipeline(
    arguments: Callable[[Any], tuple[Any, ...]],
    samples: Callable[[Any], Any],
    spec: AugmentSpec,
    settings: GraphSettings,
    *,
    sample_kind: Literal["paths", "encoded", "arrays", "resident"],
    samples_stream: Any = None,
) -> Any:
    """A built DALI pipeline with outputs (images HWC, labels int64), as `settings` say.

    Two batch callbacks feed it, both called with DALI's batch_info and raising StopIteration at
    the end of an epoch: `arguments` returns (labels, *per-sample augmentation arguments in
    `spec.argument_names` order), `samples` the images: file paths as uint8 arrays (`sample_kind="paths"`,
    read by DALI's C++ file reader), encoded image bytes ("encoded"), uint8 HWC arrays ("arrays"),
    or uint8 HWC arrays already on the GPU, made on `samples_stream` ("resident").
    """
    from nvidia.dali import fn, pipeline_def, types

    stop_after, levers = settings.stop_after, spec.levers
    limit = settings.decoder.max_pixels if sample_kind in ("paths", "encoded") else 0  # arrays are decoded already

    @pipeline_def(enable_conditionals=levers.conditionals or bool(limit))
    def graph():
        labels, *args = fn.external_source(source=arguments, num_outputs=1 + len(spec.argument_names),
                                           batch=True, batch_info=True)
        arg = dict(zip(spec.argument_names, args))
        layout = "HWC" if sample_kind in ("arrays", "resident") else None
        if sample_kind == "resident":
            data = fn.external_source(source=samples, batch=True, batch_info=True, layout=layout, device="gpu",
                                      cuda_stream=samples_stream)
        else:
            data = fn.external_source(source=samples, batch=True, batch_info=True, layout=layout)
        if sample_kind == "paths":
            data = fn.io.file.read(data, dont_use_mmap=True)  # small files: read() beats mmap
        if stop_after == "read":
            return data, labels
        if sample_kind in ("arrays", "resident"):
            images = data.gpu() if settings.gpu and sample_kind == "arrays" else data
        else:
            if limit:
                data = refuse_too_large(data, limit)
            images = fn.decoders.image(data, output_type=types.RGB, **settings.decoder_arguments())
        if stop_after == "decode":
            return images, labels
        images = fn.resize(images, resize_shorter=arg["side"], interp_type=_resize_filter(spec, arg))
        if stop_after == "resize":
            return images, labels
        crop = arg["out"] if levers.progressive else (spec.out_side, spec.out_side)
        augment = (lambda cropped: levers.apply(cropped, arg, crop)) if levers.post_crop else None
        return settings.finish(images, labels, augment, crop=crop, crop_pos_x=arg["crop_x"],
                               crop_pos_y=arg["crop_y"], mirror=arg["mirror"])

    return settings.build(graph)


def build_crop_pipeline(source: Callable[[Any], tuple[Any, ...]], spec: Any, settings: GraphSettings) -> Any:
    """The random-resized-crop graph (spec: crops.CropSpec), outputs (images HWC, labels int64) as build_pipeline's.

    One batch callback (`source`, crops.CropSource) gives (encoded images, labels, anchor (x, y),
    shape (width, height), mirror[, interp]) per sample. The decoder decodes only that window
    (`roi_decode`; else the whole image, then `fn.slice`); the window is resized to out_side x
    out_side (antialiased when shrinking, as torchvision's antialias=True) and flipped in the last
    step. On the GPU the decoder is `mixed` (`settings.decoder`: hardware share, buffer hints). The
    stages for the benchmark: read (the bytes), decode (the decoded window), resize, full.
    """
    from nvidia.dali import fn, pipeline_def, types

    stop_after, names, levers = settings.stop_after, spec.argument_names, spec.levers

    @pipeline_def(enable_conditionals=levers.conditionals)
    def graph():
        data, labels, *args = fn.external_source(source=source, num_outputs=2 + len(names), batch=True,
                                                 batch_info=True)
        arg = dict(zip(names, args))
        if stop_after == "read":
            return data, labels
        window = dict(axis_names="WH", normalized_anchor=False, normalized_shape=False)
        if spec.roi_decode:
            images = fn.decoders.image_slice(data, arg["anchor"], arg["shape"], output_type=types.RGB,
                                             **window, **settings.decoder_arguments())
        else:
            images = fn.decoders.image(data, output_type=types.RGB, **settings.decoder_arguments())
            images = fn.slice(images, arg["anchor"], arg["shape"], **window)
        if stop_after == "decode":
            return images, labels
        size = arg["out"] if levers.progressive else [spec.out_side, spec.out_side]
        images = fn.resize(images, size=size, interp_type=_resize_filter(spec, arg), antialias=True)
        if stop_after == "resize":
            return images, labels
        augment = (lambda resized: levers.apply(resized, arg, size)) if levers.post_crop else None
        return settings.finish(images, labels, augment, mirror=arg["mirror"])

    return settings.build(graph)
