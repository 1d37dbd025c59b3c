"""SHA-1 digests of files and listings: what the sources' fingerprints are made of (resolved/data_fingerprint).

    file_sha1(path)                       # the file's bytes
    files_sha1(paths, extra)              # `name<TAB>size` per file (listed, not read), then the bytes of `extra`
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha1(paths: list[Path], extra: list[Path]) -> str:
    """SHA-1 of `name<TAB>size` per file of `paths`, then the bytes of each file in `extra`."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(f"{path.name}\t{path.stat().st_size}\n".encode())
    for path in extra:
        digest.update(file_sha1(path).encode())
    return digest.hexdigest()
