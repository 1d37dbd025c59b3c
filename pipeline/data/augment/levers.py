"""The training-only augmentation levers of both DALI graphs, together; each is off by default.

    levers = TrainLevers.from_config(cfg.data.train)
    levers.argument_names                     # the per-sample arguments they add to the graph
    draws = levers.draw(rng, n)               # per image, size-free: with the graph's other draws
    args = levers.batch_arguments(rows, n, side)   # one batch's arguments (its rows of the draws) at crop `side`
    images = levers.apply(images, arg, shape) # in the graph, on the uint8 HWC crop

- automatic augmentation (`data.train.auto_augment`, pipeline/data/augment/auto_augment.py),
- random erasing (`data.train.erase_prob`, pipeline/data/augment/erasing.py),
- progressive resizing (`data.train.progressive_start_crop`, pipeline/data/augment/progressive.py): the
  crop side of each batch, from its position in the run, enters the graph as the per-sample
  argument "out" (crop or resize size), so one pipeline serves every size.

Order in the graph (timm's): crop and flip -> automatic augmentation -> erasing -> normalization.
Every choice is drawn in numpy from the generator the graph's other draws come from, after them,
and only for the levers that are on: a run with every lever off draws exactly what it drew before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data.augment.auto_augment import AutoAugmentSpec, apply_auto_augment, draw_auto_augment
from pipeline.data.augment.erasing import ErasingSpec, draw_erasing, erase, erase_boxes
from pipeline.data.augment.progressive import ProgressiveResize

AUTO_AUGMENT_ARGS = ("aa_op", "aa_bin", "aa_sign")
ERASE_ARGS = ("erase_anchor", "erase_shape")


@dataclass(frozen=True)
class TrainLevers:
    """Which levers are on, with their parameters (None: off)."""

    auto_augment: AutoAugmentSpec | None = None
    erasing: ErasingSpec | None = None
    progressive: ProgressiveResize | None = None

    @classmethod
    def from_config(cls, aug: Any) -> "TrainLevers":
        return cls(AutoAugmentSpec.from_config(aug), ErasingSpec.from_config(aug), ProgressiveResize.from_config(aug))

    @property
    def any(self) -> bool:
        return any(x is not None for x in (self.auto_augment, self.erasing, self.progressive))

    @property
    def conditionals(self) -> bool:
        """Whether the graph needs `enable_conditionals=True` (auto_aug's `select` splits the batch)."""
        return self.auto_augment is not None

    @property
    def argument_names(self) -> tuple[str, ...]:
        return ((("out",) if self.progressive else ()) + (AUTO_AUGMENT_ARGS if self.auto_augment else ())
                + (ERASE_ARGS if self.erasing else ()))

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """The per-image draws of `n` images (auto augmentation, then erasing), first axis n."""
        draws: tuple[np.ndarray, ...] = ()
        if self.auto_augment is not None:
            draws += draw_auto_augment(self.auto_augment, rng, n)
        if self.erasing is not None:
            draws += (draw_erasing(self.erasing, rng, n),)
        return draws

    def batch_arguments(self, rows: tuple[np.ndarray, ...], n: int, side: int) -> tuple[np.ndarray, ...]:
        """The graph arguments of a batch of `n` images in `argument_names` order, from its rows of `draw`
        and its crop side."""
        out: tuple[np.ndarray, ...] = ()
        if self.progressive is not None:
            out += (np.full((n, 2), side, np.float32),)
        if self.auto_augment is not None:
            out += tuple(rows[:3])
        if self.erasing is not None:
            out += erase_boxes(rows[-1], side)
        return out

    def apply(self, images: Any, arg: dict[str, Any], shape: Any) -> Any:
        """The graph stage after the crop: automatic augmentation, then erasing (uint8 HWC in and out).

        `shape`: the images' (height, width), numbers or the per-sample "out" argument."""
        if self.auto_augment is not None:
            images = apply_auto_augment(images, self.auto_augment, arg["aa_op"], arg["aa_bin"], arg["aa_sign"],
                                        shape)
        if self.erasing is not None:
            images = erase(images, arg["erase_anchor"], arg["erase_shape"], self.erasing)
        return images

    @property
    def post_crop(self) -> bool:
        """Whether `apply` does anything (it needs the crop as uint8 before normalization)."""
        return self.auto_augment is not None or self.erasing is not None
