"""Loaders, configs and images the data tests share (tests/unit/test_loader.py, test_images.py, test_sources.py,
tests/e2e/test_data_runs.py).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import (
    write_cifar_archive,
    write_imagefolder,
)

from pipeline.config import load_config
from pipeline.data import build_loader

CPU = torch.device("cpu")


def data_cfg(*overrides: str):
    return load_config(None, list(overrides)).data


def loader(cfg, images, *, train=True, batch=8, rank=0, world=1, seed=0, dtype=torch.float32, state=None):
    return build_loader(cfg, images=images, train=train, batch_size=batch, rank=rank, world_size=world,
                        seed=seed, device=CPU, dtype=dtype, state=state)


def first_batch(ld):
    return next(iter(ld))


def assert_batch(images, labels, side, dtype, batch):
    assert images.shape == (batch, 3, side, side)
    assert images.dtype == dtype
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64 and labels.shape == (batch,)
    assert torch.isfinite(images.float()).all()


SMALL = ("data.train.min_side=34", "data.train.max_side=38", "data.train.crop=32", "data.eval.size=36",
         "data.eval.crop=36")


def sources(tmp_path):
    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 5, "b": 5}, "val": {"a": 2, "b": 3}})
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="mytree")
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    return {
        "sample": ["data.source=sample"],
        "imagefolder_dir": ["data.source=imagefolder", f"data.root={tree}"],
        "imagefolder_tar": ["data.source=imagefolder", f"data.root={archive}"],
        "cifar10": ["data.source=cifar10", f"data.root={tmp_path}", "data.verify_checksums=false"],  # made here
    }


class RunsCode:
    """Unpickling this runs `touch MARKER`: what a crafted batch would do with a plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def folder_cfg(root: Path, *extra: str):
    return data_cfg("data.source=imagefolder", f"data.root={root}", *SMALL, *extra)


HUGE = "20000x20000 pixels (400.0 MP) is over data.max_pixels (89,478,485; raise it to use such images)"


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A 20000 x 20000 PNG of 48 kB (1 bit per pixel, all black, compressed): decoded as RGB, 1.2 GB."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 100_000
    return buf.getvalue()

