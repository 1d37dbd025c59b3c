"""data.source=cifar10: the official python-format archive in data.root, decoded once to uint8 arrays.

    train, test = load_cifar10("data/cifar10", download=True)   # (N, 32, 32, 3) uint8 ImageSets

The archive is downloaded when asked (pipeline/data/download.py: once, its MD5 checked) or placed
by hand; either way each batch is checked and unpickled so that it cannot run code
(pipeline/data/cifar10.py).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.cifar10 import read_batches
from pipeline.data.digests import file_sha1
from pipeline.data.download import download_once
from pipeline.data.image_set import ImageSet
from pipeline.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Read at call time, so a test (or a mirror) can point them elsewhere before calling load_cifar10.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def open_images(data: Any) -> tuple[ImageSet, ImageSet]:
    """(train, test) of the archive the `data` section names, downloaded first with data.download=true."""
    return load_cifar10(data.root, data.download, data.verify_checksums)


def fingerprint(data: Any) -> str:
    """`sha1:<hex>` of the archive's bytes (170 MB in 0.16 s on the development machine)."""
    root = Path(data.root).expanduser()
    return "sha1:" + file_sha1(root if root.suffix == ".gz" else root / CIFAR10_ARCHIVE)


def load_cifar10(root: str | Path, download: bool = False, verify_checksums: bool = True) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from the official python-format archive, decoded once to uint8 arrays (N, 32, 32, 3).

    Each batch is checked against the official MD5 (unless `verify_checksums` is false) and unpickled
    with an unpickler that cannot run code (pipeline/data/cifar10.py), a downloaded archive too."""
    root = Path(root).expanduser()
    archive = root / CIFAR10_ARCHIVE if root.suffix != ".gz" else root
    if not archive.is_file():
        if not download:
            raise DataError(f"data.root: {archive} not found (set data.download=true to fetch it)")
        download_once(CIFAR10_URL, archive, CIFAR10_MD5)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            train_x, train_y = read_batches(tar, [f"data_batch_{i}" for i in range(1, 6)], str(archive),
                                            verify_checksums)
            test_x, test_y = read_batches(tar, ["test_batch"], str(archive), verify_checksums)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: cannot read the archive ({' '.join(str(exc).split())})") from None

    def as_set(x: np.ndarray, y: np.ndarray, split: str) -> ImageSet:
        names = [f"{archive}:{split}[{i}]" for i in range(len(y))]
        return ImageSet(names=names, labels=y, classes=list(CIFAR10_CLASSES), arrays=x)

    return as_set(train_x, train_y, "train"), as_set(test_x, test_y, "test")

