"""A real HTTP server on 127.0.0.1 serving a CIFAR-10 archive (tests/unit/test_download.py,
tests/e2e/test_download_processes.py).
"""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from conftest import write_cifar_archive

from pipeline.data.sources.cifar10 import CIFAR10_ARCHIVE


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

