"""A cheap, stable name for the data a run trained on: `resolved/data_fingerprint`.

    data_fingerprint(cfg.data)   # "sha1:9c0f..."; the same data gives the same string on any machine

- An image-folder directory: SHA-1 over the sorted `<split>/<class>/<file>` paths of the train and
  eval splits with each file's size (the class folder in the path is the label). Files are listed,
  not read: one stat per file. On the development machine 60,000 files take 0.5 s with the
  directories cached and 1.3 s cold. A file rewritten in place with the same size keeps the
  fingerprint; renaming, adding, removing, resizing a file or moving it to another class changes it.
- An archive (the shipped sample, a .tar/.tar.gz image folder, CIFAR-10's python archive): SHA-1
  of its bytes (the sample's 1.9 MB in 5 ms; 170 MB, CIFAR-10's size, in 0.16 s).
- Tar shards (`webdataset`): SHA-1 over the `name<TAB>size` lines of the train and eval shards,
  plus the class map's bytes when there is one; shards are listed, not read.
- A flat validation folder (`data.eval_labels`): its files' names and sizes, plus the bytes of
  the labels file (and of the label map).
- `synthetic`: no data, so the fingerprint names the setting: "synthetic:<images>x<crop>px".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pipeline.constants import SAMPLE_ARCHIVE
from pipeline.data.sources import CIFAR10_ARCHIVE, resolve_eval_split
from pipeline.data.webdataset import CLASS_MAP, split_shards

CHUNK = 1 << 20


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha1(root: Path, splits: list[str]) -> str:
    """SHA-1 of `split/class/file<TAB>size` lines for the non-hidden files of each split, sorted."""
    lines = []
    for split in splits:
        with os.scandir(root / split) as classes:
            class_dirs = [c for c in classes if c.is_dir() and not c.name.startswith(".")]
        for class_dir in class_dirs:
            with os.scandir(class_dir.path) as files:
                for entry in files:
                    if not entry.name.startswith(".") and entry.is_file():
                        lines.append(f"{split}/{class_dir.name}/{entry.name}\t{entry.stat().st_size}\n")
    digest = hashlib.sha1()
    for line in sorted(lines):
        digest.update(line.encode())
    return digest.hexdigest()


def files_sha1(paths: list[Path], extra: list[Path]) -> str:
    """SHA-1 of `name<TAB>size` per file of `paths`, then the bytes of each file in `extra`."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(f"{path.name}\t{path.stat().st_size}\n".encode())
    for path in extra:
        digest.update(file_sha1(path).encode())
    return digest.hexdigest()


def data_fingerprint(data_cfg: Any) -> str:
    """`sha1:<hex>` for the data set `data_cfg` (the `data` section) names; see the module docstring."""
    if data_cfg.source == "synthetic":
        return f"synthetic:{data_cfg.synthetic_images}x{data_cfg.train.crop}px"
    if data_cfg.source == "sample":
        return "sha1:" + file_sha1(SAMPLE_ARCHIVE)
    root = Path(data_cfg.root).expanduser()
    if data_cfg.source == "cifar10":
        return "sha1:" + file_sha1(root if root.suffix == ".gz" else root / CIFAR10_ARCHIVE)
    if data_cfg.source == "webdataset":
        base, train, val = split_shards(root, data_cfg.train_split, data_cfg.eval_split)
        class_map = base / CLASS_MAP
        return "sha1:" + files_sha1(train + val, [class_map] if class_map.is_file() else [])
    if root.is_file():  # an image folder packed in an archive
        return "sha1:" + file_sha1(root)
    subdirs = [p.name for p in root.iterdir() if p.is_dir()]
    eval_split = resolve_eval_split(subdirs, data_cfg.eval_split, str(root))
    if data_cfg.eval_labels:  # a flat validation folder: its files, the labels file and the map
        flat = sorted(p for p in (root / eval_split).iterdir() if p.is_file() and not p.name.startswith("."))
        labels = [Path(f).expanduser() for f in (data_cfg.eval_labels, data_cfg.eval_label_map) if f]
        return "sha1:" + hashlib.sha1((tree_sha1(root, [data_cfg.train_split]) + files_sha1(flat, labels)).encode()
                                      ).hexdigest()
    return "sha1:" + tree_sha1(root, [data_cfg.train_split, eval_split])
