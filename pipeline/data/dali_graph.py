"""The DALI graph: decode, random-side resize + crop + flip in one ROI resize, per-image standardization.

One function builds the graph for every source and device. On GPU the JPEG decoder is DALI's
`mixed` one and decodes only the crop window; resize, normalization and casting run as GPU
operators. On CPU (`device_id=None`) the same code builds CPU operators.

The reference augmentation is "resize the shorter side to s ~ U{min_side..max_side}, take a
random crop x crop window, flip with p = 0.5". The graph computes that crop's window in source
pixels (side = shorter_side * crop / s, at a uniform random position) and resizes the window
straight to crop x crop: the same distribution of views as resize-then-crop, without producing
the larger intermediate image. The flip is free: a resize whose ROI runs right-to-left mirrors
the image. Evaluation uses the same code with s = size and the window centred.

Standardization is per image over all pixels and channels: (x - mean) / sqrt(var + eps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from pipeline.constants import INTERPOLATIONS

STAGES = ("read", "decode", "resize", "full")  # cumulative graph prefixes, for benchmarking


@dataclass(frozen=True)
class AugmentSpec:
    """What the graph does to each image (sizes in pixels)."""

    out_side: int  # side of the square output
    min_side: int  # resized shorter side drawn from [min_side, max_side]; eval: min = max = size
    max_side: int
    random_crop: bool  # False: centred window (evaluation)
    flip_prob: float
    interpolation: str  # nearest | bilinear | bicubic | random
    std_eps: float
    output_dtype: Literal["float16", "float32"]

    @classmethod
    def for_train(cls, aug: Any, std_eps: float, output_dtype: str) -> "AugmentSpec":
        return cls(aug.crop, aug.min_side, aug.max_side, True, aug.flip_prob, aug.interpolation, std_eps, output_dtype)

    @classmethod
    def for_eval(cls, aug: Any, std_eps: float, output_dtype: str) -> "AugmentSpec":
        return cls(aug.crop, aug.size, aug.size, False, 0.0, aug.interpolation, std_eps, output_dtype)


def _interp_type(spec: AugmentSpec) -> Any:
    from nvidia.dali import fn, types

    table = {"nearest": types.INTERP_NN, "bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}
    if spec.interpolation != "random":
        return table[spec.interpolation]
    # A filter per image, as the reference did: draw an integer code, cast it to the enum type.
    codes = [int(table[name]) for name in INTERPOLATIONS]
    return fn.cast(fn.random.uniform(values=codes, dtype=types.INT32), dtype=types.INTERP_TYPE)


def _crop_window(shape: Any, spec: AugmentSpec) -> tuple[Any, Any]:
    """Relative (start, size) of the crop window, each a (y, x) pair in [0, 1]."""
    from nvidia.dali import fn, types
    import nvidia.dali.math as dmath

    height = fn.cast(shape[0], dtype=types.FLOAT)
    width = fn.cast(shape[1], dtype=types.FLOAT)
    if spec.min_side == spec.max_side:
        side = float(spec.min_side)
    else:
        side = fn.random.uniform(values=[float(s) for s in range(spec.min_side, spec.max_side + 1)])
    window = dmath.min(height, width) * (spec.out_side / side)  # source pixels seen by the crop
    size_y, size_x = window / height, window / width
    if spec.random_crop:
        pos = fn.random.uniform(range=[0.0, 1.0], shape=[2])
        start_y, start_x = pos[0] * (1.0 - size_y), pos[1] * (1.0 - size_x)
    else:
        start_y, start_x = (1.0 - size_y) * 0.5, (1.0 - size_x) * 0.5
    return fn.stack(start_y, start_x), fn.stack(size_y, size_x)


def _resize_roi(start: Any, size: Any, spec: AugmentSpec) -> tuple[Any, Any]:
    """ROI (start, end) for fn.resize; x runs right-to-left (a mirror) for flipped images."""
    from nvidia.dali import fn, types

    if spec.flip_prob <= 0.0:
        return start, start + size
    flip = fn.cast(fn.random.coin_flip(probability=spec.flip_prob), dtype=types.FLOAT)
    x0 = start[1] + flip * size[1]
    x1 = start[1] + size[1] - flip * size[1]
    return fn.stack(start[0], x0), fn.stack(start[0] + size[0], x1)


def build_pipeline(
    source: Callable[[Any], tuple[Any, Any]],
    spec: AugmentSpec,
    *,
    encoded: bool,
    device: Literal["gpu", "cpu"],
    device_id: int | None,
    batch_size: int,
    num_threads: int,
    prefetch_queue_depth: int,
    seed: int,
    checkpoint: bytes | None = None,
    stop_after: str | None = None,
) -> Any:
    """A built DALI pipeline with outputs (images HWC in spec.output_dtype, labels int64).

    `source(batch_info)` returns (samples, labels) for one batch: encoded image bytes when
    `encoded`, else uint8 HWC arrays; it raises StopIteration at the end of an epoch.
    `stop_after` ("read", "decode", "resize") truncates the graph, for the benchmark's per-stage
    breakdown only.
    """
    if stop_after not in (None, *STAGES[:-1]):
        raise ValueError(f"stop_after must be one of {STAGES[:-1]}, got {stop_after!r}")
    from nvidia.dali import fn, pipeline_def, types

    gpu = device == "gpu"

    @pipeline_def(enable_checkpointing=True)
    def graph():
        samples, labels = fn.external_source(
            source=source, num_outputs=2, batch=True, batch_info=True,
            layout=[None if encoded else "HWC", None],
        )
        if stop_after == "read":
            return samples, labels
        shape = fn.peek_image_shape(samples) if encoded else samples.shape()
        start, size = _crop_window(shape, spec)
        if encoded:
            # Decode only the crop window (nvJPEG/libjpeg-turbo ROI decoding where supported).
            images = fn.decoders.image_slice(
                samples, start, size, normalized_anchor=True, normalized_shape=True,
                axis_names="HW", output_type=types.RGB, device="mixed" if gpu else "cpu",
            )
            start, size = fn.stack(0.0, 0.0), fn.stack(1.0, 1.0)  # the window is the whole image now
        else:
            images = samples.gpu() if gpu else samples
        if stop_after == "decode":
            return images, labels
        roi_start, roi_end = _resize_roi(start, size, spec)
        images = fn.resize(
            images, size=[spec.out_side, spec.out_side], roi_start=roi_start, roi_end=roi_end,
            roi_relative=True, interp_type=_interp_type(spec), dtype=types.FLOAT,
        )
        if stop_after == "resize":
            return images, labels
        images = fn.normalize(images, axis_names="HWC", epsilon=spec.std_eps)
        if spec.output_dtype == "float16":
            images = fn.cast(images, dtype=types.FLOAT16)  # fn.normalize cannot emit float16
        return images, labels.gpu() if gpu else labels

    pipe = graph(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
        prefetch_queue_depth=prefetch_queue_depth, checkpoint=checkpoint,
    )
    pipe.build()
    return pipe
