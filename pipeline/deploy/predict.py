"""python -m pipeline.predict MODEL PATH... [--topk 5] [--format table|csv|jsonl] [--weights ema|raw]

MODEL: a run directory (its best.pt, else last.pt), a checkpoint, a quoted glob of runs (the newest), or
an exported .onnx (python -m pipeline.export; its metadata says the classes and the eval transform).
PATH: image files, folders (searched recursively for image files), or tar shards (.tar, .tar.gz: every
image member). Each image is decoded, resized and cropped by the project's DALI eval graph with the
model's own eval transform, then classified: one row per image on stdout, the path then the top-k
class names with their probabilities (softmax of the logits).

Every file is decoded once up front (Pillow, as data.check_images does): files that do not decode are
listed apart on stderr with the reason, the others are still classified, and the exit status is 2.
Exit status: 0 every image classified; 2 a bad model or path (one line naming it), or undecodable files.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.images import IMAGE_EXTENSIONS, find_bad_images
from pipeline.data.sources import ImageSet
from pipeline.deploy.runtime import eval_images
from pipeline.deploy.source import Classifier, open_classifier, resolve_model_path
from pipeline.entry import print_user_error
from pipeline.errors import DataError, ExitCode, UserError

log = logging.getLogger("pipeline")

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="run directory, checkpoint, quoted glob of runs, or .onnx")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, tar shards")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--format", choices=("table", "csv", "jsonl"), default="table", help="output (default table)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="a checkpoint's EMA weights (its raw ones when it has none; default) or raw ones")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        parser.error("--topk and --batch-size must be positive")
    return args


def image_sets(paths: list[str]) -> list[ImageSet]:
    """The images PATH arguments name: files on disk as one set (in the order given), each tar as its own."""
    files: list[str] = []
    sets: list[ImageSet] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not p.name.startswith("."))
            if not found:
                raise DataError(f"{path}: no image files in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += found
        elif path.is_file() and path.name.endswith(TAR_SUFFIXES):
            sets.append(tar_images(path))
        elif path.is_file():
            files.append(str(path))
        else:
            raise DataError(f"{path}: no such file or folder")
    if files:
        sets.insert(0, ImageSet(names=files, labels=np.zeros(len(files), np.int64), classes=[], files=files))
    return sets


def tar_images(path: Path) -> ImageSet:
    """Every image member of a tar shard, read into memory (names: shard:member)."""
    names, data = [], []
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS:
                    names.append(f"{path}:{member.name}")
                    data.append(np.frombuffer(tar.extractfile(member).read(), np.uint8))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the tar file ({' '.join(str(exc).split())})") from None
    if not names:
        raise DataError(f"{path}: no image members in this tar file")
    return ImageSet(names=names, labels=np.zeros(len(names), np.int64), classes=[], encoded=data)


def decodable(images: ImageSet) -> tuple[ImageSet, list[str]]:
    """The images Pillow decodes, and "name: reason" for the others."""
    bad = find_bad_images(range(len(images)), images.read_encoded, list(images.names))
    if not bad:
        return images, []
    keep = np.setdiff1d(np.arange(len(images)), [i for i, _ in bad])
    return images.subset(keep), [reason for _, reason in bad]


def classify(model: Classifier, images: ImageSet, batch_size: int, topk: int, progress: Any) -> list[dict[str, Any]]:
    """One row per image, in order: its name and the top-k (class, probability)."""
    rows, names = [], list(images.names)
    data_cfg = DataConfig(num_threads=2, cache="off")
    for batch, _ in eval_images(data_cfg, images, model.transform, batch_size):
        logits = model.run(np.ascontiguousarray(batch.numpy())).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
        for i in range(len(top)):
            rows.append({"path": names[len(rows)], "top": [(model.classes[j], float(probs[i, j])) for j in top[i]]})
        progress.update(len(top))
    return rows


def write_rows(rows: list[dict[str, Any]], fmt: str, topk: int, out: Any) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({"path": row["path"], "top": [{"class": c, "probability": round(p, 6)}
                                                                 for c, p in row["top"]]}) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", *[f"{kind}{k}" for k in range(1, topk + 1) for kind in ("class", "probability")]])
        for row in rows:
            writer.writerow([row["path"], *[v for c, p in row["top"] for v in (c, f"{p:.6f}")]])
    else:
        width = max((len(r["path"]) for r in rows), default=4)
        for row in rows:
            out.write(f"{row['path']:<{width}}  " + "  ".join(f"{c} {100 * p:5.1f}%" for c, p in row["top"]) + "\n")


def predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    model = open_classifier(resolve_model_path(args.model), args.weights)
    for note in model.notes:
        log.info("%s: %s", model.path.name, note)
    sets = image_sets(args.paths)
    failed: list[str] = []
    checked = []
    for images in sets:
        good, bad = decodable(images)
        failed += bad
        if len(good):
            checked.append(good)
    rows: list[dict[str, Any]] = []
    total = sum(len(s) for s in checked)
    with tqdm(total=total, unit="img", file=sys.stderr, disable=None if total > 2 * args.batch_size else True,
              desc="classifying") as progress:
        for images in checked:
            rows += classify(model, images, args.batch_size, args.topk, progress)
    write_rows(rows, args.format, args.topk, sys.stdout)
    sys.stdout.flush()
    if failed:
        print(f"predict: {len(failed)} file(s) not classified (they do not decode):", file=sys.stderr)
        for reason in failed:
            print(f"  {reason}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    return int(ExitCode.OK)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pipeline.runs.rundir import setup_logging

    setup_logging(0)
    try:
        return predict(args)
    except UserError as exc:
        print_user_error(exc, "predict error")
        return int(ExitCode.BAD_INPUT)
