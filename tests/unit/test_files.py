"""pipeline/files.py: an atomic write replaces the file whole or leaves it as it was, and leaves no temporary file;
a full disk (here a file-size limit) is one StorageError naming the file; the run records a session rewrites use it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
from contextlib import contextmanager

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import StorageError
from pipeline.files import atomic_copy, atomic_open, atomic_write_text, is_temporary, temporary_name
from pipeline.runs.metrics import MetricsLog, read_metrics
from pipeline.runs.rundir import RunDir, save_run_config


@contextmanager
def file_size_limit(nbytes: int):
    """Files this process writes stop at `nbytes` (EFBIG), as with a full disk or a quota; restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


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


def test_a_write_that_meets_a_full_disk_names_the_file_whoever_wrote_it(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous checkpoint")
    with file_size_limit(100_000), pytest.raises(StorageError) as info:
        with atomic_open(path) as fh:
            torch.save({"w": torch.zeros(100_000)}, fh)  # torch reports it as a RuntimeError of its own
    assert str(info.value) == f"cannot write {path}: File too large"
    assert path.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["last.pt"]


def test_a_failed_rewrite_of_a_run_record_keeps_the_old_one_whole(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    history = "".join(json.dumps({"step": s, "train/loss": 1 / s, "note": "x" * 40}) + "\n" for s in range(1, 201))
    metrics.write_text(history)
    with file_size_limit(2000), pytest.raises(StorageError, match=f"^cannot write {metrics}: File too large$"):
        MetricsLog(metrics, enabled=True, clock=None).truncate_after(150)  # a resume drops what followed its checkpoint
    assert metrics.read_text() == history
    MetricsLog(metrics, enabled=True, clock=None).truncate_after(150)
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, 151))

    config = tmp_path / "config.yaml"  # rewritten when a run starts over in its directory
    config.write_text("the run's config")
    with file_size_limit(1000), pytest.raises(StorageError, match=f"^cannot write {config}: File too large$"):
        save_run_config(load_config().to_dict(), RunDir(tmp_path, created=False, lock=None), True, resumed=False)
    assert config.read_text() == "the run's config"
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "metrics.jsonl"]

