"""CIFAR-10 download over real HTTP on 127.0.0.1: one download however many processes start at once,
verified by MD5 and renamed into place; a bad download or no server gives a one-line DataError."""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_cifar_archive
from pipeline.data.sources import cifar10
from pipeline.data.sources.cifar10 import CIFAR10_ARCHIVE
from pipeline.errors import DataError
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


class ArchiveServer:
    """Serves one file at /cifar-10-python.tar.gz from a thread, slowly, counting the GETs."""

    def __init__(self, payload: bytes, delay_s: float = 0.0) -> None:
        self.payload, self.delay_s, self.gets = payload, delay_s, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != f"/{CIFAR10_ARCHIVE}":
                    self.send_error(404)
                    return
                server.gets += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                half = len(server.payload) // 2
                self.wfile.write(server.payload[:half])
                self.wfile.flush()
                time.sleep(server.delay_s)  # mid-transfer: the others must be waiting by now
                self.wfile.write(server.payload[half:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/{CIFAR10_ARCHIVE}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ArchiveServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive_bytes(tmp_path) -> bytes:
    path = tmp_path / "served" / CIFAR10_ARCHIVE
    path.parent.mkdir()
    write_cifar_archive(path, n_train_per_batch=6, n_test=10)
    return path.read_bytes()


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


def test_wrong_md5_keeps_nothing_and_names_the_url(tmp_path, archive_bytes, monkeypatch):
    with ArchiveServer(archive_bytes) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_URL", server.url)
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
        with pytest.raises(DataError) as info:
            cifar10.load_cifar10(tmp_path / "data", download=True)
    message = str(info.value)
    assert server.url in message and "expected " + "0" * 32 in message
    assert f"download it by hand to {tmp_path / 'data' / CIFAR10_ARCHIVE}" in message
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f".{CIFAR10_ARCHIVE}.lock"]


def test_no_server_is_a_one_line_error_naming_the_url_and_path(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/{CIFAR10_ARCHIVE}"
    monkeypatch.setattr(cifar10, "CIFAR10_URL", url)
    with pytest.raises(DataError) as info:
        cifar10.load_cifar10(tmp_path / "data", download=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download {url} (") and "refused" in message
    assert message.endswith(f"download it by hand to {tmp_path / 'data' / CIFAR10_ARCHIVE}")
    assert not (tmp_path / "data" / CIFAR10_ARCHIVE).exists()
