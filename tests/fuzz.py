"""Shared parts of the bad-input properties (tests/test_fuzz_*.py): case counts, odd values, bad bytes, checks.

Every property says how many cases it runs per CI run (`cases(n)`): the ci profile (tests/conftest.py)
runs exactly those, the same ones every time; HYPOTHESIS_PROFILE=explore runs EXPLORE_FACTOR times as
many, new ones each run:

    HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest -n 0 tests/fuzz/test_fuzz_config.py

A failure prints the smallest case Hypothesis found; add it to the property as an `@example` with the
fix, so that it stays covered.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import struct
import tempfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

EXPLORE_FACTOR = 20
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


def cases(per_ci_run: int) -> settings:
    """The settings of a property that runs `per_ci_run` cases in CI (EXPLORE_FACTOR times as many to explore)."""
    return settings(max_examples=per_ci_run * (EXPLORE_FACTOR if PROFILE == "explore" else 1))


def assert_one_line(message: str, names: list[str] | tuple[str, ...]) -> None:
    """An error a user reads: one line that names at least one of `names` (the key or file at fault)."""
    assert message and "\n" not in message and "Traceback" not in message, message
    assert any(name in message for name in names), f"names none of {names[:8]}...: {message}"


class Scratch:
    """A module's folder in the temp dir (removed at exit) that hands out one folder per case: the next case's
    removes the last one's, so thousands of cases (3 MB checkpoints among them) never pile up."""

    def __init__(self, prefix: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.current: Path | None = None
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def case(self, name: str) -> Path:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
        self.current = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return self.current


def folder_digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (what a refusal must leave as it was)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- odd YAML values

# Values as a user might type them after `key=` or in a YAML file: YAML 1.1's surprises (yes/off/~,
# sexagesimal, octal, dates), non-finite and huge numbers, broken flow collections, tags (python ones
# included: safe_load must refuse them), anchors, directives, control characters, digits of other scripts.
ODD_YAML = (
    "", " ", "~", "null", "NULL", "yes", "no", "on", "off", "Off", "y", "n", "true", "FALSE",
    ".inf", "-.inf", ".nan", ".NaN", "inf", "-inf", "nan", "1e400", "1.0e+400", "-1.0e+400", "1.0e-400", "-0.0",
    "0x1F", "0o17", "017", "0b101", "1_000", "1:30", "190:20:30", "1,000", "+1", "0.", ".5", "1e3", "1.5e3",
    "2026-12-07", "2026-13-45", "2026-02-30", "0000-00-00", "2026-12-07T25:61:00", "2026-12-07 10:00:00 +99:00",
    "[", "]", "[1,2", "[1, [2, [3]]]", "[[]]", "[{}]", "{", "{a: 1}", "{a", "[.inf, .nan]", "[1e400]", "[yes, no]",
    "'", '"', "'unterminated", '"a\\x"', "'a''b'",
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGVsbG8=", "!!set {a, b}",
    "!!omap [a: 1]", "!!timestamp 2026-13-45", "!!int abc", "!!float x", "!!bool maybe", "!!str 1", "!!null x",
    "&a 1", "*a", "&a [*a]", "|", ">", "|\n  text", "%YAML 1.1", "---", "...", "? a", "- 1", "-", ":", "a: b", "#",
    "@x", "`x`", "\t", "\x00", "\x07", "\x85", "\ufeff", "\u2028", "\ud800",
    "9" * 400, "-" + "9" * 400, "1" + "0" * 20, "18446744073709551616", "١٢", "²", "৩",
)


def render(value: object) -> str:
    """A Python value as a user types it on the command line (bare: strings unquoted, lists in brackets)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------- image bytes


def _encode(array: np.ndarray, fmt: str, mode: str | None = None, **params) -> bytes:
    from PIL import Image

    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


@cache
def valid_images() -> tuple[bytes, ...]:
    """Small valid files of every format the readers accept, in the modes and variants photographs come in."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoder turns it, and the header reader must say so
    found = [
        _encode(img(24, 24), "JPEG", quality=90),
        _encode(img(9, 17), "JPEG", progressive=True),
        _encode(img(8, 8), "JPEG", "L"),
        _encode(img(12, 12), "JPEG", "CMYK"),
        _encode(img(10, 20), "JPEG", exif=exif.tobytes()),
        _encode(img(1, 1), "JPEG"),
        _encode(img(24, 24), "PNG"),
        _encode(img(7, 5), "PNG", "RGBA"),
        _encode(img(3, 3), "PNG", "L"),
        _encode(img(6, 6), "PNG", "P"),
        _encode(img(4, 6), "BMP"),
        _encode(img(4, 4), "TIFF"),
    ]
    try:
        found.append(_encode(img(8, 8), "WEBP"))
    except (KeyError, OSError):  # a Pillow built without WebP
        pass
    return tuple(found)


def declare_size(data: bytes, height: int, width: int) -> bytes:
    """`data` with its header's size replaced (JPEG frame header, PNG IHDR with its CRC fixed); else unchanged."""
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        fields = struct.pack(">II", width, height) + data[24:29]  # IHDR: width, height, then 5 bytes
        return data[:16] + fields + struct.pack(">I", zlib.crc32(data[12:16] + fields)) + data[33:]
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]
    return data


NOT_IMAGES = (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", b"%PDF-1.4\n%\xe2\xe3", b"PK\x03\x04\x14\x00", b"hello\n",
              b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP")


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """The bytes of a file named like an image: a valid one, or one truncated, overwritten, spliced, declaring
    another (huge, zero) size, empty, or no image at all."""
    base = draw(st.sampled_from(valid_images()))
    kind = draw(st.sampled_from(("valid", "truncated", "overwritten", "inserted", "size", "empty", "other")))
    if kind == "valid":
        return base
    if kind == "truncated":
        return base[:draw(st.integers(1, len(base) - 1))]
    if kind == "overwritten":
        patch = draw(st.binary(min_size=1, max_size=16))
        at = draw(st.integers(0, len(base) - 1))
        return base[:at] + patch + base[at + len(patch):]
    if kind == "inserted":
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.binary(min_size=1, max_size=64)) + base[at:]
    if kind == "size":
        side = st.one_of(st.integers(0, 4), st.integers(14_000, 65_535))  # huge: over Pillow's bomb limit too
        return declare_size(base, draw(side), draw(side))
    if kind == "empty":
        return b""
    return draw(st.one_of(st.sampled_from(NOT_IMAGES), st.binary(max_size=256)))


IMAGE_NAME = st.builds(lambda stem, ext: stem + ext, st.text("abcxyz019_-", min_size=1, max_size=6),
                       st.sampled_from((".jpg", ".JPEG", ".png", ".bmp", ".tif", ".webp")))


# ------------------------------------------------------------------------------- pickles that run code


def code_running_pickles(marker: Path) -> tuple[bytes, ...]:
    """Pickles whose loading would create `marker`: each calls a different global (protocol 0 and 2 forms)."""
    path = str(marker)

    def call(module: str, name: str, arg: str) -> bytes:  # GLOBAL module.name, one text argument, REDUCE
        return f"c{module}\n{name}\n(V{arg}\ntR.".encode()

    class Touch:
        def __reduce__(self):
            return os.system, (f"touch {path}",)

    import pickle

    return (call("os", "system", f"touch {path}"), call("posix", "system", f"touch {path}"),
            call("builtins", "exec", f"open({path!r}, 'w').close()"),
            call("builtins", "eval", f"open({path!r}, 'w').close()"),
            call("subprocess", "getoutput", f"touch {path}"),
            pickle.dumps({"format_version": 3, "model": Touch()}, protocol=2),
            pickle.dumps({b"data": Touch(), b"labels": [1]}, protocol=4))
