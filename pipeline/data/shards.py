"""Pack an image folder into tar shards in the webdataset layout, with DALI index files and a class map.

    python -m pipeline.data.shards SRC_FOLDER OUT_DIR [--shard-size 1000] [--workers N] [--seed 0]
                                   [--max-side N [--quality 90]]
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
- `--max-side N`: an image whose longer side (as decoded: EXIF orientation applied) exceeds N px
  is resized once, here, to N on that side (Pillow: JPEG draft decoding to about twice the size,
  then Lanczos) and stored as a JPEG of `--quality` (`<key>.jpg`, orientation baked in); smaller
  ones stay as they are. The FFCV ImageNet recipes' `max_resolution`: photographs of 12 MP decoded
  whole at every step cost the loader most of its time.
- Parallel: one shard per task on `--workers` processes, with a progress bar. A worker is killed
  by the kernel when the writer dies (Linux `PR_SET_PDEATHSIG`): a killed writer leaves none.
- Replaces, and records completion: a write first marks OUT_DIR `INCOMPLETE`, removes the
  previous write's record (`classes.json`) and the shards and index files of the splits it
  writes (a rerun with another `--shard-size` leaves no old shard behind), writes every shard,
  then `classes.json` last and removes the mark. Each file goes through pipeline/files.py (a
  temporary name, fsync, rename, folder fsync). The reader refuses a folder with the mark and no
  record ("incomplete: the writer did not finish"), and shards the record does not list; running
  the same command again finishes the job. Files the writer does not name are left alone.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import json
import os
import re
import signal
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.data.images import image_size, pillow_reason
from pipeline.data.image_set import ImageSet
from pipeline.data.sources.imagefolder import load_imagefolder
from pipeline.data.webdataset import CLASS_MAP, INCOMPLETE, LABEL_EXTENSION, Member, format_index, index_path
from pipeline.errors import BadImageError, UserError
from pipeline.files import atomic_open, atomic_write_bytes, atomic_write_text, fsync_dir, is_temporary

TAR_BLOCK = 512
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")  # keys: no dots (they end a key), no spaces (the index splits on them)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
DEFAULT_QUALITY = 90  # FFCV's default JPEG quality for the images it re-encodes


@dataclass(frozen=True)
class Sample:
    key: str  # member name without extension
    ext: str  # the image member's extension
    source: str | bytes  # a file path, or the encoded bytes (image folders packed in an archive)
    label: int
    name: str  # where it came from, for errors (a path, or archive:member)


@dataclass(frozen=True)
class Shrink:
    """--max-side / --quality: images longer than `max_side` px are stored resized, as JPEGs of `quality`."""

    max_side: int  # px; 0 = store every image as it is
    quality: int = DEFAULT_QUALITY


def shrink_image(data: bytes, name: str, shrink: Shrink) -> bytes | None:
    """A JPEG of the image at `shrink.max_side` px on its longer side, or None when it is not longer.

    The size comes from the header first (no decode for images that stay). The decoded frame is
    DALI's: EXIF orientation applied (`exif_transpose`) and not stored again, alpha dropped, CMYK
    and palettes converted to RGB, grayscale kept. JPEG sources decode in draft mode (libjpeg's
    DCT scaling) to at least twice the target, then Lanczos does the rest, as Pillow's thumbnail().
    """
    from PIL import Image, ImageOps

    height, width = image_size(data, name)
    if max(height, width) <= shrink.max_side:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            raw_w, raw_h = img.size  # before the EXIF rotation, which does not change the longer side
            scale = shrink.max_side / max(raw_w, raw_h)
            img.draft("RGB" if img.mode in ("RGB", "YCbCr") else None,
                      (int(2 * raw_w * scale), int(2 * raw_h * scale)))  # JPEG only; others ignore it
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            scale = shrink.max_side / max(img.size)
            target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            out = io.BytesIO()
            img.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0).save(out, "JPEG", quality=shrink.quality)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise BadImageError(f"{name}: cannot resize for --max-side ({pillow_reason(exc, data)})") from None
    return out.getvalue()


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
        samples.append(Sample(keys[i], ext, source, int(images.labels[i]), images.names[i]))
    return [samples[at:at + shard_size] for at in range(0, len(samples), shard_size)]


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = size, 0o644, 0, 0, 0
    info.uname = info.gname = ""
    return info


def _write_tar(fh: BinaryIO, tar_samples: list[Sample], shrink: Shrink) -> tuple[list[list[Member]], int]:
    """Write a tar of `tar_samples` into `fh`; returns each sample's members with their data offsets, and how
    many images were resized."""
    index: list[list[Member]] = []
    resized = 0
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in tar_samples:
            image = sample.source if isinstance(sample.source, bytes) else Path(sample.source).read_bytes()
            ext = sample.ext
            smaller = shrink_image(image, sample.name, shrink) if shrink.max_side else None
            if smaller is not None:
                image, ext, resized = smaller, "jpg", resized + 1
            members = []
            for ext, payload in ((ext, image), (LABEL_EXTENSION, str(sample.label).encode())):
                name = f"{sample.key}.{ext}"
                members.append(Member(name, tar.offset + TAR_BLOCK, len(payload)))  # one USTAR header block
                tar.addfile(_member(name, len(payload)), io.BytesIO(payload))
            index.append(members)
    return index, resized


def write_shard(path: Path, samples: list[Sample], shrink: Shrink = Shrink(0)) -> tuple[str, list[int], int]:
    """One shard and then its index file; returns (shard name, labels in member order, images resized)."""
    index_path(path).unlink(missing_ok=True)  # never pair a new shard with an old index
    with atomic_open(path) as fh:
        index, resized = _write_tar(fh, samples, shrink)
    atomic_write_bytes(index_path(path), format_index(index).encode())
    return path.name, [s.label for s in samples], resized


def die_with_parent(parent: int) -> None:
    """Pool initializer: the kernel kills this worker when the writer dies (a SIGKILL'd writer cannot stop
    its pool itself, and an orphaned worker blocks on its pipe forever holding its shard in memory)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the writer died before the request took effect
        os._exit(1)


def own_files(out: Path, splits: set[str]) -> list[Path]:
    """The files of `out` a write of `splits` replaces: their shards and index files, and temporary files."""
    pattern = re.compile(rf"({'|'.join(map(re.escape, sorted(splits)))})-\d+\.(tar|idx)")
    return sorted(p for p in out.iterdir() if is_temporary(p) or pattern.fullmatch(p.name))


def previous_splits(out: Path) -> set[str]:
    """The splits the folder's completion record names (a rewrite removes their shards too), if it is readable."""
    try:
        return set(json.loads((out / CLASS_MAP).read_text()).get("splits", {}))
    except (OSError, ValueError, AttributeError):
        return set()


def start_write(out: Path, splits: set[str]) -> None:
    """Mark `out` incomplete, then remove the previous record and every file this write replaces.

    In this order a reader meets either the previous record with its shards untouched, or the mark
    without a record (refused as incomplete), never a record beside shards it does not describe."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / INCOMPLETE, "python -m pipeline.data.shards is writing this folder, or was stopped "
                                        "before it finished: run it again.\n")
    splits = splits | previous_splits(out)
    (out / CLASS_MAP).unlink(missing_ok=True)
    for path in own_files(out, splits):
        path.unlink()
    fsync_dir(out)


def finish_write(out: Path, record: dict) -> None:
    """The completion record last (atomic), then the mark goes."""
    atomic_write_bytes(out / CLASS_MAP, json.dumps(record).encode())
    (out / INCOMPLETE).unlink()
    fsync_dir(out)


def write_shards(src: Path, out: Path, *, shard_size: int, workers: int, seed: int, train_split: str = "train",
                 eval_split: str = "auto", eval_labels: str = "", eval_label_map: str = "",
                 shrink: Shrink = Shrink(0), progress: bool = True) -> dict:
    """Pack both splits of `src`, replacing what a previous write left in `out`; returns the completion
    record written to out/classes.json."""
    from tqdm import tqdm

    train, val = load_imagefolder(src, train_split, eval_split, eval_labels, eval_label_map)
    # The split's folder name: above the file in a flat folder, above its class folder otherwise.
    eval_name = eval_split if eval_split != "auto" else source_path(val, 0).parents[0 if eval_labels else 1].name
    start_write(out, {train_split, eval_name})
    jobs, split_of = [], {}
    for s, (split, images, flat) in enumerate(((train_split, train, False), (eval_name, val, bool(eval_labels)))):
        for number, samples in enumerate(plan_shards(images, flat, shard_size, seed + s)):
            jobs.append((out / f"{split}-{number:06d}.tar", samples))
            split_of[jobs[-1][0].name] = split
    labels: dict[str, list[int]] = {}
    resized = {train_split: 0, eval_name: 0}
    with tqdm(total=len(train) + len(val), unit="img", desc=f"shards -> {out}", disable=not progress) as bar, \
            ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(write_shard, path, samples, shrink): len(samples) for path, samples in jobs}
        for future in as_completed(futures):
            name, shard_labels, shard_resized = future.result()
            labels[name] = shard_labels
            resized[split_of[name]] += shard_resized
            bar.update(futures[future])
    record = {"classes": train.classes, "labels": dict(sorted(labels.items())),
              "splits": {train_split: len(train), eval_name: len(val)}, "seed": seed, "shard_size": shard_size,
              "max_side": shrink.max_side, "quality": shrink.quality if shrink.max_side else None,
              "resized": resized}
    finish_write(out, record)
    return record


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
    parser.add_argument("--max-side", type=int, default=0,
                        help="resize images longer than this (px, longer side) once, to this; 0 = store as they are")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help=f"JPEG quality of the resized images (1-95; default {DEFAULT_QUALITY})")
    args = parser.parse_args(argv)
    if args.shard_size <= 0 or args.workers <= 0:
        parser.error("--shard-size and --workers must be positive")
    if args.max_side < 0 or not 1 <= args.quality <= 95:
        parser.error("--max-side must be 0 (off) or positive, --quality between 1 and 95")
    try:
        record = write_shards(args.src, args.out, shard_size=args.shard_size, workers=args.workers, seed=args.seed,
                              train_split=args.train_split, eval_split=args.eval_split,
                              eval_labels=args.eval_labels, eval_label_map=args.eval_label_map,
                              shrink=Shrink(args.max_side, args.quality))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name}: {n} images" for name, n in record["splits"].items())
    resized = (f"; {sum(record['resized'].values())} resized to {args.max_side} px (JPEG quality {args.quality})"
               if args.max_side else "")
    print(f"{args.out}: {len(record['labels'])} shards ({splits}), {len(record['classes'])} classes{resized}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
