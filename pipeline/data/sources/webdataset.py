"""data.source=webdataset: tar shards, `<key>.jpg` + `<key>.cls` per sample (pipeline/data/webdataset.py reads them).

    train, val = load_webdataset("/data/shards", "train", "auto")   # ImageSets; members read by offset at fetch time
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.digests import files_sha1
from pipeline.data.image_set import ImageSet
from pipeline.data.webdataset import (CLASS_MAP, MAX_MEMBER_BYTES, MemberNames, list_webdataset, member_limit,
                                      split_shards)


def open_images(data: Any) -> tuple[ImageSet, ImageSet]:
    """(train, eval) of the shards the `data` section names; members over data.max_member_mb are refused unread."""
    return load_webdataset(data.root, data.train_split, data.eval_split, member_limit(data))


def fingerprint(data: Any) -> str:
    """`sha1:<hex>` over the `name<TAB>size` lines of the train and eval shards, plus the class map's bytes when
    there is one; shards are listed, not read."""
    base, train, val = split_shards(data.root, data.train_split, data.eval_split)
    class_map = base / CLASS_MAP
    return "sha1:" + files_sha1(train + val, [class_map] if class_map.is_file() else [])


def load_webdataset(root: str | Path, train_split: str, eval_split: str,
                    max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """Train and validation splits of tar shards (pipeline/data/webdataset.py): members read by offset."""
    train, val, classes = list_webdataset(root, train_split, eval_split, max_member_bytes)
    return tuple(ImageSet(names=MemberNames(split.members), labels=split.labels, classes=classes,
                          members=split.members) for split in (train, val))
