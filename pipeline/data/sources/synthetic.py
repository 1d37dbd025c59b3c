"""data.source=synthetic: random images made on the training device, the input ceiling for benchmarks.

There is no data to open: the loader makes the batches (pipeline/data/loader.py `SyntheticLoader`),
and `model.num_classes` must be given (the config refuses `auto`).
"""

from __future__ import annotations

from typing import Any

from pipeline.data.image_set import ImageSet
from pipeline.errors import ConfigError


def open_images(data: Any) -> tuple[ImageSet, ImageSet]:
    raise ConfigError(f"data.source: {data.source!r} has no image set")


def fingerprint(data: Any) -> str:
    """No data, so the fingerprint names the setting: "synthetic:<images>x<crop>px"."""
    return f"synthetic:{data.synthetic_images}x{data.train.crop}px"
