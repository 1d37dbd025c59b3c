"""Checks on encoded image files: a cheap signature test on every read, a full decode on demand.

DALI's decoders report a bad file as an opaque "nvImageCodec failure" and invalidate the pipeline.
So every file is checked cheaply as it is read (empty? a known image signature?), a decode failure
is traced back to the file with Pillow, and `data.check_images` can decode everything up front.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np

from pipeline.errors import BadImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# Leading bytes of the formats DALI's image decoder reads.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: np.ndarray | bytes) -> str | None:
    head = bytes(data[:12])
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def check_encoded(data: np.ndarray, name: str) -> None:
    """Raise BadImageError unless `data` looks like an image file (costs a few byte compares)."""
    if data.size == 0:
        raise BadImageError(f"{name}: empty file (0 bytes)")
    if sniff_format(data) is None:
        raise BadImageError(f"{name}: not an image (no JPEG/PNG/BMP/TIFF/WebP signature)")


def decode_problem(data: np.ndarray | bytes) -> str | None:
    """Why Pillow cannot fully decode these bytes, or None if it can."""
    from PIL import Image

    if len(data) == 0:
        return "empty file (0 bytes)"
    if sniff_format(data) is None:
        return "not an image (no JPEG/PNG/BMP/TIFF/WebP signature)"
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            img.load()  # decodes every pixel: catches truncation and corrupt entropy data
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"cannot decode ({exc})"
    return None


def find_bad_images(indices: Iterable[int], read: Callable[[int], np.ndarray | bytes],
                    names: list[str], threads: int = 4) -> list[tuple[int, str]]:
    """[(index, "name: reason")] for every sample among `indices` that Pillow cannot decode."""

    def check(i: int) -> tuple[int, str] | None:
        try:
            data = read(i)
        except OSError as exc:
            return i, f"{names[i]}: cannot read ({exc.strerror or exc})"
        problem = decode_problem(data)
        return (i, f"{names[i]}: {problem}") if problem else None

    with ThreadPoolExecutor(max_workers=threads) as pool:  # Pillow decodes without the GIL
        return [r for r in pool.map(check, list(indices)) if r is not None]
