"""A file downloaded once, however many processes ask for it at once, and only kept when its MD5 matches.

    download_once(url, root / "cifar-10-python.tar.gz", md5)   # DataError naming the URL when it fails
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import DataError
from pipeline.files import atomic_open

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60  # per socket operation, not for the whole file


def download_once(url: str, path: Path, md5: str) -> None:
    """Download `url` to `path` unless it is there, safely when many processes ask at once.

    Every rank of every node calls this at start-up. An exclusive lock on `.<name>.lock` beside
    `path` lets one process download while the others wait; they then find the finished file.
    The file is written under a temporary name in the same directory, its MD5 checked, and only
    then renamed into place, so `path` is either absent or complete and verified. Where the
    filesystem has no working flock (some shared filesystems, e.g. Lustre without `-o flock`),
    processes download side by side and the renames still leave one good file; download on one
    node before starting the others to avoid the repeated traffic.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        except OSError as exc:
            log.warning("%s: no file lock on this filesystem (%s); downloading without one",
                        path.parent, exc.strerror or exc)
        if not path.is_file():  # another process may have finished it while this one waited
            _download_verified(url, path, md5)


def _download_verified(url: str, path: Path, md5: str) -> None:
    """Stream `url` into a temporary file beside `path`, check its MD5, rename it into place."""
    by_hand = f"download it by hand to {path}"
    log.info("downloading %s to %s", url, path)
    digest = hashlib.md5()
    with atomic_open(path) as out:  # a failure below leaves no file: `path` is absent or complete and verified
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise DataError(f"cannot download {url} (HTTP {exc.code} {exc.reason}); {by_hand}") from None
        except urllib.error.URLError as exc:
            raise DataError(f"cannot download {url} ({exc.reason}); {by_hand}") from None
        except OSError as exc:  # connection reset, timeout, disk full
            raise DataError(f"cannot download {url} to {path.parent} ({exc.strerror or exc}); {by_hand}") from None
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: the download has MD5 {digest.hexdigest()}, expected {md5} "
                            f"(nothing was kept); {by_hand}")
