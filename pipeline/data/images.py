"""Checks on encoded image files: a cheap signature test on every read, a full decode on demand.

DALI's decoders report a bad file as an opaque "nvImageCodec failure" and invalidate the pipeline.
So every file is checked cheaply as it is read (empty? a known image signature?), a decode failure
is traced back to the file with Pillow, and `data.check_images` can decode everything up front.
An image whose header announces more than `data.max_pixels` is refused before anything decodes it
(`pixel_problem`): the check here covers the up-front scan and the diagnosis, the DALI graph and
the readers apply it on the way to the decoder.
"""

from __future__ import annotations

import io
import re
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


def pixel_problem(height: int, width: int, max_pixels: int) -> str | None:
    """Why an image of this size is refused (more than `max_pixels`; 0 = no limit), or None."""
    if max_pixels and height * width > max_pixels:
        return (f"{width}x{height} pixels ({height * width / 1e6:.1f} MP) is over data.max_pixels ({max_pixels:,}; "
                "raise it to use such images)")
    return None


def check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    """Raise BadImageError naming `name` if an image of `size` (height, width) is over the pixel limit."""
    problem = pixel_problem(*size, max_pixels)
    if problem:
        raise BadImageError(f"{name}: {problem}")


def decode_problem(data: np.ndarray | bytes, max_pixels: int = 0) -> str | None:
    """Why Pillow cannot fully decode these bytes, or None if it can; an image over `max_pixels` (read
    from its header) is refused before it is decoded."""
    from PIL import Image

    if len(data) == 0:
        return "empty file (0 bytes)"
    if sniff_format(data) is None:
        return "not an image (no JPEG/PNG/BMP/TIFF/WebP signature)"
    if max_pixels:
        try:
            problem = pixel_problem(*image_size(data, ""), max_pixels)
        except BadImageError:
            problem = None  # no size in the header: the decode below says what is wrong
        if problem:
            return problem
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            img.load()  # decodes every pixel: catches truncation and corrupt entropy data
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        return f"cannot decode ({pillow_reason(exc, data)})"
    return None


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def pillow_reason(exc: Exception, data: np.ndarray | bytes) -> str:
    """Pillow's complaint in the user's terms: no object reprs (`<_io.BytesIO object at 0x...>`).

    Pillow cannot identify a file whose signature is right but whose header is not: say that."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return f"corrupt {sniff_format(data) or 'image'} header"
    return _OBJECT_REPR.sub("", str(exc)) or type(exc).__name__


def find_bad_images(indices: Iterable[int], read: Callable[[int], np.ndarray | bytes],
                    names: list[str], threads: int = 4, max_pixels: int = 0) -> list[tuple[int, str]]:
    """[(index, "name: reason")] for every sample among `indices` that Pillow cannot decode or that is
    over `max_pixels` (0 = no limit)."""

    def check(i: int) -> tuple[int, str] | None:
        try:
            data = read(i)
        except OSError as exc:
            return i, f"{names[i]}: cannot read ({exc.strerror or exc})"
        problem = decode_problem(data, max_pixels)
        return (i, f"{names[i]}: {problem}") if problem else None

    with ThreadPoolExecutor(max_workers=threads) as pool:  # Pillow decodes without the GIL
        return [r for r in pool.map(check, list(indices)) if r is not None]


REMOVE_OR_SKIP = " (remove them, or set data.check_images=skip to leave bad files out)"


def undecodable_error(problems: list[str], hint: str = "") -> BadImageError:
    """The one error for files that do not decode: how many, the first 20 ("name: reason"), a hint."""
    shown = "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
    return BadImageError(f"{len(problems)} undecodable image(s): {shown}{hint}")


# ------------------------------------------------------------------------------- image sizes

# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_EXIF_ORIENTATION = 0x0112


def _exif_orientation(b: memoryview, start: int, end: int) -> int:
    """The orientation tag (1-8) of the TIFF structure in an APP1 "Exif" segment; 1 if absent or unreadable."""
    if end - start < 8:
        return 1
    order = "little" if b[start:start + 2] == b"II" else "big"
    u16 = lambda at: int.from_bytes(b[at:at + 2], order)  # noqa: E731
    ifd = start + int.from_bytes(b[start + 4:start + 8], order)
    if ifd + 2 > end:
        return 1
    for entry in range(ifd + 2, min(ifd + 2 + 12 * u16(ifd), end - 11), 12):
        if u16(entry) == _EXIF_ORIENTATION:
            value = u16(entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_size(b: memoryview) -> tuple[int, int, int] | None:
    """(height, width, EXIF orientation) from a JPEG's markers, or None if no frame header is found."""
    i, n, orientation = 2, len(b), 1
    while i + 9 < n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = (b[i + 2] << 8) | b[i + 3]
        if marker in _SOF_MARKERS:
            return (b[i + 5] << 8) | b[i + 6], (b[i + 7] << 8) | b[i + 8], orientation
        if marker == 0xDA:  # the scan starts before any frame header: not a JPEG we can size
            return None
        if marker == 0xE1 and b[i + 4:i + 10] == b"Exif\x00\x00":
            orientation = _exif_orientation(b, i + 10, min(i + 2 + length, n))
        i += 2 + length
    return None


def image_size(data: np.ndarray | bytes, name: str) -> tuple[int, int]:
    """(height, width) of an encoded image as DALI's decoders output it: EXIF orientation applied.

    Read from the header without decoding: JPEG frame header (and its EXIF orientation tag), PNG
    IHDR; other formats through Pillow's header parse. A few microseconds for a JPEG, against
    ~150 us for `PIL.Image.open`. Raises BadImageError naming `name` if no size can be read.
    """
    b = memoryview(data).cast("B")
    size = None
    if b[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(b)
    elif b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        size = int.from_bytes(b[20:24], "big"), int.from_bytes(b[16:20], "big"), 1
    if size is None:
        size = _pillow_size(bytes(b), name)
    height, width, orientation = size
    if height <= 0 or width <= 0:
        raise BadImageError(f"{name}: image header gives a size of {width}x{height}")
    return (width, height) if orientation >= 5 else (height, width)  # 5-8 turn the image by 90 degrees


def _pillow_size(data: bytes, name: str) -> tuple[int, int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise BadImageError(f"{name}: cannot read the image size ({pillow_reason(exc, data)})") from None
    return height, width, orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
