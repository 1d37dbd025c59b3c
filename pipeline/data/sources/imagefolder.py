"""data.source=imagefolder: a class-per-folder tree of image files, on disk or in a .tar/.tar.gz.

    train, val = load_imagefolder("/data/my-images", "train", "auto")   # ImageSets; files read at fetch time

`root/<split>/<class>/<image>`; classes sorted by folder name, the validation split's labels in
the training split's order. ImageNet's layouts are image folders: class folders for both splits,
or class folders for training and a flat validation folder with a labels file
(`data.eval_labels`, see `list_flat_split`). An archive of a tree is read into memory (small data
sets), each member's size checked from its header before it is read.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.digests import file_sha1, files_sha1
from pipeline.data.image_set import ImageSet
from pipeline.data.images import IMAGE_EXTENSIONS
from pipeline.data.webdataset import MAX_MEMBER_BYTES, member_limit, member_too_large
from pipeline.errors import DataError
from pipeline.sources import EVAL_SPLIT_CANDIDATES

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def open_images(data: Any) -> tuple[ImageSet, ImageSet]:
    """(train, eval) of the tree the `data` section names."""
    return load_imagefolder(data.root, data.train_split, data.eval_split, data.eval_labels, data.eval_label_map,
                            member_limit(data))


def fingerprint(data: Any) -> str:
    """`sha1:<hex>` of the tree's listing, read by name and size (one stat per file, nothing read).

    - A directory: SHA-1 over the sorted `<split>/<class>/<file>` paths of the train and eval splits
      with each file's size (the class folder in the path is the label). On the development machine
      60,000 files take 0.5 s with the directories cached and 1.3 s cold. A file rewritten in place
      with the same size keeps the fingerprint; renaming, adding, removing, resizing a file or
      moving it to another class changes it.
    - An archive: SHA-1 of its bytes.
    - A flat validation folder (`data.eval_labels`): its files' names and sizes, plus the bytes of
      the labels file (and of the label map).
    """
    root = Path(data.root).expanduser()
    if root.is_file():  # an image folder packed in an archive
        return "sha1:" + file_sha1(root)
    subdirs = [p.name for p in root.iterdir() if p.is_dir()]
    eval_split = resolve_eval_split(subdirs, data.eval_split, str(root))
    if data.eval_labels:  # a flat validation folder: its files, the labels file and the map
        flat = sorted(p for p in (root / eval_split).iterdir() if p.is_file() and not p.name.startswith("."))
        labels = [Path(f).expanduser() for f in (data.eval_labels, data.eval_label_map) if f]
        return "sha1:" + hashlib.sha1((tree_sha1(root, [data.train_split]) + files_sha1(flat, labels)).encode()
                                      ).hexdigest()
    return "sha1:" + tree_sha1(root, [data.train_split, eval_split])


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
        except (tarfile.TarError, OSError, EOFError) as exc:
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

