"""The augmentation tests' small settings and an in-memory image set (tests/unit/test_augment.py,
tests/e2e/test_augment_runs.py).
"""

from __future__ import annotations

import numpy as np
import torch
from conftest import smooth_image

from pipeline.data import ImageSet

CPU = torch.device("cpu")


SMALL = ("data.train.min_side=34", "data.train.max_side=38", "data.train.crop=32", "data.num_threads=1")


def array_set(n: int = 16, seed: int = 5) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = np.stack([smooth_image(rng) for _ in range(n)])
    return ImageSet(names=[f"mem[{i}]" for i in range(n)], labels=np.arange(n) % 10,
                    classes=[str(i) for i in range(10)], arrays=images)

