"""Tar shards in the webdataset layout: listing, DALI index files, and reading one member by offset.

    train, val, classes = list_webdataset("/data/imagenet-shards", "train", "auto")
    train.members.read(7)        # the bytes of sample 7's image member: one pread, no tar parsing

(`data.source: webdataset`; pipeline/data/sources/webdataset.py turns the splits into ImageSets.)

A shard is a plain tar whose members are grouped into samples by key: `<key>.jpg` (or .jpeg, .png,
any image extension, any case) and `<key>.cls` (the class index as text). Each shard may come with
a DALI index file (`<shard>.idx`, the format DALI's tools/wds2idx.py writes and
`fn.readers.webdataset` reads): one line per sample with each member's extension, data offset,
size and name. With it, listing a shard reads no tar at all; without it, the tar's headers are
scanned (one small read per member). `python -m pipeline.data.shards` writes shards with index
files and a class map, `classes.json`, that also holds every shard's labels, so start-up reads no
`.cls` member either. Shards from elsewhere work too: their labels are read from the `.cls`
members at start-up (one small read per sample) and class names are the indices.

Which shards form a split (`data.train_split`, `data.eval_split`, relative to `data.root`):
a name `NAME` means `root/NAME-*.tar` and `root/NAME/*.tar`; a glob (`train-00*.tar`), one
`.tar`, or a `.txt` list file (one shard per line, relative to the list's folder) name shards
directly. `data.root`
may itself be a glob or a list file: those are the training shards, and the eval split is looked
up beside them.

A sample's index is its position in the listing (shards in name order, members in file order);
the sampler decides the order they are read in (pipeline/data/sampler.py: ShardStreamBatches).
A sample prints as `<shard path>:<member name>`, so a bad member is named by shard and key.

A folder our writer made is read only as it recorded it (`check_record`): `classes.json` is its
completion record, written last, and lists every shard with its labels. A folder holding the
writer's `INCOMPLETE` mark and no record was left by a writer that did not finish, and is refused;
so are shards the record does not list (left by another write), listed shards that are missing,
and shards whose sample count differs from the record's. Members larger than `max_member_bytes`
(data.max_member_mb) are refused at listing, from their sizes, before anything reads them.
"""

from __future__ import annotations

import glob as globbing
import json
import logging
import os
import tarfile
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pipeline.constants import MAX_MEMBER_MB
from pipeline.data.images import IMAGE_EXTENSIONS
from pipeline.errors import DataError
from pipeline.sources import EVAL_SPLIT_CANDIDATES

log = logging.getLogger(__name__)

CLASS_MAP = "classes.json"  # beside the shards: class names and each shard's labels; the writer's completion record
INCOMPLETE = "INCOMPLETE"  # beside the shards while the writer runs, removed once classes.json is written
MAX_MEMBER_BYTES = MAX_MEMBER_MB * 2**20  # data.max_member_mb's default
INDEX_VERSION = "v1.2"  # DALI's index format: "<ext> <offset> <size> <name>" per member
LABEL_EXTENSION = "cls"
MAX_OPEN_SHARDS = 64  # file descriptors kept open per process (ImageNet has over 1,000 shards)

_IMAGE_EXTENSIONS = frozenset(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/key.ext.more` -> (`dir/key`, `ext.more`): the key ends at the first dot after the last slash."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


# ------------------------------------------------------------------------------ index files


@dataclass(frozen=True)
class Member:
    """One file inside a shard: where its bytes are."""

    name: str  # path inside the tar, e.g. "daisy/123.jpg"
    offset: int  # byte offset of the data (past the 512-byte header)
    size: int  # bytes


def index_path(shard: Path) -> Path:
    return shard.with_suffix(".idx")


def format_index(samples: list[list[Member]]) -> str:
    """The text of a DALI index file (v1.2) for samples given as lists of their members."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for members in samples:
        lines.append(" ".join(f"{split_member_name(m.name)[1]} {m.offset} {m.size} {m.name}" for m in members))
    return "\n".join(lines) + "\n"


def _is_count(text: str) -> bool:
    """A non-negative decimal integer, as the index format writes them (`isdigit` alone takes "²")."""
    return text.isascii() and text.isdigit()


def read_index(path: Path, shard: Path) -> list[list[Member]]:
    """The samples of a DALI index file (v1.1 or v1.2), checked against the shard's size."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the index file ({exc})") from None
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] not in ("v1.1", "v1.2") or not _is_count(header[1]):
        raise DataError(f"{path}: not a DALI webdataset index (first line {lines[0] if lines else ''!r}; "
                        "expected 'v1.2 <samples>')")
    fields = 4 if header[0] == "v1.2" else 3
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) % fields:
            raise DataError(f"{path}:{number}: expected groups of {fields} fields per member, got {len(parts)}")
        members = []
        for at in range(0, len(parts), fields):
            bad = next((f for f in parts[at + 1:at + 3] if not _is_count(f)), None)
            if bad is not None:
                raise DataError(f"{path}:{number}: offset and size must be non-negative integers, got {bad!r} "
                                "(rebuild the index: delete it and the tar headers are read instead)")
            ext, offset, size = parts[at], int(parts[at + 1]), int(parts[at + 2])
            name = parts[at + 3] if fields == 4 else f"#{len(samples)}.{ext}"
            members.append(Member(name, offset, size))
        samples.append(members)
    if len(samples) != int(header[1]):
        raise DataError(f"{path}: the header announces {header[1]} samples, the file lists {len(samples)}")
    end = max((m.offset + m.size for s in samples for m in s), default=0)
    if end > shard.stat().st_size:
        raise DataError(f"{path}: lists data up to byte {end}, beyond the end of {shard} "
                        f"({shard.stat().st_size} bytes): the index belongs to another version of the shard")
    return samples


def scan_tar(shard: Path) -> list[list[Member]]:
    """The samples of a tar read from its headers (the members' data is skipped, not read)."""
    samples: list[list[Member]] = []
    last_key = None
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _ = split_member_name(info.name)
                if not key or key.endswith("/") or Path(key).name.startswith("."):
                    continue  # hidden files, as DALI's reader skips them
                member = Member(info.name, info.offset_data, info.size)
                if key != last_key:
                    samples.append([member])
                    last_key = key
                else:
                    samples[-1].append(member)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{shard}: cannot read the tar ({' '.join(str(exc).split())})") from None
    return samples


def list_shard(shard: Path) -> list[list[Member]]:
    idx = index_path(shard)
    if idx.is_file():
        return read_index(idx, shard)
    log.info("%s: no index file %s; scanning the tar headers", shard, idx.name)
    return scan_tar(shard)


# ------------------------------------------------------------------------------ the members


_OPEN_MEMBER_TABLES: "weakref.WeakSet[ShardMembers]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A DataLoader worker forked while a reader thread held a table's lock must not inherit it locked."""
    for members in list(_OPEN_MEMBER_TABLES):
        members._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(eq=False)
class ShardMembers:
    """Where each sample's image is: shard, data offset and size; reads one by `os.pread`.

    Safe to use from several threads (the open files are an LRU of `MAX_OPEN_SHARDS`
    descriptors under a lock; `pread` itself needs no shared file position) and in DataLoader
    worker processes (a copy opens its own files).
    """

    shards: list[str]  # shard paths
    shard_of: np.ndarray  # int32 (N,): the shard of each sample
    offsets: np.ndarray  # int64 (N,)
    sizes: np.ndarray  # int64 (N,)
    keys: list[str]  # the image member's name inside its shard
    _files: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        _OPEN_MEMBER_TABLES.add(self)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_files", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _files=OrderedDict(), _lock=threading.Lock())
        _OPEN_MEMBER_TABLES.add(self)

    def name(self, index: int) -> str:
        return f"{self.shards[self.shard_of[index]]}:{self.keys[index]}"

    def _fd(self, shard: int) -> int:
        with self._lock:
            fd = self._files.get(shard)
            if fd is not None:
                self._files.move_to_end(shard)
                return fd
            fd = os.open(self.shards[shard], os.O_RDONLY)
            self._files[shard] = fd
            if len(self._files) > MAX_OPEN_SHARDS:
                os.close(self._files.popitem(last=False)[1])
            return fd

    def read_range(self, shard: int, offset: int, size: int) -> bytes:
        """`size` bytes of shard `shard` from `offset`; OSError if unreadable or too short."""
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"the shard ends after {len(data)} of the member's {size} bytes")
        return data

    def read(self, index: int) -> np.ndarray:
        """The image member's bytes of sample `index` (uint8 1-D)."""
        data = self.read_range(int(self.shard_of[index]), int(self.offsets[index]), int(self.sizes[index]))
        return np.frombuffer(data, np.uint8)

    def take(self, keep: np.ndarray) -> "ShardMembers":
        return ShardMembers(self.shards, self.shard_of[keep], self.offsets[keep], self.sizes[keep],
                            [self.keys[i] for i in keep])

    @property
    def shard_sizes(self) -> list[int]:
        """Samples per shard, in listing order; samples of one shard are contiguous."""
        return np.bincount(self.shard_of, minlength=len(self.shards)).tolist()


class MemberNames(Sequence):
    """`<shard>:<member>` of every sample, made on demand (ImageNet: 1.3 M strings not kept)."""

    def __init__(self, members: ShardMembers) -> None:
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list
        if isinstance(index, slice):
            return [self.members.name(i) for i in range(*index.indices(len(self)))]
        return self.members.name(int(index))

    def __iter__(self) -> Iterator[str]:
        return (self.members.name(i) for i in range(len(self)))


# ------------------------------------------------------------------------------ listing a split


@dataclass(frozen=True)
class ShardSplit:
    members: ShardMembers
    labels: np.ndarray  # int64 (N,)


def _is_pattern(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def find_shards(base: Path, spec: str, key: str) -> list[Path]:
    """The shards `spec` names relative to `base`: a name, a glob or a .txt list file (see the module doc)."""
    where = Path(spec) if Path(spec).is_absolute() else base / spec
    if _is_pattern(spec):
        shards = sorted(Path(p) for p in globbing.glob(str(where)))
    elif spec.endswith(".tar"):
        shards = [where] if where.is_file() else []
    elif spec.endswith(".txt"):
        if not where.is_file():
            raise DataError(f"{key}: list file {where} not found")
        lines = [line.strip() for line in where.read_text().splitlines()]
        shards = [p if p.is_absolute() else where.parent / p for p in map(Path, filter(None, lines))]
        missing = [p for p in shards if not p.is_file()]
        if missing:
            raise DataError(f"{where}: lists {missing[0]}, which does not exist")
    else:
        shards = _named_shards(base, spec)
    if not shards:
        named = _is_pattern(spec) or spec.endswith((".txt", ".tar"))
        raise DataError(f"{key}: no shards for {spec!r} (looked for {where}"
                        + ("" if named else f"-*.tar and {where}/*.tar") + ")")
    return shards


def _named_shards(base: Path, name: str) -> list[Path]:
    """The shards a split name stands for: base/NAME-*.tar and base/NAME/*.tar."""
    return sorted({*base.glob(f"{name}-*.tar"), *(base / name).glob("*.tar")})


def _read_label(members: ShardMembers, shard: int, member: Member) -> int:
    try:
        return int(members.read_range(shard, member.offset, member.size).decode("ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{members.shards[shard]}:{member.name}: not a class index ({exc})") from None


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def member_limit(data: Any) -> int:
    """data.max_member_mb of a `data` section, in bytes: the largest archive or shard member read."""
    return int(data.max_member_mb * 2**20)


def member_too_large(where: str, size: int, max_bytes: int) -> DataError:
    """The error for an archive or shard member over data.max_member_mb (`where`: archive:member)."""
    return DataError(f"{where}: a member of {_size(size)}, over data.max_member_mb ({_size(max_bytes)}); not read "
                     "(remove it, or raise data.max_member_mb)")


def list_split(shards: list[Path], class_map: dict,
               max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ShardMembers, np.ndarray]:
    """Every sample of these shards: the image members and the labels (from the class map or the .cls members).

    A member larger than `max_member_bytes` is refused here, from its listed size, before anything reads it."""
    shard_of, offsets, sizes, keys, labels = [], [], [], [], []
    label_members: list[tuple[int, int, Member]] = []  # (sample, shard, .cls member) still to read
    known = class_map.get("labels", {})
    for s, shard in enumerate(shards):
        samples = list_shard(shard)
        stored = known.get(shard.name)
        if stored is not None and len(stored) != len(samples):
            raise DataError(f"{shard}: holds {len(samples)} samples, {CLASS_MAP} beside the shards lists "
                            f"{len(stored)}: the shard changed after the writer finished; write the shards again")
        for i, components in enumerate(samples):
            by_ext = {split_member_name(m.name)[1].lower(): m for m in components}
            image = next((m for e, m in by_ext.items() if e in _IMAGE_EXTENSIONS), None)
            if image is None:
                key = split_member_name(components[0].name)[0]
                raise DataError(f"{shard}:{key}: sample has no image member (found {', '.join(sorted(by_ext))})")
            big = next((m for m in components if m.size > max_member_bytes), None)
            if big is not None:
                raise member_too_large(f"{shard}:{big.name}", big.size, max_member_bytes)
            shard_of.append(s)
            offsets.append(image.offset)
            sizes.append(image.size)
            keys.append(image.name)
            if stored is not None:
                labels.append(int(stored[i]))
                continue
            if LABEL_EXTENSION not in by_ext:
                raise DataError(f"{shard}:{split_member_name(image.name)[0]}: sample has no .{LABEL_EXTENSION} "
                                "member (its class index)")
            labels.append(-1)
            label_members.append((len(labels) - 1, s, by_ext[LABEL_EXTENSION]))
    members = ShardMembers([str(p) for p in shards], np.asarray(shard_of, np.int32), np.asarray(offsets, np.int64),
                           np.asarray(sizes, np.int64), keys)
    if label_members:
        log.info("reading %d class labels from .%s members (no %s entry for these shards)",
                 len(label_members), LABEL_EXTENSION, CLASS_MAP)
        with ThreadPoolExecutor(max_workers=8) as pool:  # small reads: the latency, not the bytes, counts
            read = pool.map(lambda item: _read_label(members, item[1], item[2]), label_members)
            for (sample, _, _), label in zip(label_members, read):
                labels[sample] = label
    return members, np.asarray(labels, np.int64)


def read_class_map(folder: Path) -> dict:
    """The class map beside the shards ({} when there is none), refused unless its classes are a list and its
    labels map each shard to a list of integers."""
    path = folder / CLASS_MAP
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable class map ({exc})") from None
    labels = data.get("labels", {}) if isinstance(data, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("classes", []), list) and isinstance(labels, dict)
            and all(isinstance(v, list) and all(type(x) is int for x in v) for v in labels.values())):
        raise DataError(f"{path}: expected {{\"classes\": [names...], \"labels\": {{shard: [labels...]}}}} with "
                        "integer labels: write the shards again")
    return data


@dataclass(frozen=True)
class SplitShards:
    """The shards one split key selects, and the split name it gave when it was a plain name."""

    shards: list[Path]
    name: str | None  # `train` for data.train_split=train; None for a glob, one .tar or a list file


def split_shards(root: str | Path, train_split: str, eval_split: str) -> tuple[Path, list[Path], list[Path]]:
    """(the folder the class map sits in, training shards, validation shards) that data.root and the split keys name."""
    base, train, val = select_splits(root, train_split, eval_split)
    return base, train.shards, val.shards


def select_splits(root: str | Path, train_split: str, eval_split: str) -> tuple[Path, SplitShards, SplitShards]:
    """split_shards, with the split name each key gave when it was a plain name."""
    root = Path(root).expanduser()
    if _is_pattern(str(root)) or str(root).endswith(".txt"):
        base, train_spec = root.parent, str(root)
        if eval_split == "auto":
            raise DataError(f"data.eval_split: data.root is a glob or list of training shards ({root}); "
                            "name the validation shards too (a name, glob or list file beside them)")
    elif root.is_dir():
        base, train_spec = root, train_split
    else:
        raise DataError(f"data.root: {root} is not a folder of shards, a glob or a .txt list of shards")
    if (base / INCOMPLETE).exists() and not (base / CLASS_MAP).exists():
        raise DataError(f"{base}: incomplete: the writer did not finish; rerun it (python -m pipeline.data.shards "
                        f"... {base})")

    def selected(spec: str, key: str) -> SplitShards:
        plain = not (_is_pattern(spec) or spec.endswith((".txt", ".tar")))
        return SplitShards(find_shards(base, spec, key), spec if plain else None)

    train = selected(train_spec, "data.train_split")
    if eval_split != "auto":
        return base, train, selected(eval_split, "data.eval_split")
    for name in EVAL_SPLIT_CANDIDATES:
        found = _named_shards(base, name)
        if found:
            return base, train, SplitShards(found, name)
    raise DataError(f"{base}: no validation shards (looked for {', '.join(EVAL_SPLIT_CANDIDATES)}-*.tar "
                    "and sub-folders); set data.eval_split")


def check_record(base: Path, class_map: dict, splits: Sequence[SplitShards]) -> None:
    """Refuse shards the folder's completion record does not describe (a folder the writer did not finish is
    refused before, by select_splits)."""
    listed = class_map.get("labels")
    if not listed:
        return  # shards from elsewhere: no record to hold them to
    unlisted = sorted({str(p) for split in splits for p in split.shards if p.name not in listed})
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" (and {len(unlisted) - 5} more)" if len(unlisted) > 5 else "")
        raise DataError(f"{base / CLASS_MAP} does not list {shown}: left by another write? Remove them, or write the "
                        "shards again (python -m pipeline.data.shards replaces a folder's shards)")
    for split in splits:
        if split.name is None:
            continue  # a glob or list file may select a part of the split on purpose
        present = {p.name for p in split.shards}
        missing = sorted(n for n in listed if n.startswith(f"{split.name}-") and n not in present)
        if missing:
            raise DataError(f"{base / CLASS_MAP} lists {len(missing)} {split.name} shard(s) that are missing, e.g. "
                            f"{base / missing[0]}: restore them, or write the shards again")


def list_webdataset(root: str | Path, train_split: str, eval_split: str,
                    max_member_bytes: int = MAX_MEMBER_BYTES) -> tuple[ShardSplit, ShardSplit, list[str]]:
    """The training and validation samples of the shards `data.root` and the split keys name, and the class names."""
    base, train_shards, eval_shards = select_splits(root, train_split, eval_split)
    class_map = read_class_map(base)
    check_record(base, class_map, (train_shards, eval_shards))
    train, val = (ShardSplit(*list_split(split.shards, class_map, max_member_bytes))
                  for split in (train_shards, eval_shards))
    for split, selected in ((train, train_shards), (val, eval_shards)):
        if not len(split.labels):
            shown = ", ".join(map(str, selected.shards[:3])) + (", ..." if len(selected.shards) > 3 else "")
            raise DataError(f"{shown}: no samples in these shards")
    classes = [str(c) for c in class_map.get("classes", [])]
    if not classes:
        classes = [str(i) for i in range(int(max(train.labels.max(), val.labels.max())) + 1)]
    for split in (train, val):
        bad = np.flatnonzero((split.labels < 0) | (split.labels >= len(classes)))
        if len(bad):
            raise DataError(f"{split.members.name(int(bad[0]))}: label {split.labels[bad[0]]} is outside the "
                            f"{len(classes)} classes" + (f" of {base / CLASS_MAP}" if class_map else ""))
    return train, val, classes
