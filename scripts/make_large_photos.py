"""Write phone-sized photographs (about 12 MP) from an image folder of small ones, by upscaling.

    .venv/bin/python scripts/make_large_photos.py /tmp/data/flowers /tmp/data/flowers-12mp    # 4000 px, quality 90

`bench/max_side_check.sh` measures what `python -m pipeline.data.shards --max-side` saves on
photographs as phones take them (4000 x 3000, 12 MP). The photographs a clone can get are small
(TF-flowers: median 320 x 240), so each is upscaled (bicubic) until its longer side is
`--long-side` px and saved as a baseline JPEG of `--quality`, in the same layout
(`<split>/<class>/<name>.jpg`), EXIF orientation applied and not stored. An upscaled photograph
costs what a real 12 MP JPEG costs to decode (the decoder's work follows the pixel count and the
entropy-coded size, which is smaller here: the content is smooth), not what it holds: use these
for throughput, never for accuracy.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def enlarge(src: Path, dst: Path, long_side: int, quality: int) -> tuple[int, int]:
    """`src` upscaled to `long_side` px on its longer side, saved as a JPEG at `dst`; returns its (width, height)."""
    with Image.open(src) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        scale = long_side / max(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        dst.parent.mkdir(parents=True, exist_ok=True)
        img.resize(size, Image.Resampling.BICUBIC).save(dst, "JPEG", quality=quality)
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="image folder: <split>/<class>/<image>")
    parser.add_argument("out", type=Path, help="where the enlarged folder goes (same layout)")
    parser.add_argument("--long-side", type=int, default=4000, help="px of the longer side (default 4000)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.src.glob("*/*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"error: {args.src}: no <split>/<class>/<image> files", file=sys.stderr)
        return 2
    targets = [args.out / f.relative_to(args.src).with_suffix(".jpg") for f in files]
    with ProcessPoolExecutor(args.workers) as pool:
        sizes = list(pool.map(enlarge, files, targets, [args.long_side] * len(files), [args.quality] * len(files),
                              chunksize=8))
    megapixels = sorted(w * h / 1e6 for w, h in sizes)
    print(f"{args.out}: {len(files)} photographs, {megapixels[0]:.1f}-{megapixels[-1]:.1f} MP "
          f"(median {megapixels[len(megapixels) // 2]:.1f}), JPEG quality {args.quality}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
