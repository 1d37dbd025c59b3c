"""Where images come from: image-folder trees (on disk or in an archive), CIFAR-10 arrays, the sample,
tar shards (pipeline/data/webdataset.py).

Every source becomes an `ImageSet`: a list of samples (encoded image bytes or decoded uint8 HWC
arrays), their integer labels and class names, and a printable name per sample so that an error
can say which file is bad. Sources only list and fetch; DALI does the decoding and augmentation.

ImageNet's layouts are image folders: class folders for both splits, or class folders for
training and a flat validation folder with a labels file (`data.eval_labels`, see
`list_flat_split`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.constants import SAMPLE_ARCHIVE
from pipeline.data.cifar10 import read_batches
from pipeline.data.images import IMAGE_EXTENSIONS, check_encoded
from pipeline.data.webdataset import (MAX_MEMBER_BYTES, MemberNames, ShardMembers, list_webdataset,
                                      member_too_large)
from pipeline.errors import BadImageError, ConfigError, DataError
from pipeline.files import atomic_open

log = logging.getLogger(__name__)

EVAL_SPLIT_CANDIDATES = ("val", "test", "validation")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Read at call time, so a test (or a mirror) can point them elsewhere before calling load_cifar10.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation, not for the whole file


@dataclass
class ImageSet:
    """One split. Exactly one of `files`, `encoded`, `members` or `arrays` holds the samples."""

    names: Sequence[str]  # printable name of each sample (a path, archive:member, shard:member)
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    files: list[str] | None = None  # encoded images read from disk at fetch time
    encoded: list[np.ndarray] | None = None  # encoded images held in memory (uint8 1-D)
    arrays: np.ndarray | None = None  # decoded images (N, H, W, 3) uint8
    members: ShardMembers | None = None  # encoded images inside tar shards, read by offset at fetch time
    skipped: list[str] = field(default_factory=list)  # names left out by check_images=skip

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_encoded(self) -> bool:
        return self.arrays is None

    def read_encoded(self, index: int) -> np.ndarray:
        """The encoded bytes of one sample as stored (raises OSError if the file is unreadable)."""
        if self.encoded is not None:
            return self.encoded[index]
        if self.members is not None:
            return self.members.read(index)
        return np.fromfile(self.files[index], dtype=np.uint8)

    def fetch_encoded(self, index: int) -> np.ndarray:
        """The encoded bytes of one sample, checked cheaply (non-empty, a known image signature)."""
        try:
            data = self.read_encoded(index)
        except OSError as exc:
            raise BadImageError(f"{self.names[index]}: cannot read ({exc.strerror or exc})") from None
        check_encoded(data, self.names[index])
        return data

    def fetch_arrays(self, indices: np.ndarray) -> np.ndarray:
        return self.arrays[indices]

    def subset(self, keep: np.ndarray) -> "ImageSet":
        """The samples at `keep` (indices), e.g. after a scan dropped undecodable files."""
        dropped = sorted(set(range(len(self))) - set(keep.tolist()))
        return ImageSet(
            names=[self.names[i] for i in keep],
            labels=self.labels[keep],
            classes=self.classes,
            files=[self.files[i] for i in keep] if self.files is not None else None,
            encoded=[self.encoded[i] for i in keep] if self.encoded is not None else None,
            arrays=self.arrays[keep] if self.arrays is not None else None,
            members=self.members.take(keep) if self.members is not None else None,
            skipped=self.skipped + [self.names[i] for i in dropped],
        )


# ---------------------------------------------------------------------------------- image folders


def _is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _label_tree(entries: dict[str, list[str]], where: str, classes: list[str] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """Turn {class: [names]} into (names, labels, classes); classes sorted by folder name.

    With `classes` given (the training split's), this split must use a subset of them and its
    labels follow that order, so train and validation agree on what label 3 means.
    """
    if not entries:
        raise DataError(f"{where}: no class folders (expected {where}/<class>/<image>)")
    empty = [c for c, files in entries.items() if not files]
    if empty:
        raise DataError(f"{where}/{empty[0]}: class folder has no image files")
    own = sorted(entries)
    if classes is None:
        classes = own
    else:
        unknown = [c for c in own if c not in classes]
        if unknown:
            raise DataError(f"{where}: classes {unknown} do not exist in the training split; every validation "
                            "class needs a training folder of the same name")
    index = {c: i for i, c in enumerate(classes)}
    names, labels = [], []
    for c in own:
        for name in sorted(entries[c]):
            names.append(name)
            labels.append(index[c])
    return names, np.asarray(labels, dtype=np.int64), classes


def _require_image_name(name: str) -> None:
    """A file in a class folder must have an image extension; anything else is named as an error."""
    if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{name}: not an image file (expected one of {', '.join(sorted(IMAGE_EXTENSIONS))})")


def _split_error(where: str, split: str, found: list[str]) -> DataError:
    return DataError(f"{where}: split folder '{split}' not found (found: {', '.join(sorted(found)) or 'nothing'}); "
                     "name the splits with data.train_split and data.eval_split")


def resolve_eval_split(available: list[str], requested: str, where: str) -> str:
    if requested != "auto":
        return requested
    for name in EVAL_SPLIT_CANDIDATES:
        if name in available:
            return name
    raise DataError(f"{where}: no validation split (looked for {', '.join(EVAL_SPLIT_CANDIDATES)}); set data.eval_split")


def list_folder_split(root: Path, split: str, classes: list[str] | None = None) -> ImageSet:
    """A class-per-folder split on disk: root/split/<class>/<image>. Files are read at fetch time."""
    base = root / split
    if not base.is_dir():
        found = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        raise _split_error(str(root), split, found)
    entries: dict[str, list[str]] = {}
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        with os.scandir(class_dir) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue  # .DS_Store and friends
                if not entry.is_file():
                    continue
                _require_image_name(entry.path)
                files.append(entry.path)
        entries[class_dir.name] = files
    names, labels, classes = _label_tree(entries, str(base), classes)
    return ImageSet(names=names, labels=labels, classes=classes, files=list(names))


def _read_label_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data.eval_labels: cannot read {path} ({exc})") from None
    return [line.replace(",", " ", 1).split(maxsplit=1) for line in text.splitlines() if line.strip()]


def _class_index(label: str, classes: list[str], where: str) -> int:
    """A label field: a class folder name, or an index into the sorted class folders (0-based)."""
    label = label.split()[0]  # Kaggle's LOC_val_solution.csv: "n01751748 x0 y0 x1 y1 n01751748 ..."
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < len(classes):
        return int(label)
    raise DataError(f"{where}: label {label!r} is neither a training class nor an index below {len(classes)}")


def list_flat_split(folder: Path, labels_file: Path, label_map: str, classes: list[str]) -> ImageSet:
    """A validation folder without class folders, labelled by a file (ImageNet's validation layout).

    `labels_file` is either the ILSVRC2012 ground-truth form, one integer per line for the
    folder's files in sorted order (ILSVRC2012_validation_ground_truth.txt), or `file,label`
    lines (`file label` too; a header line is skipped; label = class folder name or 0-based index
    into the sorted class folders). The ground truth's 1-based IDs are the devkit's ILSVRC2012_ID,
    which is NOT the sorted-synset order of the class folders: `label_map` (data.eval_label_map)
    gives the synset of ID 1, 2, ... one per line, as the devkit's meta.mat lists them.
    """
    if not folder.is_dir():
        raise DataError(f"data.eval_split: {folder} is not a folder")
    files = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
    for name in files:
        _require_image_name(str(folder / name))
    rows = _read_label_lines(labels_file)
    if rows and all(len(r) == 1 for r in rows):  # the ground-truth form
        if not label_map:
            raise DataError(f"data.eval_label_map: {labels_file} holds one ILSVRC ID per line; the IDs are not in "
                            "the class folders' sorted order, so give the synset of ID 1, 2, ... one per line")
        synsets = [line.strip() for line in Path(label_map).read_text().splitlines() if line.strip()]
        if len(rows) != len(files):
            raise DataError(f"{labels_file}: {len(rows)} labels for the {len(files)} files in {folder}")
        labels = []
        for number, (row, name) in enumerate(zip(rows, files), start=1):
            if not row[0].isdigit() or not 1 <= int(row[0]) <= len(synsets):
                raise DataError(f"{labels_file}:{number}: ID {row[0]!r} is not between 1 and the "
                                f"{len(synsets)} synsets of {label_map}")
            labels.append(_class_index(synsets[int(row[0]) - 1], classes, f"{label_map}:{row[0]}"))
        by_name = dict(zip(files, labels))
    else:
        by_name = {}
        stems = {Path(f).stem: f for f in files}
        for number, row in enumerate(rows, start=1):
            if len(row) != 2:
                raise DataError(f"{labels_file}:{number}: expected 'file,label' (got {' '.join(row)!r})")
            name = row[0] if row[0] in files else stems.get(row[0])
            if name is None:
                if number == 1:
                    continue  # a header line ("file,label", "ImageId,PredictionString")
                raise DataError(f"{labels_file}:{number}: {row[0]} is not a file in {folder}")
            by_name[name] = _class_index(row[1], classes, f"{labels_file}:{number}")
        unlabelled = [f for f in files if f not in by_name]
        if unlabelled:
            raise DataError(f"{folder / unlabelled[0]}: no label in {labels_file} ({len(unlabelled)} files lack one)")
    paths = [str(folder / name) for name in files]
    return ImageSet(names=paths, labels=np.asarray([by_name[f] for f in files], np.int64), classes=classes,
                    files=paths)


class _ArchiveTree:
    """An image-folder tree inside a .tar/.tar.gz, read into memory once (small data sets only).

    Each member's size comes from its tar header: one over `max_member_bytes` is refused before
    any of it is read (a small .tar.gz can hold a member of gigabytes of zeros)."""

    def __init__(self, path: Path, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
        self.path = path
        self.members: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    if m.size > max_member_bytes:
                        raise member_too_large(f"{path}:{m.name}", m.size, max_member_bytes)
                    self.members[m.name] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as exc:  # "r:*" names each method it tried, a line each
            raise DataError(f"{path}: cannot read the archive ({' '.join(str(exc).split())})") from None
        # The tree may sit under a top-level folder (cifar10/train/...): find the split folders.
        self.splits: dict[str, dict[str, dict[str, bytes]]] = {}
        for name, data in self.members.items():
            parts = name.split("/")
            if len(parts) < 3:
                continue
            split, cls, fname = parts[-3], parts[-2], parts[-1]
            if fname.startswith(".") or cls.startswith("."):
                continue
            self.splits.setdefault(split, {}).setdefault(cls, {})[name] = data

    def split(self, split: str, classes: list[str] | None = None) -> ImageSet:
        if split not in self.splits:
            raise _split_error(str(self.path), split, list(self.splits))
        entries: dict[str, list[str]] = {}
        for cls, files in self.splits[split].items():
            for name in files:
                _require_image_name(f"{self.path}:{name}")
            entries[cls] = list(files)
        names, labels, classes = _label_tree(entries, f"{self.path}:{split}", classes)
        data = {n: d for files in self.splits[split].values() for n, d in files.items()}
        return ImageSet(
            names=[f"{self.path}:{n}" for n in names],
            labels=labels,
            classes=classes,
            encoded=[np.frombuffer(data[n], dtype=np.uint8) for n in names],
        )


def load_imagefolder(root: str | Path, train_split: str, eval_split: str, eval_labels: str = "",
                     eval_label_map: str = "", max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """Train and validation splits of an image-folder tree: a directory or a .tar/.tar.gz of one.

    With `eval_labels`, the validation split is a flat folder labelled by that file (list_flat_split).
    An archive's members over `max_member_bytes` are refused unread.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data.root: {root} does not exist")
    if eval_labels:
        if root.is_file():
            raise DataError(f"data.eval_labels: a flat validation folder must be a directory, not inside {root}")
        train = list_folder_split(root, train_split)
        split = resolve_eval_split([p.name for p in root.iterdir() if p.is_dir()], eval_split, str(root))
        return train, list_flat_split(root / split, Path(eval_labels).expanduser(), eval_label_map, train.classes)
    if root.is_file():
        if not _is_archive(root):
            raise DataError(f"data.root: {root} is a file but not a .tar/.tar.gz archive of an image folder")
        tree = _ArchiveTree(root, max_member_bytes)
        if not tree.splits:
            raise DataError(f"{root}: the archive holds no <split>/<class>/<image> files")
        train = tree.split(train_split)
        return train, tree.split(resolve_eval_split(list(tree.splits), eval_split, str(root)), train.classes)
    subdirs = [p.name for p in root.iterdir() if p.is_dir()]
    if not subdirs:
        raise DataError(f"data.root: {root} is empty (expected {root}/{train_split}/<class>/<image>)")
    train = list_folder_split(root, train_split)
    return train, list_folder_split(root, resolve_eval_split(subdirs, eval_split, str(root)), train.classes)


def load_sample(max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """The CIFAR-10 subset shipped in the repository (500 train + 100 test images per class)."""
    if not SAMPLE_ARCHIVE.is_file():
        raise DataError(f"{SAMPLE_ARCHIVE}: the shipped sample is missing (rebuild it with scripts/make_sample.py)")
    return load_imagefolder(SAMPLE_ARCHIVE, "train", "test", max_member_bytes=max_member_bytes)


# ------------------------------------------------------------------------------------ download


def download_once(url: str, path: Path, md5: str) -> None:
    """Download `url` to `path` unless it is there, safely when many processes ask at once.

    Every rank of every node calls this at start-up. An exclusive lock on `.<name>.lock` beside
    `path` lets one process download while the others wait; they then find the finished file.
    The file is written under a temporary name in the same directory, its MD5 checked, and only
    then renamed into place, so `path` is either absent or complete and verified. Where the
    filesystem has no working flock (some shared filesystems, e.g. Lustre without `-o flock`),
    processes download side by side and the renames still leave one good file; download on one
    node before starting the others to avoid the repeated traffic.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        except OSError as exc:
            log.warning("%s: no file lock on this filesystem (%s); downloading without one",
                        path.parent, exc.strerror or exc)
        if not path.is_file():  # another process may have finished it while this one waited
            _download_verified(url, path, md5)


def _download_verified(url: str, path: Path, md5: str) -> None:
    """Stream `url` into a temporary file beside `path`, check its MD5, rename it into place."""
    by_hand = f"download it by hand to {path}"
    log.info("downloading %s to %s", url, path)
    digest = hashlib.md5()
    with atomic_open(path) as out:  # a failure below leaves no file: `path` is absent or complete and verified
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise DataError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); {by_hand}") from None
        except urllib.error.URLError as exc:
            raise DataError(f"cannot download {url} ({exc.reason}); {by_hand}") from None
        except OSError as exc:  # connection reset, timeout, disk full
            raise DataError(f"cannot download {url} to {path.parent} ({exc.strerror or exc}); {by_hand}") from None
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: the download has MD5 {digest.hexdigest()}, expected {md5} "
                            f"(nothing was kept); {by_hand}")


# ------------------------------------------------------------------------------------ CIFAR-10


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


# ------------------------------------------------------------------------------------ dispatch


def load_webdataset(root: str | Path, train_split: str, eval_split: str,
                    max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """Train and validation splits of tar shards (pipeline/data/webdataset.py): members read by offset."""
    train, val, classes = list_webdataset(root, train_split, eval_split, max_member_bytes)
    return tuple(ImageSet(names=MemberNames(split.members), labels=split.labels, classes=classes,
                          members=split.members) for split in (train, val))


def open_source(source: str, root: str = "", train_split: str = "train", eval_split: str = "auto",
                download: bool = False, eval_labels: str = "", eval_label_map: str = "",
                verify_checksums: bool = True, max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ImageSet, ImageSet]:
    """(train, eval) image sets of a `data.source` other than synthetic; archive and shard members over
    `max_member_bytes` (data.max_member_mb) are refused before they are read."""
    if source == "sample":
        return load_sample(max_member_bytes)
    if source == "imagefolder":
        return load_imagefolder(root, train_split, eval_split, eval_labels, eval_label_map, max_member_bytes)
    if source == "cifar10":
        return load_cifar10(root, download, verify_checksums)
    if source == "webdataset":
        return load_webdataset(root, train_split, eval_split, max_member_bytes)
    raise ConfigError(f"data.source: {source!r} has no image set")
