"""CIFAR-10 download over real HTTP on 127.0.0.1: a wrong MD5 and no server are one-line errors.
"""

from __future__ import annotations

import socket

import pytest
from support.download import ArchiveServer

from pipeline.data.sources import cifar10
from pipeline.data.sources.cifar10 import CIFAR10_ARCHIVE
from pipeline.errors import DataError


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

