"""DALI input pipelines on the CPU: shapes, statistics, augmentation, sharding, sources, bad input."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import (REPO, SHARED_CIFAR_JPEG, encode_image, official_checksums, smooth_image, write_cifar_archive,
                      write_imagefolder)
from pipeline.config import load_config
from pipeline.constants import SAMPLE_ARCHIVE
from pipeline.data import BadImageError, DataError, ImageSet, build_loader, load_image_sets
from pipeline.data.dali_loader import standardize as standardize_batch
from pipeline.data.sources.cifar10 import load_cifar10
from pipeline.errors import ConfigError

CPU = torch.device("cpu")


def data_cfg(*overrides: str):
    return load_config(None, list(overrides)).data


def loader(cfg, images, *, train=True, batch=8, rank=0, world=1, seed=0, dtype=torch.float32, state=None):
    return build_loader(cfg, images=images, train=train, batch_size=batch, rank=rank, world_size=world,
                        seed=seed, device=CPU, dtype=dtype, state=state)


def array_set(images: np.ndarray, labels=None) -> ImageSet:
    n = len(images)
    labels = np.arange(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return ImageSet(names=[f"mem[{i}]" for i in range(n)], labels=labels, classes=[str(i) for i in range(n)],
                    arrays=np.ascontiguousarray(images))


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)


def reference_resize(img: np.ndarray, side: int) -> torch.Tensor:
    """torch's bilinear resize (pixel centres, no antialiasing) of an HWC uint8 image -> CHW float."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[0]


def first_batch(ld):
    return next(iter(ld))


# ------------------------------------------------------------------------ shapes, dtype, layout


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


@pytest.mark.parametrize("name", ["sample", "imagefolder_dir", "imagefolder_tar", "cifar10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_batches_of_every_source(tmp_path, name, dtype):
    cfg = data_cfg(*sources(tmp_path)[name], *SMALL)
    train, val = load_image_sets(cfg)
    images, labels = first_batch(loader(cfg, train, batch=4, dtype=dtype))
    assert_batch(images, labels, 32, dtype, 4)
    images, labels = first_batch(loader(cfg, val, train=False, batch=4, dtype=dtype))
    assert_batch(images, labels, 36, dtype, 4)


def test_synthetic_source_batches():
    cfg = data_cfg("data.source=synthetic", "data.synthetic_images=64", *SMALL)
    ld = build_loader(cfg, images=None, train=True, batch_size=8, rank=0, world_size=2, seed=0, device=CPU,
                      dtype=torch.bfloat16)
    assert len(ld) == 64 // 16
    batches = list(ld)
    assert len(batches) == 4
    assert_batch(*batches[0], 32, torch.bfloat16, 8)


def test_hand_off_standardizes_uint8_nhwc_into_channels_last_training_dtype():
    nhwc = torch.randint(0, 256, (4, 7, 5, 3), dtype=torch.uint8)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        images = standardize_batch(nhwc, 1e-5, dtype)
        assert images.shape == (4, 3, 7, 5) and images.dtype == dtype
        assert images.is_contiguous(memory_format=torch.channels_last)
        expected = torch.stack([standardize(img.permute(2, 0, 1).float()) for img in nhwc])
        assert torch.allclose(images.float(), expected, atol=1e-2 if dtype != torch.float32 else 1e-5)


# -------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_per_image_standardization(dtype):
    rng = np.random.default_rng(0)
    imgs = np.stack([smooth_image(rng) for _ in range(16)])
    imgs[3] = 7  # a constant image: zero variance must not produce NaN
    cfg = data_cfg()  # the reference sizes: 124..132 -> 122
    x, y = first_batch(loader(cfg, array_set(imgs), batch=16, dtype=dtype))
    x = x.float()
    means, stds = x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3), unbiased=False)
    assert torch.isfinite(x).all()
    assert means.abs().max() < 1e-2
    constant = y == 3  # labels are the sample indices
    assert torch.allclose(stds[~constant], torch.ones(15), atol=1e-2)
    assert x[constant].abs().max() < 1e-2  # resize rounding only, amplified by 1/sqrt(eps)


def test_flip_happens_in_about_half_the_images():
    rng = np.random.default_rng(1)
    img = smooth_image(rng)
    img[:, :8] = 255  # clearly asymmetric: a bright band on the left
    imgs = np.repeat(img[None], 200, axis=0)
    fixed = ("data.train.min_side=32", "data.train.max_side=32", "data.train.crop=32")  # no crop: window = image
    unflipped, _ = first_batch(loader(data_cfg(*fixed, "data.train.flip_prob=0"), array_set(imgs[:4]), batch=4))
    ref = unflipped[0]
    out, _ = first_batch(loader(data_cfg(*fixed), array_set(imgs), batch=200))
    same = (out - ref).abs().flatten(1).amax(1) < 1e-4
    mirrored = (out - ref.flip(-1)).abs().flatten(1).amax(1) < 1e-4
    assert bool((same ^ mirrored).all()), "every image is either the unflipped crop or its mirror"
    assert 70 <= int(mirrored.sum()) <= 130  # Binomial(200, 0.5): 5.6 sigma either side


def best_window(out: torch.Tensor, img: np.ndarray, crop: int, sides: range) -> tuple[float, int, int, int]:
    """(error, side, top, left) of the resize-then-crop view that best explains `out`."""
    best = (float("inf"), 0, 0, 0)
    for side in sides:
        resized = reference_resize(img, side)
        for top in range(side - crop + 1):
            for left in range(side - crop + 1):
                view = standardize(resized[:, top:top + crop, left:left + crop])
                err = (view - out).pow(2).mean().item()
                best = min(best, (err, side, top, left))
    return best


def test_random_resize_crop_matches_resize_then_crop_and_varies():
    rng = np.random.default_rng(2)
    img = smooth_image(rng)
    cfg = data_cfg("data.train.min_side=26", "data.train.max_side=30", "data.train.crop=24",
                   "data.train.flip_prob=0")
    out, _ = first_batch(loader(cfg, array_set(np.repeat(img[None], 24, axis=0)), batch=24))
    fits = [best_window(o, img, 24, range(26, 31)) for o in out]
    # Each output is a resize-then-crop view up to the sub-pixel crop offset the ROI resize allows.
    assert max(f[0] for f in fits) < 0.02, fits
    assert len({f[1] for f in fits}) >= 3, "resize sides do not vary across the batch"
    assert len({(f[2], f[3]) for f in fits}) >= 6, "crop positions do not vary across the batch"


def test_eval_is_deterministic_and_matches_a_reference_resize():
    rng = np.random.default_rng(3)
    imgs = np.stack([smooth_image(rng) for _ in range(6)])
    cfg = data_cfg()  # eval: 32 -> 128 x 128
    ld = loader(cfg, array_set(imgs), train=False, batch=4)
    first = torch.cat([x for x, _ in ld])
    second = torch.cat([x for x, _ in ld])
    assert torch.equal(first, second)
    for out, img in zip(first, imgs):
        ref = standardize(reference_resize(img, 128))
        assert (out - ref).abs().max() < 0.05


def test_random_interpolation_option_runs():
    rng = np.random.default_rng(4)
    imgs = np.stack([smooth_image(rng) for _ in range(8)])
    x, _ = first_batch(loader(data_cfg("data.train.interpolation=random"), array_set(imgs)))
    assert x.shape == (8, 3, 122, 122) and torch.isfinite(x).all()


def test_labels_match_the_folders(tmp_path):
    # Each class is one pure colour, so a batch's dominant channel tells its folder.
    colours = {"0red": 0, "1green": 1, "2blue": 2}
    for cls, channel in colours.items():
        folder = tmp_path / "t" / "train" / cls
        folder.mkdir(parents=True)
        for i in range(5):
            img = np.full((20, 20, 3), 20, np.uint8)
            img[..., channel] = 230
            img[i, i] = 0  # variety
            (folder / f"{i}.png").write_bytes(encode_image(img, "PNG"))
    shutil.copytree(tmp_path / "t" / "train", tmp_path / "t" / "val")
    cfg = data_cfg("data.source=imagefolder", f"data.root={tmp_path / 't'}", *SMALL)
    train, _ = load_image_sets(cfg)
    assert train.classes == ["0red", "1green", "2blue"]
    seen = 0
    for x, y in loader(cfg, train, batch=3):
        dominant = x.float().mean(dim=(2, 3)).argmax(1)
        assert torch.equal(dominant, y)
        seen += len(y)
    assert seen == 15


# -------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world", [1, 2, 3])
def test_dali_eval_shards_disjoint_and_complete(world):
    imgs = np.zeros((21, 32, 32, 3), np.uint8)
    cfg = data_cfg(*SMALL)
    seen = []
    for rank in range(world):
        for _, y in loader(cfg, array_set(imgs), train=False, batch=4, rank=rank, world=world):
            seen += y.tolist()
    assert sorted(seen) == list(range(21))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_dali_train_equal_steps_no_repeats(world):
    imgs = np.zeros((21, 32, 32, 3), np.uint8)
    cfg = data_cfg(*SMALL)
    loaders = [loader(cfg, array_set(imgs), batch=2, rank=r, world=world) for r in range(world)]
    assert len({len(ld) for ld in loaders}) == 1
    for _epoch in range(2):
        labels = [y.tolist() for ld in loaders for _, y in ld]
        assert all(len(b) == 2 for b in labels)
        assert len(labels) == world * len(loaders[0])
        flat = sum(labels, [])
        assert len(flat) == len(set(flat))


def test_epochs_reshuffle_deterministically_and_ranks_augment_differently():
    rng = np.random.default_rng(5)
    imgs = np.stack([smooth_image(rng) for _ in range(16)])
    cfg = data_cfg(*SMALL)
    a, b = loader(cfg, array_set(imgs), batch=4, seed=7), loader(cfg, array_set(imgs), batch=4, seed=7)
    a0, b0 = [y.tolist() for _, y in a], [y.tolist() for _, y in b]
    a1 = [y.tolist() for _, y in a]
    assert a0 == b0 and a0 != a1
    # Same sample order (data seed), different augmentation: rank 1 draws from seed + 1.
    x_r0 = first_batch(loader(cfg, array_set(imgs[:4]), batch=4, world=1, seed=0))[0]
    x_r1 = first_batch(loader(cfg, array_set(imgs[:4]), batch=4, world=1, seed=1))[0]
    assert not torch.equal(x_r0, x_r1)


@pytest.mark.parametrize("consumed", [3, 10], ids=["mid-epoch", "after-last-batch"])
def test_loader_state_resumes_exactly(consumed):
    """State taken after `consumed` of an epoch's 10 batches restores the rest, then the next epoch."""
    rng = np.random.default_rng(6)
    imgs = np.stack([smooth_image(rng) for _ in range(40)])
    cfg = data_cfg(*SMALL)
    ref = loader(cfg, array_set(imgs), batch=4, seed=3)
    assert len(ref) == 10
    it = iter(ref)
    for _ in range(consumed):
        next(it)
    state = ref.state_dict()  # after the last batch: a preemption before the epoch's reset
    rest = list(it) + list(ref)  # the rest of epoch 0, then epoch 1
    resumed = loader(cfg, array_set(imgs), batch=4, seed=3, state=state)
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == 20 - consumed
    for (x1, y1), (x2, y2) in zip(rest, again):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)


# -------------------------------------------------------------------------------- sources


def test_every_source_is_a_row_and_a_module_that_opens_and_fingerprints_its_data(tiny_tree):
    """A data source is one row of pipeline/sources.py and one module of pipeline/data/sources/ named after it,
    with open_images and fingerprint; nothing else dispatches on the name."""
    import pkgutil

    from pipeline.data import sources
    from pipeline.sources import SOURCES

    assert {m.name for m in pkgutil.iter_modules(sources.__path__)} == set(SOURCES)
    for name in SOURCES:
        module = sources.source_module(name)
        assert callable(module.open_images) and callable(module.fingerprint), name
    folder = data_cfg("data.source=imagefolder", f"data.root={tiny_tree}")
    train, val = sources.open_images(folder)
    assert (len(train), len(val), train.classes) == (21, 11, ["ant", "bee", "cat"])
    assert sources.fingerprint(folder).startswith("sha1:")
    assert sources.fingerprint(data_cfg("data.source=synthetic")) == "synthetic:50000x122px"
    with pytest.raises(ConfigError, match=r"^data\.source: 'synthetic' has no image set$"):
        sources.open_images(data_cfg("data.source=synthetic"))
    with pytest.raises(ConfigError, match=r"^data\.source: 'nothing' has no image set$"):
        sources.open_source("nothing")


def test_cifar10_archive_is_read_in_the_official_layout(tmp_path, monkeypatch):
    images, labels = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", n_train_per_batch=6, n_test=10)
    official_checksums(monkeypatch, tmp_path / "cifar-10-python.tar.gz")  # its batches pass the MD5 check
    train, val = load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}"))
    assert (len(train), len(val)) == (30, 10)
    assert train.arrays.shape == (30, 32, 32, 3) and train.arrays.dtype == np.uint8
    assert np.array_equal(train.arrays[:6], images) and np.array_equal(train.labels[:6], labels)
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"


def test_the_cifar_jpeg_writer_makes_the_tree_the_checks_read(tmp_path, monkeypatch):
    """scripts/make_cifar_jpeg.py: what a clone runs for bench/cpu_check.sh's data (here from a tiny archive)."""
    import runpy

    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    official_checksums(monkeypatch, tmp_path / "cifar-10-python.tar.gz")  # the script reads the official archive
    writer = runpy.run_path(str(REPO / "scripts" / "make_cifar_jpeg.py"))
    assert writer["main"]([str(tmp_path), str(tmp_path / "jpeg.tar.gz")]) == 0
    with tarfile.open(tmp_path / "jpeg.tar.gz") as tar:
        names = tar.getnames()
    assert len(names) == 40 and all(re.fullmatch(r"cifar10/(train|test)/[a-z]+/\d{4}\.jpg", n) for n in names)
    train, test = load_image_sets(data_cfg("data.source=imagefolder", f"data.root={tmp_path / 'jpeg.tar.gz'}",
                                           "data.eval_split=test"))
    assert (len(train), len(test)) == (30, 10)
    arrays = load_cifar10(tmp_path)  # every image under its class, as the archive labels it (checksums as above)
    for jpeg, source in zip((train, test), arrays):
        assert Counter(jpeg.classes[i] for i in jpeg.labels) == Counter(source.classes[i] for i in source.labels)


class RunsCode:
    """Unpickling this runs `touch MARKER`: what a crafted batch would do with a plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar10_batch_cannot_run_code_checked_or_not(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    crafted = pickle.dumps({b"labels": [1], b"data": RunsCode(marker)}, protocol=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive)
    official_checksums(monkeypatch, archive)  # the genuine batches: the crafted one below is not among them
    write_cifar_archive(archive, replace={"data_batch_3": crafted})
    member = f"{archive}:cifar-10-batches-py/data_batch_3"
    with pytest.raises(DataError) as info:  # the checksum stops it before any unpickling
        load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}"))
    assert str(info.value).startswith(f"{member}: MD5 {hashlib.md5(crafted).hexdigest()} differs from the official "
                                      "file's (")
    assert str(info.value).endswith("so it was not read: replace it with the official archive (data.download=true "
                                    "fetches it), or for an archive you made yourself (scripts/make_cifar_archive.py) "
                                    "set data.verify_checksums=false")
    with pytest.raises(DataError) as info:  # unchecked, the unpickler refuses what the format never holds
        load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}", "data.verify_checksums=false"))
    assert str(info.value) == (f"{member}: refusing to unpickle it: it asks for {os.name}.system, which a CIFAR-10 "
                               "batch never holds (a damaged or tampered file)")
    assert not marker.exists()


def test_the_cifar10_command_line_refuses_a_crafted_archive_without_running_it(tmp_path):
    """`--resolve` with model.num_classes=auto lists the data: on the earlier code that alone ran the crafted batch."""
    marker = tmp_path / "ran"
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz",
                        replace={"test_batch": pickle.dumps({b"data": RunsCode(marker), b"labels": []})})
    for extra in ([], ["data.verify_checksums=false"]):
        proc = subprocess.run([sys.executable, "train_dist.py", "data.source=cifar10", f"data.root={tmp_path}", *extra,
                               "model.num_classes=auto", "--resolve"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/data_batch_1: MD5 "
                               if not extra else f"error: {tmp_path / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/"
                               "test_batch: refusing to unpickle it: it asks for "), line
    assert not marker.exists()


@pytest.mark.parametrize("batch, words", [
    ({b"data": np.zeros((6, 100), np.uint8), b"labels": [0] * 6}, "data is uint8 (6, 100), expected uint8 rows of 3072"),
    ({b"data": np.zeros((6, 3072), np.float32), b"labels": [0] * 6}, "data is float32 (6, 3072), expected uint8"),
    ({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5}, "5 labels for 6 images"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, "labels 3..10 (expected one per image, 0..9)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}, "labels must be a list of integers"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "expected a dict with b'data' and b'labels'; got 'data')"),
    ({b"data": np.array([None, 1], dtype=object), b"labels": [0, 0]}, "an array of Python objects (object)"),
])
def test_a_cifar10_batch_of_another_shape_is_one_line_naming_it(tmp_path, batch, words):
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", replace={"data_batch_2": pickle.dumps(batch)})
    with pytest.raises(DataError) as info:
        load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}", "data.verify_checksums=false"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/data_batch_2: ")
    assert words in message and "\n" not in message


def test_cifar10_batches_pickled_as_the_official_files_and_as_numpy_writes_them_load(tmp_path):
    """The official batches are protocol-2 pickles (numpy's _reconstruct, Python 2 str); newer protocols use
    numpy's _frombuffer: the restricted unpickler reads them all, with equal arrays."""
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [0, 9, 3, 3], b"data": data,
             b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"]}
    for protocol in (2, 4, 5):
        write_cifar_archive(tmp_path / "cifar-10-python.tar.gz",
                            replace={"data_batch_1": pickle.dumps(batch, protocol=protocol)})
        train, _ = load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}",
                                            "data.verify_checksums=false"))
        assert np.array_equal(train.arrays[:4], data.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1)), protocol
        assert train.labels[:4].tolist() == [0, 9, 3, 3]


def test_cifar10_missing_archive_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-python.tar.gz not found.*data.download=true"):
        load_image_sets(data_cfg("data.source=cifar10", f"data.root={tmp_path}"))


def test_imagefolder_labels_and_split_detection(tiny_tree):
    train, val = load_image_sets(data_cfg("data.source=imagefolder", f"data.root={tiny_tree}"))
    assert train.classes == ["ant", "bee", "cat"] and len(train) == 21 and len(val) == 11
    assert Counter(train.labels.tolist()) == {0: 7, 1: 6, 2: 8}
    assert all(f"/{train.classes[lab]}/" in name for name, lab in zip(train.names, train.labels))


def test_shipped_sample_is_balanced_cifar10():
    train, val = load_image_sets(data_cfg("data.source=sample"))
    assert SAMPLE_ARCHIVE.stat().st_size < 4_000_000
    assert Counter(train.labels.tolist()) == {c: 500 for c in range(10)}
    assert Counter(val.labels.tolist()) == {c: 100 for c in range(10)}
    assert train.classes[3] == "cat"


@pytest.mark.slow
@pytest.mark.cifar10_jpeg
def test_shipped_sample_rebuilds_byte_for_byte(tmp_path):
    out = tmp_path / "sample.tar.gz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample.py"), str(SHARED_CIFAR_JPEG), str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == SAMPLE_ARCHIVE.read_bytes()


# ------------------------------------------------------------------------------- bad input


def folder_cfg(root: Path, *extra: str):
    return data_cfg("data.source=imagefolder", f"data.root={root}", *SMALL, *extra)


def iterate_all(cfg):
    train, val = load_image_sets(cfg)
    for _ in loader(cfg, train, batch=3):
        pass


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda r: r / "missing", r"data.root: .*/missing does not exist"),
        (lambda r: r.mkdir() or r, r"data.root: .* is empty"),
        (lambda r: (r / "train").mkdir(parents=True) or r, r"/train: no class folders"),
        (lambda r: (r / "train" / "cat").mkdir(parents=True) or r, r"/train/cat: class folder has no image files"),
        (lambda r: (r / "val" / "x").mkdir(parents=True) or r, r"split folder 'train' not found \(found: val\)"),
    ],
    ids=["missing", "empty", "no-classes", "empty-class", "no-train-split"],
)
def test_bad_trees_name_the_path(tmp_path, make, pattern):
    root = make(tmp_path / "data")
    with pytest.raises(DataError, match=pattern):
        load_image_sets(folder_cfg(root))


def test_non_image_file_is_named(tiny_tree):
    (tiny_tree / "train" / "bee" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"train/bee/notes.txt: not an image file"):
        load_image_sets(folder_cfg(tiny_tree))


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        rng = np.random.default_rng(0)
        path.write_bytes(data[:200] + rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes())
    elif how == "text-named-jpg":
        path.write_text("this is not a JPEG")
    elif how == "random-after-signature":  # a JPEG start marker, then random bytes: Pillow cannot identify it
        path.write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())


@pytest.mark.parametrize("how", ["zero-byte", "truncated", "garbage", "text-named-jpg", "random-after-signature"])
def test_undecodable_image_is_named(tiny_tree, how):
    bad = tiny_tree / "train" / "bee" / "003.jpg"
    corrupt(bad, how)
    with pytest.raises(BadImageError, match=rf"{bad}: ") as info:
        iterate_all(folder_cfg(tiny_tree))
    assert " at 0x" not in str(info.value), str(info.value)  # the user's terms, not Pillow's object reprs
    if how == "random-after-signature":
        assert f"{bad}: cannot decode (corrupt JPEG header)" in str(info.value)


def test_check_images_error_lists_bad_files_up_front(tiny_tree):
    corrupt(tiny_tree / "train" / "ant" / "001.jpg", "truncated")
    corrupt(tiny_tree / "val" / "cat" / "000.jpg", "zero-byte")
    with pytest.raises(BadImageError, match=r"1 undecodable image\(s\): .*/train/ant/001.jpg: cannot decode"):
        load_image_sets(folder_cfg(tiny_tree, "data.check_images=error"))


def test_check_images_skip_leaves_bad_files_out(tiny_tree):
    corrupt(tiny_tree / "train" / "ant" / "001.jpg", "garbage")
    corrupt(tiny_tree / "train" / "cat" / "002.jpg", "zero-byte")
    train, val = load_image_sets(folder_cfg(tiny_tree, "data.check_images=skip"))
    assert len(train) == 19 and len(val) == 11
    assert sorted(Path(n).name for n in train.skipped) == ["001.jpg", "002.jpg"]
    batches = list(loader(folder_cfg(tiny_tree), train, batch=3))
    assert len(batches) == 19 // 3



def test_a_failure_that_is_not_a_file_keeps_dalis_own_error(tiny_tree):
    """Every file decodes, so the failure is not the data's: it must not be reported as bad input."""
    cfg = folder_cfg(tiny_tree)
    # A crop larger than the resized image: DALI's crop operator fails, whatever the files hold.
    # (The config schema refuses this combination; the loader API is reached directly here.)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"min_side": 20, "max_side": 20})})
    with pytest.raises(RuntimeError, match=r"Slice can't be placed out of bounds") as info:
        iterate_all(cfg)
    assert not isinstance(info.value, DataError)


def test_missing_file_after_listing_is_named(tiny_tree):
    """Files are read by DALI's C++ reader; one that disappears is still traced back to its path."""
    cfg = folder_cfg(tiny_tree, "data.cache=off")  # read at every step, not decoded once at start-up
    train, _ = load_image_sets(cfg)
    gone = tiny_tree / "train" / "cat" / "004.jpg"
    gone.unlink()
    with pytest.raises(BadImageError, match=rf"{gone}: cannot read"):
        list(loader(cfg, train, batch=3))


# ------------------------------------------------------------- images and members too large to read

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


def run_measured(cmd: list[str], timeout: float = 300) -> tuple[int, str, int]:
    """(exit status, stderr, peak resident memory in MiB) of a child process, from its own rusage (wait4)."""
    import os
    import tempfile
    import threading

    from runs import run_env

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(errors="replace"), usage.ru_maxrss // 1024


@pytest.mark.parametrize("policy", ["off", "error", "skip"])
@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
def test_an_image_over_max_pixels_is_refused_undecoded_under_every_check_images_policy(tiny_tree, huge_png, policy,
                                                                                        kind):
    """off (the default): the loader stops naming it, before DALI decodes it (from files: data.cache=off);
    error: the up-front scan fails naming it; skip: it is left out, named in the skip list."""
    from PIL import Image

    huge = tiny_tree / "train" / "cat" / "huge.png"
    huge.write_bytes(huge_png)
    cfg = folder_cfg(tiny_tree, f"data.check_images={policy}", "data.cache=off", f"data.train.kind={kind}")
    if policy == "error":
        with pytest.raises(BadImageError, match=rf"1 undecodable image\(s\): {huge}: {re.escape(HUGE)}"):
            load_image_sets(cfg)
        return
    train, _ = load_image_sets(cfg)
    if policy == "skip":  # also one over our limit but under twice Pillow's, which Pillow alone would decode
        big = tiny_tree / "train" / "bee" / "big.png"
        Image.new("1", (10000, 10000)).save(big, optimize=True)
        train, _ = load_image_sets(cfg)
        assert sorted(train.skipped) == sorted([str(huge), str(big)]) and len(train) == 21
        assert sum(len(y) for _, y in loader(cfg, train, batch=3)) == 21
        return
    with pytest.raises(BadImageError, match=rf"{huge}: {re.escape(HUGE)}"):
        for _epoch in range(2):  # the remainder dropped from one epoch is in the next one
            for _ in loader(cfg, train, batch=3):
                pass


def test_decode_once_refuses_an_image_over_max_pixels_at_start_up(tiny_tree, huge_png):
    huge = tiny_tree / "val" / "ant" / "huge.png"
    huge.write_bytes(huge_png)
    with pytest.raises(BadImageError, match=rf"{huge}: {re.escape(HUGE)}"):
        load_image_sets(folder_cfg(tiny_tree))  # data.cache=auto, check_images=off


def test_max_pixels_is_the_limit_and_zero_turns_it_off(tiny_tree):
    """24 x 24 = 576 px images: refused under a limit of 575, read without a limit."""
    strict = folder_cfg(tiny_tree, "data.max_pixels=575", "data.cache=off")
    train, _ = load_image_sets(strict)
    with pytest.raises(BadImageError, match=r"24x24 pixels \(0.0 MP\) is over data.max_pixels \(575;"):
        list(loader(strict, train, batch=3))
    off = folder_cfg(tiny_tree, "data.max_pixels=0", "data.cache=off")
    assert len(list(loader(off, load_image_sets(off)[0], batch=3))) == 21 // 3


@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
def test_an_image_over_max_pixels_in_a_tar_shard_is_named_by_shard_and_key(tiny_tree, huge_png, tmp_path, kind):
    from pipeline.data.shards import write_shards

    (tiny_tree / "train" / "cat" / "huge.png").write_bytes(huge_png)
    out = tmp_path / "shards"
    write_shards(tiny_tree, out, shard_size=8, workers=1, seed=0, progress=False)
    cfg = data_cfg("data.source=webdataset", f"data.root={out}", *SMALL, f"data.train.kind={kind}")
    train, _ = load_image_sets(cfg)
    with pytest.raises(BadImageError, match=rf"{out}/train-00000\d.tar:cat/huge.png: {re.escape(HUGE)}"):
        for _epoch in range(2):
            for _ in loader(cfg, train, batch=3):
                pass


@pytest.mark.slow
def test_a_run_meeting_a_huge_image_stops_naming_it_without_decoding_it(tiny_tree, huge_png, tmp_path):
    """The real entry point, check_images=off (the default), files decoded every step: exit 2 with the file
    named, and the process never held the 1.2 GB the decoded image would take."""
    from runs import TINY, train_command

    huge = tiny_tree / "train" / "cat" / "huge.png"
    huge.write_bytes(huge_png)
    overrides = [o for o in TINY if not o.startswith("data.source")]
    status, err, peak_mib = run_measured(train_command() + [
        str(REPO / "configs" / "quickstart.yaml"), *overrides, "data.source=imagefolder", f"data.root={tiny_tree}",
        "model.num_classes=auto", "data.cache=off", "train.global_batch_size=3", f"logging.runs_dir={tmp_path}"])
    assert status == 2, err[-3000:]
    assert f"{huge}: {HUGE}" in err and "Traceback" not in err, err[-3000:]
    assert peak_mib < 2000, f"peak RSS {peak_mib} MiB"  # the tiny run takes ~1.2 GB; the decoded image is 1.1 GiB


def test_an_archive_member_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    """A 9 MB .tar.gz holding a 2 GiB member (zeros): `--resolve` lists the data and stops at the member's
    header, naming archive and member, without reading it."""
    import gzip

    bomb = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo("tree/train/cat/bomb.jpg")
    info.size = 2**31
    with gzip.open(bomb, "wb", compresslevel=1) as gz:
        gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        zeros = bytes(2**20)
        for _ in range(2**11):
            gz.write(zeros)
        gz.write(bytes(1024))  # the end-of-archive blocks
    status, err, peak_mib = run_measured([sys.executable, str(REPO / "train_dist.py"),
                                          str(REPO / "configs" / "quickstart.yaml"), "data.source=imagefolder",
                                          f"data.root={bomb}", "model.num_classes=auto", "--resolve"])
    assert status == 2 and err.strip().splitlines() == [
        f"error: {bomb}:tree/train/cat/bomb.jpg: a member of 2,048.0 MiB, over data.max_member_mb (256.0 MiB); "
        "not read (remove it, or raise data.max_member_mb)"], err[-3000:]
    assert peak_mib < 2000, f"peak RSS {peak_mib} MiB"  # --resolve takes ~0.7 GB; the member is 2 GiB


# ------------------------------------------------------------------------------- decode once


def test_decode_once_gives_the_batches_of_decoding_every_step(tiny_tree):
    """data.cache=auto decodes the 24x24 JPEGs once; training and evaluation batches stay bit for bit."""
    cached_cfg, files_cfg = folder_cfg(tiny_tree), folder_cfg(tiny_tree, "data.cache=off")
    cached, files = load_image_sets(cached_cfg), load_image_sets(files_cfg)
    for c, f in zip(cached, files):
        assert c.arrays is not None and c.arrays.shape == (len(f), 24, 24, 3) and f.arrays is None
        assert c.names == f.names and np.array_equal(c.labels, f.labels)
    for train, (c, f) in ((True, (cached[0], files[0])), (False, (cached[1], files[1]))):
        a, b = loader(cached_cfg, c, train=train, batch=4), loader(files_cfg, f, train=train, batch=4)
        for _ in range(2):  # two epochs: the second one's permutation and draws too
            batches = list(zip(a, b, strict=True))
            assert batches
            for (x1, y1), (x2, y2) in batches:
                assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_decode_once_declines_mixed_sizes_and_sets_over_the_ceiling(tmp_path, caplog):
    mixed = write_imagefolder(tmp_path / "mixed", {"train": {"a": 3}, "val": {"a": 2}}, side=24)
    write_imagefolder(tmp_path / "wide", {"train": {"a": 2}}, side=40, seed=1)
    (tmp_path / "wide" / "train" / "a" / "000.jpg").rename(mixed / "train" / "a" / "big.jpg")
    with caplog.at_level("INFO"):
        train, _ = load_image_sets(folder_cfg(mixed))
    assert train.arrays is None and "differ in size" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        train, _ = load_image_sets(folder_cfg(tmp_path / "wide", "data.eval_split=train", "data.cache_max_gb=1e-6"))
    assert train.arrays is None and "over data.cache_max_gb" in caplog.text


def test_decode_once_names_an_undecodable_file_at_start_up(tiny_tree):
    bad = tiny_tree / "train" / "cat" / "005.jpg"
    corrupt(bad, "truncated")
    with pytest.raises(BadImageError, match=rf"{bad}: "):
        load_image_sets(folder_cfg(tiny_tree))


# --------------------------------------------------------------------------- ImageNet layouts

SYNSETS = ["n01440764", "n01443537", "n01484850"]  # sorted: the class folders' order, labels 0, 1, 2
DEVKIT_ORDER = ["n01484850", "n01440764", "n01443537"]  # ILSVRC2012_ID 1, 2, 3: not the sorted order


def imagenet_tree(root: Path) -> tuple[Path, list[int]]:
    """train/<synset>/ class folders and a flat val/ with ILSVRC-style names; returns the val labels
    (indices into SYNSETS) in sorted-file order. Each class is one colour channel."""
    rng = np.random.default_rng(7)
    for c, synset in enumerate(SYNSETS):
        folder = root / "train" / synset
        folder.mkdir(parents=True)
        for i in range(3):
            img = smooth_image(rng) // 3
            img[..., c] += 150
            (folder / f"{synset}_{i}.JPEG").write_bytes(encode_image(img))
    (root / "val").mkdir()
    labels = [2, 0, 1, 1, 2, 0, 2]
    for i, label in enumerate(labels, start=1):
        img = smooth_image(rng) // 3
        img[..., label] += 150
        fmt = "PNG" if i == 4 else "JPEG"  # ImageNet has a PNG named .JPEG
        (root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(encode_image(img, fmt))
    return root, labels


def test_flat_validation_folder_with_the_ilsvrc_ground_truth_and_synset_map(tmp_path):
    root, labels = imagenet_tree(tmp_path / "imagenet")
    ids = [DEVKIT_ORDER.index(SYNSETS[label]) + 1 for label in labels]  # what the devkit's file holds
    (tmp_path / "gt.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp_path / "map.txt").write_text("\n".join(DEVKIT_ORDER) + "\n")
    cfg = data_cfg("data.source=imagefolder", f"data.root={root}", f"data.eval_labels={tmp_path / 'gt.txt'}",
                   f"data.eval_label_map={tmp_path / 'map.txt'}", *SMALL)
    train, val = load_image_sets(cfg)
    assert train.classes == SYNSETS and val.labels.tolist() == labels
    assert Path(val.names[0]).name == "ILSVRC2012_val_00000001.JPEG"
    seen = []
    for x, y in loader(cfg, val, train=False, batch=3):  # the pixels agree: each class is its own channel
        assert torch.equal(x.float().mean(dim=(2, 3)).argmax(1), y)
        seen += y.tolist()
    assert seen == labels


def test_flat_validation_folder_with_a_file_label_csv(tmp_path):
    root, labels = imagenet_tree(tmp_path / "imagenet")
    files = sorted(p.name for p in (root / "val").iterdir())
    rows = [f"{f},{SYNSETS[label] if k % 2 else label}" for k, (f, label) in enumerate(zip(files, labels))]
    (tmp_path / "val.csv").write_text("file,label\n" + "\n".join(rows[::-1]) + "\n")  # header, any order
    cfg = data_cfg("data.source=imagefolder", f"data.root={root}", f"data.eval_labels={tmp_path / 'val.csv'}")
    _, val = load_image_sets(cfg)
    assert val.labels.tolist() == labels


@pytest.mark.parametrize(
    "labels_text, use_map, pattern",
    [
        ("1\n2\n3\n1\n2\n3\n1\n", False, r"data.eval_label_map: .* not in the class folders' sorted order"),
        ("1\n2\n3\n", True, r"3 labels for the 7 files"),
        ("1\n2\n3\n1\n2\n3\n9\n", True, r"gt.txt:7: ID '9' is not between 1 and the 3 synsets"),
        ("ILSVRC2012_val_00000001.JPEG,n01440764\n", False, r"ILSVRC2012_val_00000002.JPEG: no label in .*gt.txt"),
        ("ILSVRC2012_val_00000001.JPEG,n09999999\n", False, r"label 'n09999999' is neither a training class"),
    ],
    ids=["ids-without-map", "too-few", "id-out-of-range", "unlabelled-file", "unknown-class"],
)
def test_bad_validation_labels_name_the_file(tmp_path, labels_text, use_map, pattern):
    root, _ = imagenet_tree(tmp_path / "imagenet")
    (tmp_path / "gt.txt").write_text(labels_text)
    (tmp_path / "map.txt").write_text("\n".join(DEVKIT_ORDER) + "\n")
    extra = [f"data.eval_label_map={tmp_path / 'map.txt'}"] if use_map else []
    with pytest.raises(DataError, match=pattern):
        load_image_sets(data_cfg("data.source=imagefolder", f"data.root={root}",
                                 f"data.eval_labels={tmp_path / 'gt.txt'}", *extra))


def test_the_shard_writer_packs_the_flat_validation_layout(tmp_path):
    from pipeline.data.shards import write_shards

    root, labels = imagenet_tree(tmp_path / "imagenet")
    ids = [DEVKIT_ORDER.index(SYNSETS[label]) + 1 for label in labels]
    (tmp_path / "gt.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp_path / "map.txt").write_text("\n".join(DEVKIT_ORDER) + "\n")
    write_shards(root, tmp_path / "shards", shard_size=4, workers=1, seed=0, eval_labels=str(tmp_path / "gt.txt"),
                 eval_label_map=str(tmp_path / "map.txt"), progress=False)
    assert sorted(p.name for p in (tmp_path / "shards").glob("val-*.tar")) == ["val-000000.tar", "val-000001.tar"]
    train, val = load_image_sets(data_cfg("data.source=webdataset", f"data.root={tmp_path / 'shards'}"))
    assert train.classes == SYNSETS and len(train) == 9
    by_key = {Path(val.names[i].split(":")[-1]).stem: int(val.labels[i]) for i in range(len(val))}
    assert by_key == {f"ILSVRC2012_val_{i:08d}": label for i, label in enumerate(labels, start=1)}
