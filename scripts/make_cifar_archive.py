"""Write a CIFAR-10 archive in the official python format from the CIFAR-10 JPEG tree.

    .venv/bin/python scripts/make_cifar_archive.py [../shared/data/cifar10-jpeg.tar.gz] OUT_DIR

For benchmarking the in-memory-arrays path (`data.source=cifar10`) on machines that only have the
JPEG copy: decodes every image (so its pixels carry the JPEG loss, unlike the real archive) and
writes OUT_DIR/cifar-10-python.tar.gz with data_batch_1..5, test_batch and batches.meta laid out
as the official one (rows of 3072 bytes: red, green, blue planes of 32x32). Its batches are not the
official files: read it with `data.source=cifar10 data.root=OUT_DIR data.verify_checksums=false`.
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data.sources.cifar10 import CIFAR10_ARCHIVE, CIFAR10_CLASSES  # noqa: E402


def read_split(tar: tarfile.TarFile, split: str) -> tuple[np.ndarray, list[int]]:
    members = sorted((m for m in tar.getmembers() if m.isfile() and f"/{split}/" in f"/{m.name}"), key=lambda m: m.name)
    rows, labels = [], []
    for m in members:
        cls = Path(m.name).parent.name
        img = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
        rows.append(img.transpose(2, 0, 1).reshape(-1))  # HWC -> planar CHW row
        labels.append(CIFAR10_CLASSES.index(cls))
    return np.stack(rows), labels


def main() -> None:
    args = sys.argv[1:]
    source = Path(args[0]) if len(args) == 2 else Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"
    out_dir = Path(args[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source, "r:*") as tar:
        train_x, train_y = read_split(tar, "train")
        test_x, test_y = read_split(tar, "test")
    order = np.random.default_rng(0).permutation(len(train_y))  # the official batches are mixed
    batches = {f"data_batch_{i + 1}": order[i::5] for i in range(5)}
    with tarfile.open(out_dir / CIFAR10_ARCHIVE, "w:gz") as tar:
        def add(name: str, payload: dict) -> None:
            blob = pickle.dumps(payload)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for name, idx in batches.items():
            add(name, {b"batch_label": name.encode(), b"labels": [train_y[i] for i in idx], b"data": train_x[idx]})
        add("test_batch", {b"batch_label": b"test", b"labels": test_y, b"data": test_x})
        add("batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    print(f"wrote {out_dir / CIFAR10_ARCHIVE}: {len(train_y)} train, {len(test_y)} test images (read it with "
          f"data.source=cifar10 data.root={out_dir} data.verify_checksums=false)")


if __name__ == "__main__":
    main()
