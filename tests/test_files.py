"""pipeline/files.py: an atomic write replaces the file whole or leaves it as it was, and leaves no temporary file."""

from __future__ import annotations

import os

import pytest

from pipeline.files import atomic_copy, atomic_open, atomic_write_text, is_temporary, temporary_name


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["summary.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path) as fh:
            fh.write(b"half of a new one")
            assert temporary_name(path).exists() and is_temporary(temporary_name(path))
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_copy(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 3_000_000)
    atomic_copy(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"x" * 3_000_000
    assert not is_temporary(tmp_path / "b")
