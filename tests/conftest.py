"""Shared fixtures: tiny data sets written by the tests themselves (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from pipeline.constants import REPO_ROOT as REPO  # noqa: E402

# Fixtures the unit and e2e tests of one topic share (tests/support/; tests/ is on sys.path as this file's folder).
pytest_plugins = ["support.data", "support.deploy", "support.download", "support.resume", "support.shards"]
SHARED_CIFAR_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# Keep W&B and the console quiet and offline in every test process.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")

# Hypothesis, for the bad-input properties (tests/test_fuzz_*.py; tests/fuzz.py says how many cases each runs).
# ci (the default): the same cases every run (derandomized: a fixed seed per property), no example
# database, no deadline (a shared machine's timing is not the property). explore
# (HYPOTHESIS_PROFILE=explore): tests/fuzz.py's EXPLORE_FACTOR times as many cases, new ones every run, and
# the failures found kept in .hypothesis/ (git-ignored) and replayed first next time.
_FUZZ_SETTINGS = dict(deadline=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, database=None, **_FUZZ_SETTINGS)
settings.register_profile("explore", derandomize=False, **_FUZZ_SETTINGS,
                          database=DirectoryBasedExampleDatabase(str(REPO / ".hypothesis" / "examples")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


TIERS = ("unit", "e2e", "fuzz")  # tests/<tier>/: a test's folder is its tier, and its marker (`pytest -m unit`)


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.path)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_data = pytest.mark.skip(reason=f"needs {SHARED_CIFAR_JPEG} (absent on this machine)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "cifar10_jpeg" in item.keywords and not SHARED_CIFAR_JPEG.is_file():
            item.add_marker(skip_data)


def encode_image(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def smooth_image(rng: np.random.Generator, side: int = 32) -> np.ndarray:
    """A low-frequency colour image (uint8 HWC): small sub-pixel shifts change it only a little."""
    y, x = np.mgrid[0:side, 0:side] / side
    channels = []
    for _ in range(3):
        a, b, c, d = rng.uniform(0.5, 2.5, 4)
        channels.append(np.sin(a * np.pi * x + b) * np.cos(c * np.pi * y + d))
    img = np.stack(channels, -1)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 200 + 20).astype(np.uint8)


def write_imagefolder(root: Path, splits: dict[str, dict[str, int]], side: int = 24, seed: int = 0,
                      fmt: str = "JPEG") -> Path:
    """root/<split>/<class>/<i>.jpg with `count` random images per class."""
    rng = np.random.default_rng(seed)
    ext = ".png" if fmt == "PNG" else ".jpg"
    for split, classes in splits.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i:03d}{ext}").write_bytes(encode_image(smooth_image(rng, side), fmt))
    return root


def write_photo_folder(root: Path, splits: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """root/<split>/<class>/<i>.jpg: small JPEGs of random sizes and aspect ratios (36-96 px a side),
    each class a different hue so that labels can be checked from pixels."""
    rng = np.random.default_rng(seed)
    for split, classes in splits.items():
        for c, (cls, count) in enumerate(classes.items()):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (int(v) for v in rng.integers(36, 97, 2))
                img = smooth_image(rng, max(h, w))[:h, :w] // 2
                img[..., c % 3] += 100  # the class's channel dominates
                (folder / f"{i:03d}.jpg").write_bytes(encode_image(np.ascontiguousarray(img)))
    return root


def write_cifar_archive(path: Path, n_train_per_batch: int = 6, n_test: int = 10, seed: int = 0,
                        replace: dict[str, bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A tiny archive in the official python format; returns (first train batch's images HWC, labels).

    Its batches are not the official files: read it with data.verify_checksums=false, or with
    `official_checksums`. `replace`: member name -> the bytes to store instead of that batch."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        first = None

        def add(name: str, n: int):
            nonlocal first
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            if first is None:
                first = (data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels))
            blob = pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": data})
            blob = (replace or {}).get(name, blob)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for i in range(1, 6):
            add(f"data_batch_{i}", n_train_per_batch)
        add("test_batch", n_test)
    return first


def official_checksums(monkeypatch, archive: Path) -> None:
    """Take `archive`'s batches as the official ones for this test: their MD5s replace the official list."""
    from pipeline.data import cifar10

    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in cifar10.OFFICIAL_MD5:
                monkeypatch.setitem(cifar10.OFFICIAL_MD5, name,
                                    hashlib.md5(tar.extractfile(member).read()).hexdigest())


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    """3 classes; train 7 + 6 + 8 = 21 images (odd), val 3 + 4 + 4 = 11."""
    return write_imagefolder(
        tmp_path / "tree",
        {"train": {"ant": 7, "bee": 6, "cat": 8}, "val": {"ant": 3, "bee": 4, "cat": 4}},
    )
