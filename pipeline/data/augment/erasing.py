"""Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation"; timm's `RandomErasing`).

    spec = ErasingSpec.from_config(cfg.data.train)     # None when data.train.erase_prob = 0
    draws = draw_erasing(spec, rng, n)                 # per image, once per epoch, size-free
    anchor, shape = erase_boxes(draws, side)           # per batch: pixels of a side x side crop

With probability `prob` an image gets one rectangle of constant colour: up to 10 attempts of an
area fraction ~ U(area) and an aspect ratio (height / width) log-uniform in `aspect`, the first
that fits inside the image placed uniformly at random; none fits, nothing is erased (timm's
semantics, `timm/data/random_erasing.py`: area [0.02, 1/3], aspect [0.3, 3.3], 10 attempts).

The draws are made in numpy like every other draw of the graph (pipeline/data/dali_graph.py): per
image, from the epoch's generator of (seed, epoch) (the random-resized-crop graph: of (seed,
epoch, step)), as fractions of the side, so they hold at any crop size (progressive resizing);
each batch turns them into pixels for its side. The DALI graph erases with `fn.erase` (per-sample
anchor and shape; an empty shape erases nothing), on the uint8 crop after the flip and the
automatic augmentation, before normalization (on the GPU in production, in DALI's CPU threads
here).

The fill: erasing happens before normalization because a GPU trainer normalizes in torch, after
DALI, and both paths must erase the same pixels. So the fill is a uint8 colour, `fill` (default
the ImageNet mean, 124, 116, 104): with `data.normalize: channel` and ImageNet statistics it
becomes ~0 after normalization, which is timm's `mode="const"` (zeros in the normalized image);
with per-image standardization it is a constant colour standardized with the rest of its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ATTEMPTS = 10  # timm's RandomErasing


@dataclass(frozen=True)
class ErasingSpec:
    """One erased rectangle per image with probability `prob`."""

    prob: float
    area: tuple[float, float]  # fraction of the image's area
    aspect: tuple[float, float]  # height / width, drawn log-uniformly
    fill: tuple[int, int, int]  # R, G, B, 0-255

    @classmethod
    def from_config(cls, aug: Any) -> "ErasingSpec | None":
        if aug.erase_prob == 0:
            return None
        return cls(aug.erase_prob, tuple(aug.erase_area), tuple(aug.erase_aspect), tuple(aug.erase_value))


def draw_erasing(spec: ErasingSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) float32 per image: height and width as fractions of the side (0, 0: not erased), and the
    top and left position as fractions of the free space (0 = top/left, 1 = bottom/right)."""
    erased = rng.random(n) < spec.prob
    area = rng.uniform(spec.area[0], spec.area[1], (n, ATTEMPTS))
    ratio = np.exp(rng.uniform(np.log(spec.aspect[0]), np.log(spec.aspect[1]), (n, ATTEMPTS)))
    height, width = np.sqrt(area * ratio), np.sqrt(area / ratio)
    fits = (height < 1) & (width < 1)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    keep = erased & fits.any(axis=1)
    out = np.zeros((n, 4), np.float32)
    out[:, 0] = np.where(keep, height[rows, first], 0.0)
    out[:, 1] = np.where(keep, width[rows, first], 0.0)
    out[:, 2:] = rng.random((n, 2))
    return out


def erase_boxes(draws: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(anchor (y, x), shape (height, width)) in pixels of a side x side image, float32 (n, 2) each."""
    size = np.minimum(np.round(draws[:, :2] * side), side)  # (height, width); 0 x 0 erases nothing
    anchor = np.floor(draws[:, 2:] * (side - size + 1))  # top in [0, side - height]: timm's randint
    return anchor.astype(np.float32), size.astype(np.float32)


def erase(images: Any, anchor: Any, shape: Any, spec: ErasingSpec) -> Any:
    """The DALI stage: `images` (HWC uint8) with each sample's rectangle filled with `spec.fill`."""
    from nvidia.dali import fn

    return fn.erase(images, anchor=anchor, shape=shape, axis_names="HW", fill_value=list(spec.fill))
