"""pipeline/data/sources: every source opens and fingerprints its data; CIFAR-10 archives, image folders, the sample,
validation layouts.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    encode_image,
    official_checksums,
    smooth_image,
    write_cifar_archive,
)
from support.data import SMALL, RunsCode, data_cfg, folder_cfg, loader

from pipeline.constants import SAMPLE_ARCHIVE
from pipeline.data import DataError, load_image_sets
from pipeline.data.sources.cifar10 import load_cifar10
from pipeline.errors import ConfigError

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

