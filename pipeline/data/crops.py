"""Random-resized crops (`data.train.kind: random_resized_crop`): the window, drawn in numpy per image.

    spec = CropSpec.for_train(cfg.data.train)                  # area [0.08, 1], aspect [3/4, 4/3], 224 px
    top, left, height, width = random_resized_crops(heights, widths, spec.area, spec.aspect, rng)

The window follows torchvision's `RandomResizedCrop.get_params` step for step, so the two loaders
draw from the same distribution: up to 10 attempts of an area fraction ~ U(area) and an aspect
ratio (width / height) log-uniform in `aspect`, rounded to whole pixels, the first that fits the
image taken at a uniformly random integer position; if none fits, the centre crop of the whole
image, narrowed to the nearest allowed aspect ratio. (DALI's own `fn.decoders.image_random_crop`
draws the aspect ratio uniformly, from [a, b] or [1/b, 1/a] by a coin flip, and falls back to the
centred square: a different distribution.)

The draws come from a generator seeded by (seed, epoch, step), so a resumed run draws exactly
what an uninterrupted one does (the reference augmentation draws a whole epoch at once from
(seed, epoch): its windows need no image sizes).
They need each image's height and width, which the batch readers parse from its header
(readers.py; EXIF orientation applied, as DALI's decoder applies it). The DALI graph
(dali_graph.py: build_crop_pipeline) decodes only that window (`fn.decoders.image_slice`),
resizes it to out_side x out_side and flips it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pipeline.constants import INTERPOLATIONS
from pipeline.data.augment.levers import TrainLevers
from pipeline.data.augment.progressive import SideSchedule
from pipeline.data.readers import BatchReader

ATTEMPTS = 10  # torchvision's RandomResizedCrop


@dataclass(frozen=True)
class CropSpec:
    """What the random-resized-crop graph does to each training image (sizes in pixels)."""

    out_side: int  # side of the square output
    area: tuple[float, float]  # window area as a fraction of the image's
    aspect: tuple[float, float]  # window width / height
    flip_prob: float
    interpolation: str  # nearest | bilinear | bicubic | random
    roi_decode: bool  # decode only the window; else decode the whole image, then slice
    levers: TrainLevers = TrainLevers()  # automatic augmentation, erasing, progressive resizing

    @classmethod
    def for_train(cls, aug: Any) -> "CropSpec":
        return cls(aug.crop, tuple(aug.area), tuple(aug.aspect), aug.flip_prob, aug.interpolation, aug.roi_decode,
                   TrainLevers.from_config(aug))

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The per-sample arguments after (encoded images, labels), in output order: the window's, then the
        levers' (TrainLevers)."""
        return (("anchor", "shape", "mirror") + (("interp",) if self.interpolation == "random" else ())
                + self.levers.argument_names)


def random_resized_crops(heights: np.ndarray, widths: np.ndarray, area: tuple[float, float],
                         aspect: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(top, left, height, width) int64 per image: torchvision's RandomResizedCrop window, vectorized."""
    n = len(heights)
    h, w = np.asarray(heights, np.int64)[:, None], np.asarray(widths, np.int64)[:, None]
    target = (h * w) * rng.uniform(area[0], area[1], (n, ATTEMPTS))
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]), (n, ATTEMPTS)))
    cand_w = np.round(np.sqrt(target * ratio)).astype(np.int64)  # round half to even, as Python's round()
    cand_h = np.round(np.sqrt(target / ratio)).astype(np.int64)
    fits = (cand_w > 0) & (cand_w <= w) & (cand_h > 0) & (cand_h <= h)
    first = fits.argmax(axis=1)  # the first attempt that fits
    rows = np.arange(n)
    crop_h, crop_w = cand_h[rows, first], cand_w[rows, first]
    h, w = h[:, 0], w[:, 0]
    top = np.floor(rng.random(n) * (h - crop_h + 1)).astype(np.int64)
    left = np.floor(rng.random(n) * (w - crop_w + 1)).astype(np.int64)
    # No attempt fits: the centre crop, narrowed to the aspect range.
    missed = ~fits.any(axis=1)
    if missed.any():
        hm, wm = h[missed], w[missed]
        in_ratio = wm / hm
        low, high = min(aspect), max(aspect)
        fw = np.where(in_ratio > high, np.round(hm * high), wm).astype(np.int64)
        fh = np.where(in_ratio < low, np.round(wm / low), hm).astype(np.int64)
        crop_h[missed], crop_w[missed] = fh, fw
        top[missed], left[missed] = (hm - fh) // 2, (wm - fw) // 2
    return top, left, crop_h, crop_w


class CropSource:
    """Batch callback of the random-resized-crop graph: encoded images, labels and per-sample windows.

    One callback gives everything, because the window needs the image's size, which comes with
    its bytes. Batch `step` of an epoch depends only on (seed, epoch, step) (and, with progressive
    resizing, the run's planned steps: `sides`).
    """

    def __init__(self, labels: np.ndarray, plan: Any, spec: CropSpec, reader: BatchReader, seed: int,
                 position: Callable[[Any], tuple[int, int]], history: int, sides: SideSchedule | None = None) -> None:
        self.labels, self.plan, self.spec, self.reader = labels, plan, spec, reader
        self.seed, self.position = seed, position  # DALI's batch number -> (epoch, step): dali_loader.Position
        self.sides = sides or SideSchedule(None, spec.out_side, len(plan))  # the crop side of each batch
        self.recent: deque[np.ndarray] = deque(maxlen=history)  # index batches, to name a bad file

    def __call__(self, info: Any) -> tuple[Any, ...]:
        epoch, step = self.position(info)
        idx = self.plan.indices(epoch, step)
        self.recent.append(idx)
        batch = self.reader.batch(epoch, step)
        rng = np.random.default_rng([self.seed, epoch, step])
        spec = self.spec
        heights, widths = batch.sizes[:, 0], batch.sizes[:, 1]
        top, left, height, width = random_resized_crops(heights, widths, spec.area, spec.aspect, rng)
        anchor = np.stack([left, top], axis=1).astype(np.float32)  # (x, y): the graph slices on axes "WH"
        shape = np.stack([width, height], axis=1).astype(np.float32)
        mirror = (rng.random(len(idx)) < spec.flip_prob).astype(np.int32)
        outputs = (batch.data, self.labels[idx], anchor, shape, mirror)
        if spec.interpolation == "random":
            outputs += (rng.integers(0, len(INTERPOLATIONS), len(idx)).astype(np.int32),)
        if spec.levers.any:  # drawn after the rest: with every lever off, the draws are what they were
            drawn = spec.levers.draw(rng, len(idx))
            outputs += spec.levers.batch_arguments(drawn, len(idx), self.sides(epoch, step))
        return outputs
