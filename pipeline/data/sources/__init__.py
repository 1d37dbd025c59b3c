"""Where images come from: one module per `data.source`, found by its name.

    train, val = open_images(cfg.data)     # (train, eval) ImageSets of data.source (not synthetic)
    fingerprint(cfg.data)                  # "sha1:9c0f...": the same data gives the same string on any machine

Each source is a row of pipeline/sources.py (what it reads, what data.root is, whether it decodes
once: what the config needs) and the module `pipeline/data/sources/<name>.py` here, with two
functions of the config's `data` section:

    open_images(data) -> (train, eval)     # ImageSets (pipeline/data/image_set.py)
    fingerprint(data) -> str               # a cheap, stable name for the data: resolved/data_fingerprint

    sample.py        the CIFAR-10 subset shipped in data/
    imagefolder.py   a class-per-folder tree, on disk or in an archive; ImageNet's flat validation folder
    cifar10.py       the official python archive, downloaded once when asked
    webdataset.py    tar shards (their format: pipeline/data/webdataset.py)
    synthetic.py     no images: the loader makes them on the device

A new source is a new module here and a new row there (pipeline/sources.py says how; tests/unit/test_sources.py
checks that every row has its module and every module its row).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from pipeline.data.image_set import ImageSet
from pipeline.data.webdataset import MAX_MEMBER_BYTES
from pipeline.errors import ConfigError
from pipeline.sources import SOURCES

__all__ = ["ImageSet", "fingerprint", "open_images", "open_source", "source_module"]


def source_module(name: str) -> ModuleType:
    """The module of data.source `name`: pipeline/data/sources/<name>.py."""
    if name not in SOURCES:
        raise ConfigError(f"data.source: {name!r} has no image set")
    return importlib.import_module(f"{__name__}.{name}")


def open_images(data: Any) -> tuple[ImageSet, ImageSet]:
    """(train, eval) image sets of `data.source` (`data`: the config's data section); archive and shard members
    over data.max_member_mb are refused before they are read."""
    return source_module(data.source).open_images(data)


def fingerprint(data: Any) -> str:
    """The fingerprint of the data `data.source` and its keys name (resolved/data_fingerprint)."""
    return source_module(data.source).fingerprint(data)


def open_source(source: str, root: str = "", train_split: str = "train", eval_split: str = "auto",
                download: bool = False, eval_labels: str = "", eval_label_map: str = "",
                verify_checksums: bool = True, max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """open_images for the values of a saved config's data keys (a checkpoint's), the other keys at their
    defaults."""
    from pipeline.config import DataConfig  # only here: the data layer takes its sections duck-typed

    data = DataConfig.model_construct(source=source, root=root, train_split=train_split, eval_split=eval_split,
                                      download=download, eval_labels=eval_labels, eval_label_map=eval_label_map,
                                      verify_checksums=verify_checksums, max_member_mb=max_member_bytes / 2**20)
    return open_images(data)
