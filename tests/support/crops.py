"""Images as ImageNet holds them (grayscale, CMYK, progressive, PNG named .JPEG, EXIF-rotated, very large,
smaller than the crop), for the crop tests and the shard tests.
"""

from __future__ import annotations

import io

import numpy as np
from conftest import smooth_image


def encoded(img, fmt="JPEG", mode=None, orientation=None, **save) -> bytes:
    from PIL import Image

    pil = Image.fromarray(img)
    if mode:
        pil = pil.convert(mode)
    if orientation:
        exif = pil.getexif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **save)
    return buf.getvalue()


def odd_images() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """Each kind ImageNet holds: (encoded bytes, (height, width) as displayed)."""
    rng = np.random.default_rng(0)
    rgb = smooth_image(rng, 64)[:48]  # 48 x 64
    large = np.ascontiguousarray(np.kron(smooth_image(rng, 40), np.ones((80, 80, 1), np.uint8))[:2400])  # 2400 x 3200
    return {
        "baseline": (encoded(rgb, quality=95), (48, 64)),
        "grayscale": (encoded(rgb, mode="L", quality=95), (48, 64)),
        "cmyk": (encoded(rgb, mode="CMYK", quality=95), (48, 64)),
        "progressive": (encoded(rgb, quality=95, progressive=True), (48, 64)),
        "png-named-jpeg": (encoded(rgb, fmt="PNG"), (48, 64)),
        "png-with-alpha": (encoded(np.dstack([rgb, np.full((48, 64), 128, np.uint8)]), fmt="PNG"), (48, 64)),
        "exif-rotated-90": (encoded(rgb, orientation=6, quality=95), (64, 48)),
        "exif-rotated-180": (encoded(rgb, orientation=3, quality=95), (48, 64)),
        "exif-rotated-270": (encoded(rgb, orientation=8, quality=95), (64, 48)),
        "several-thousand-px": (encoded(large, quality=90), (2400, 3200)),
        "smaller-than-the-crop": (encoded(rgb[:12, :20], quality=95), (12, 20)),
    }


ODD = odd_images()


def pillow_rgb(data: bytes) -> np.ndarray:
    from PIL import Image, ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
