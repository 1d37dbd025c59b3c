"""Pack an image folder into tar shards in the webdataset layout, with DALI index files and a class map.

    python -m pipeline.data.shards SRC_FOLDER OUT_DIR [--shard-size 1000] [--workers N] [--seed 0]
    python -m pipeline.data.shards /data/imagenet /data/imagenet-shards \\
        --eval-labels ILSVRC2012_validation_ground_truth.txt --eval-label-map synsets_by_id.txt

SRC_FOLDER is what `data.source: imagefolder` reads (train/<class>/..., a validation split with
class folders or flat with `--eval-labels`; a .tar/.tar.gz of such a tree works too). OUT_DIR
receives, per split, `<split>-000000.tar`, `<split>-000000.idx`, ... and one `classes.json`
(the class names and every shard's labels in member order), so that
`data.source=webdataset data.root=OUT_DIR` trains from it.

- Shuffled at write time: each split's samples are permuted (from `--seed`) before they are cut
  into shards, so every shard holds a random mix of classes. The reader then only needs to
  shuffle the shard order and a buffer (pipeline/data/sampler.py: ShardStreamBatches).
- Each sample is `<key>.<ext>` (the image file's bytes as they are, not re-encoded; ext its
  lower-case suffix) and `<key>.cls` (the class index as text); key = `<class>/<file stem>`
  (flat validation folders: the stem). Members carry no time stamps or owners: the same input
  gives byte-identical shards.
- Parallel: one shard per task on `--workers` processes, with a progress bar.
- Atomic: a shard is written under a hidden temporary name, fsync'ed and renamed into place; its
  index file is written the same way after it, and the class map last of all. A killed writer
  leaves complete shards (possibly without their index, which the reader then rebuilds from the
  tar headers) and no class map; a rerun cleans up the temporary files and writes everything again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.data.sources import ImageSet, load_imagefolder
from pipeline.data.webdataset import CLASS_MAP, LABEL_EXTENSION, Member, format_index, index_path
from pipeline.errors import UserError
from pipeline.files import atomic_open, atomic_write_bytes, is_temporary

TAR_BLOCK = 512
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")  # keys: no dots (they end a key), no spaces (the index splits on them)


@dataclass(frozen=True)
class Sample:
    key: str  # member name without extension
    ext: str  # the image member's extension
    source: str | bytes  # a file path, or the encoded bytes (image folders packed in an archive)
    label: int


def source_path(images: ImageSet, index: int) -> Path:
    """The sample's path: its file, or its member path inside an archive ("archive:member" names)."""
    return Path(images.files[index] if images.files is not None else images.names[index].rsplit(":", 1)[-1])


def sample_keys(images: ImageSet, flat: bool) -> list[str]:
    """`<class>/<stem>` (or `<stem>` for a flat folder) per sample, made safe and unique."""
    keys, seen = [], set()
    for index, label in enumerate(images.labels):
        stem = source_path(images, index).stem
        key = _UNSAFE.sub("_", stem if flat else f"{images.classes[label]}/{stem}")
        if len(key) > 80:  # USTAR names stop at 100 bytes
            key = key[:70] + "_" + hashlib.sha1(key.encode()).hexdigest()[:8]
        unique, n = key, 1
        while unique in seen:
            unique, n = f"{key}_{n}", n + 1
        seen.add(unique)
        keys.append(unique)
    return keys


def plan_shards(images: ImageSet, flat: bool, shard_size: int, seed: int) -> list[list[Sample]]:
    """The split's samples in a seeded random order, cut into shards of `shard_size`."""
    keys = sample_keys(images, flat)
    order = np.random.default_rng(seed).permutation(len(images))
    samples = []
    for i in order:
        ext = source_path(images, i).suffix.lower().lstrip(".") or "jpg"
        source = images.files[i] if images.files is not None else images.read_encoded(i).tobytes()
        samples.append(Sample(keys[i], ext, source, int(images.labels[i])))
    return [samples[at:at + shard_size] for at in range(0, len(samples), shard_size)]


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, 0, 0, 0
    info.uname = info.gname = ""
    return info


def _write_tar(fh: BinaryIO, tar_samples: list[Sample]) -> list[list[Member]]:
    """Write a tar of `tar_samples` into `fh`; returns each sample's members with their data offsets."""
    index: list[list[Member]] = []
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in tar_samples:
            image = sample.source if isinstance(sample.source, bytes) else Path(sample.source).read_bytes()
            members = []
            for ext, payload in ((sample.ext, image), (LABEL_EXTENSION, str(sample.label).encode())):
                name = f"{sample.key}.{ext}"
                members.append(Member(name, tar.offset + TAR_BLOCK, len(payload)))  # one USTAR header block
                tar.addfile(_member(name, len(payload)), io.BytesIO(payload))
            index.append(members)
    return index


def write_shard(path: Path, samples: list[Sample]) -> tuple[str, list[int]]:
    """One shard and then its index file; returns (shard name, labels in member order)."""
    index_path(path).unlink(missing_ok=True)  # never pair a new shard with an old index
    with atomic_open(path) as fh:
        index = _write_tar(fh, samples)
    atomic_write_bytes(index_path(path), format_index(index).encode())
    return path.name, [s.label for s in samples]


def clean_output(out: Path) -> None:
    """Remove a killed writer's temporary files and the class map (it is written again last)."""
    for tmp in filter(is_temporary, out.iterdir()):
        tmp.unlink()
    (out / CLASS_MAP).unlink(missing_ok=True)


def write_shards(src: Path, out: Path, *, shard_size: int, workers: int, seed: int, train_split: str = "train",
                 eval_split: str = "auto", eval_labels: str = "", eval_label_map: str = "",
                 progress: bool = True) -> dict:
    """Pack both splits of `src`; returns the class map written to out/classes.json."""
    from tqdm import tqdm

    train, val = load_imagefolder(src, train_split, eval_split, eval_labels, eval_label_map)
    # The split's folder name: above the file in a flat folder, above its class folder otherwise.
    eval_name = eval_split if eval_split != "auto" else source_path(val, 0).parents[0 if eval_labels else 1].name
    out.mkdir(parents=True, exist_ok=True)
    clean_output(out)
    jobs = []
    for s, (split, images, flat) in enumerate(((train_split, train, False), (eval_name, val, bool(eval_labels)))):
        for number, samples in enumerate(plan_shards(images, flat, shard_size, seed + s)):
            jobs.append((out / f"{split}-{number:06d}.tar", samples))
    labels: dict[str, list[int]] = {}
    with tqdm(total=len(train) + len(val), unit="img", desc=f"shards -> {out}", disable=not progress) as bar, \
            ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(write_shard, path, samples): len(samples) for path, samples in jobs}
        for future in as_completed(futures):
            name, shard_labels = future.result()
            labels[name] = shard_labels
            bar.update(futures[future])
    class_map = {"classes": train.classes, "labels": dict(sorted(labels.items())),
                 "splits": {train_split: len(train), eval_name: len(val)}, "seed": seed}
    atomic_write_bytes(out / CLASS_MAP, json.dumps(class_map).encode())
    return class_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data.shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="image folder (train/<class>/..., val/...), or a .tar/.tar.gz of one")
    parser.add_argument("out", type=Path, help="output folder for the shards, index files and classes.json")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="writer processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the write-time shuffle (default 0)")
    parser.add_argument("--train-split", default="train", help="training sub-folder (default train)")
    parser.add_argument("--eval-split", default="auto", help="validation sub-folder (default: val, test or validation)")
    parser.add_argument("--eval-labels", default="", help="labels file of a flat validation folder (data.eval_labels)")
    parser.add_argument("--eval-label-map", default="", help="synset of ID 1, 2, ... (data.eval_label_map)")
    args = parser.parse_args(argv)
    if args.shard_size <= 0 or args.workers <= 0:
        parser.error("--shard-size and --workers must be positive")
    try:
        class_map = write_shards(args.src, args.out, shard_size=args.shard_size, workers=args.workers, seed=args.seed,
                                 train_split=args.train_split, eval_split=args.eval_split,
                                 eval_labels=args.eval_labels, eval_label_map=args.eval_label_map)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name}: {n} images" for name, n in class_map["splits"].items())
    print(f"{args.out}: {len(class_map['labels'])} shards ({splits}), {len(class_map['classes'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
