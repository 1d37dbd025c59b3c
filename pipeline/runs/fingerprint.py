"""A cheap, stable name for the data a run trained on: `resolved/data_fingerprint`.

    data_fingerprint(cfg.data)   # "sha1:9c0f..."; the same data gives the same string on any machine

Each source computes its own (`fingerprint` in pipeline/data/sources/<source>.py): files are
listed by name and size rather than read where there are many (an image folder, tar shards), an
archive is hashed whole, and `synthetic` names its setting ("synthetic:<images>x<crop>px").
"""

from __future__ import annotations

from typing import Any

from pipeline.data.sources import fingerprint


def data_fingerprint(data_cfg: Any) -> str:
    """`sha1:<hex>` for the data set `data_cfg` (the `data` section) names; see the module docstring."""
    return fingerprint(data_cfg)
