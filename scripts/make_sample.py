"""Build data/cifar10-sample.tar.gz: a small, class-balanced, real CIFAR-10 subset for the quickstart.

    .venv/bin/python scripts/make_sample.py [../shared/data/cifar10-jpeg.tar.gz] [data/cifar10-sample.tar.gz]

Takes the first 500 training and the first 100 test images of every class (sorted file names) from
the full CIFAR-10 JPEG archive and writes them, bytes unchanged, as an image-folder tree
(`train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg`) in one gzip'd tar. The output is byte-for-byte
reproducible: sorted members, zeroed times and owners, gzip header without a timestamp.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_OUTPUT = ROOT / "data" / "cifar10-sample.tar.gz"
PER_CLASS = {"train": 500, "test": 100}


def select_members(source: Path) -> dict[str, bytes]:
    """`{"train/cat/0000.jpg": jpeg bytes, ...}`: the first PER_CLASS[split] files of each class."""
    by_folder: dict[tuple[str, str], list[tarfile.TarInfo]] = defaultdict(list)
    with tarfile.open(source, "r:*") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for name, member in members.items():
            parts = Path(name).parts  # cifar10/<split>/<class>/<file>
            if len(parts) >= 3 and parts[-3] in PER_CLASS:
                by_folder[(parts[-3], parts[-2])].append(member)
        chosen: dict[str, bytes] = {}
        for (split, cls), files in sorted(by_folder.items()):
            files.sort(key=lambda m: m.name)
            if len(files) < PER_CLASS[split]:
                raise SystemExit(f"{source}: {split}/{cls} has only {len(files)} files")
            for m in files[: PER_CLASS[split]]:
                chosen[f"{split}/{cls}/{Path(m.name).name}"] = tar.extractfile(m).read()
    return chosen


def write_archive(files: dict[str, bytes], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    with open(output, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="", compresslevel=9) as gz:
        gz.write(raw.getvalue())


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUTPUT
    if not source.is_file():
        raise SystemExit(f"{source}: not found (the full CIFAR-10 JPEG archive)")
    files = select_members(source)
    write_archive(files, output)
    print(f"wrote {output}: {len(files)} images, {output.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
