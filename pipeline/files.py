"""Atomic file writes: readers see either the old file or the complete new one, never half of one.

    with atomic_open(run_dir / "last.pt") as fh:      # any binary writer
        torch.save(payload, fh)
    atomic_write_text(run_dir / "summary.json", text)
    atomic_copy(run_dir / "last.pt", run_dir / "best.pt")

Every file a user relies on (checkpoints, shards and their indexes, run records, downloads) goes
through `atomic_open`: the data is written to `.<name>.tmp-<pid>` beside the target, flushed and
fsync'ed, renamed over the target, and the folder is fsync'ed so the rename itself survives a power
loss. On any error the temporary file is removed and the target is untouched. The temporary name
is the one other code looks for (a killed writer's leftovers: `is_temporary`).

A full disk (or a quota, a file-size limit, a read-only file system) met while writing raises
`StorageError("cannot write PATH: No space left on device")`, whichever library's writer met it;
`storage_errors(path)` does the same for writes that append (metrics.jsonl).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import StorageError, UserError

TEMP_MARK = ".tmp-"
# What a write meets when the environment, not the data, is at fault.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def temporary_name(path: Path) -> Path:
    """Where `atomic_open` writes `path` before renaming it (one per process: writers never share one)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def is_temporary(path: Path) -> bool:
    """True for an `atomic_open` temporary file (a writer killed before its rename leaves one)."""
    return path.name.startswith(".") and TEMP_MARK in path.name


def _storage_cause(exc: BaseException) -> OSError | None:
    """The full-disk (quota, size limit, read-only) OSError behind `exc`, or None.

    torch's writer reports a failed write as `RuntimeError: [enforce fail at inline_container.cc]`
    whose context is the OSError the file raised, so the chain is searched."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def storage_errors(path: str | Path) -> Iterator[None]:
    """A full disk (quota, size limit, read-only file system) met in the block becomes a StorageError
    naming `path`; other errors pass unchanged."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        cause = _storage_cause(exc)
        if cause is None:
            raise
        raise StorageError(f"cannot write {path}: {cause.strerror}") from None


@contextmanager
def atomic_open(path: str | Path, mode: int | None = 0o644) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace `path` when the block ends without an error.

    `mode`: the new file's permissions (None keeps the process umask's default)."""
    path = Path(path)
    tmp = temporary_name(path)
    with storage_errors(path):
        try:
            with open(tmp, "wb") as fh:
                if mode is not None:
                    os.fchmod(fh.fileno(), mode)
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy `src` so that readers of `dst` see either the old `dst` or the complete copy."""
    with open(src, "rb") as source, atomic_open(dst) as fh:
        shutil.copyfileobj(source, fh, 1 << 20)


def fsync_dir(path: str | Path) -> None:
    """Make renames and removals in folder `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
