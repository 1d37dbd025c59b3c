"""Write the CIFAR-10 JPEG tree that the CPU and GPU checks read, from the official CIFAR-10 archive.

    .venv/bin/python scripts/make_cifar_jpeg.py DIR OUT.tar.gz    # DIR holds cifar-10-python.tar.gz
    CIFAR_JPEG=OUT.tar.gz bash bench/cpu_check.sh                  # then the check reads it

`bench/cpu_check.sh` and `bench/device_check.sh` measure on a tarball of CIFAR-10 as one JPEG file per
image, which the development machines keep outside the repository; a clone makes its own here.
DIR/cifar-10-python.tar.gz is downloaded first when absent (163 MB, MD5-checked, as
`data.download=true` does). Every image of the archive (50,000 training, 10,000 test, 32x32) becomes a
baseline JPEG at quality 75 written by Pillow, in the layout the checks expect:
`cifar10/{train,test}/<class>/NNNN.jpg`, NNNN counting each class's images in archive order. The
development machines' copy was re-encoded from the same arrays at the same quality, so the work per
image is the same; the files are not byte-for-byte those, so figures made on one may differ from
BENCHMARKS.md's by the noise of a rerun, not more.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data.sources.cifar10 import load_cifar10  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

QUALITY = 75


def write_tree(root: Path, out: Path) -> dict[str, int]:
    """OUT.tar.gz from root/cifar-10-python.tar.gz (downloaded when absent): {split: images written}."""
    train, test = load_cifar10(root, download=True)
    counts = {}
    with tarfile.open(out, "w:gz") as tar:
        for split, images in (("train", train), ("test", test)):
            seen = [0] * len(images.classes)
            for pixels, label in zip(images.arrays, images.labels):
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=QUALITY)
                info = tarfile.TarInfo(f"cifar10/{split}/{images.classes[label]}/{seen[label]:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
                seen[label] += 1
            counts[split] = sum(seen)
    return counts


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    root, out = Path(argv[0]), Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        counts = write_tree(root, out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {counts['train']:,} training and {counts['test']:,} test images (JPEG quality {QUALITY})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
