"""CIFAR-10 download over real HTTP on 127.0.0.1 by four processes at once: one download, the same arrays.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.download import ArchiveServer

from pipeline.data.sources.cifar10 import CIFAR10_ARCHIVE
from runs import REPO, run_env

# Each process waits for `go` after its imports, so all of them reach the download together.
DRIVER = """
import sys, time
from pathlib import Path
import numpy as np
from pipeline.data.sources import cifar10

url, md5, root, ready, go, out = sys.argv[1:]
cifar10.CIFAR10_URL, cifar10.CIFAR10_MD5 = url, md5
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
train, test = cifar10.load_cifar10(root, download=True, verify_checksums=False)  # the served archive is made here
np.savez(out, train_x=train.arrays, train_y=train.labels, test_x=test.arrays, test_y=test.labels)
"""


def wait_all(paths: list[Path], procs: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "processes did not start in time"
        time.sleep(0.01)


@pytest.mark.slow
def test_four_processes_download_once_and_read_the_same_arrays(tmp_path, archive_bytes):
    root = tmp_path / "data"  # does not exist yet: the first process creates it
    md5 = hashlib.md5(archive_bytes).hexdigest()
    go = tmp_path / "go"
    with ArchiveServer(archive_bytes, delay_s=1.0) as server:
        procs, ready, outs = [], [], []
        for i in range(4):
            ready.append(tmp_path / f"ready{i}")
            outs.append(tmp_path / f"arrays{i}.npz")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", DRIVER, server.url, md5, str(root), str(ready[i]), str(go), str(outs[i])],
                cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        wait_all(ready, procs)
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-3000:]
        assert server.gets == 1, f"{server.gets} downloads of the archive"

    arrays = [np.load(out) for out in outs]
    for other in arrays[1:]:
        for key in ("train_x", "train_y", "test_x", "test_y"):
            np.testing.assert_array_equal(arrays[0][key], other[key])
    assert arrays[0]["train_x"].shape == (30, 32, 32, 3) and arrays[0]["test_y"].shape == (10,)
    assert sorted(p.name for p in root.iterdir()) == [f".{CIFAR10_ARCHIVE}.lock", CIFAR10_ARCHIVE]
    assert hashlib.md5((root / CIFAR10_ARCHIVE).read_bytes()).hexdigest() == md5

