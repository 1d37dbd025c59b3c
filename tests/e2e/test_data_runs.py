"""Data pipelines through real processes or the heaviest DALI graphs: every source's batches, huge images, oversized
archive members, a crafted CIFAR-10 archive on the command line, the shipped sample rebuilt.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import tarfile

import pytest
import torch
from conftest import (
    REPO,
    SHARED_CIFAR_JPEG,
    write_cifar_archive,
)
from support.data import HUGE, SMALL, RunsCode, assert_batch, data_cfg, first_batch, folder_cfg, loader, sources

from pipeline.constants import SAMPLE_ARCHIVE
from pipeline.data import BadImageError, load_image_sets


def run_measured(cmd: list[str], timeout: float = 300) -> tuple[int, str, int]:
    """(exit status, stderr, peak resident memory in MiB) of a child process, from its own rusage (wait4)."""
    import tempfile
    import threading

    from runs import run_env

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(errors="replace"), usage.ru_maxrss // 1024


@pytest.mark.parametrize("name", ["sample", "imagefolder_dir", "imagefolder_tar", "cifar10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_batches_of_every_source(tmp_path, name, dtype):
    cfg = data_cfg(*sources(tmp_path)[name], *SMALL)
    train, val = load_image_sets(cfg)
    images, labels = first_batch(loader(cfg, train, batch=4, dtype=dtype))
    assert_batch(images, labels, 32, dtype, 4)
    images, labels = first_batch(loader(cfg, val, train=False, batch=4, dtype=dtype))
    assert_batch(images, labels, 36, dtype, 4)


def test_the_cifar10_command_line_refuses_a_crafted_archive_without_running_it(tmp_path):
    """`--resolve` with model.num_classes=auto lists the data: on the earlier code that alone ran the crafted batch."""
    marker = tmp_path / "ran"
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz",
                        replace={"test_batch": pickle.dumps({b"data": RunsCode(marker), b"labels": []})})
    for extra in ([], ["data.verify_checksums=false"]):
        proc = subprocess.run([sys.executable, "train_dist.py", "data.source=cifar10", f"data.root={tmp_path}", *extra,
                               "model.num_classes=auto", "--resolve"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/data_batch_1: MD5 "
                               if not extra else f"error: {tmp_path / 'cifar-10-python.tar.gz'}:cifar-10-batches-py/"
                               "test_batch: refusing to unpickle it: it asks for "), line
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.cifar10_jpeg
def test_shipped_sample_rebuilds_byte_for_byte(tmp_path):
    out = tmp_path / "sample.tar.gz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample.py"), str(SHARED_CIFAR_JPEG), str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == SAMPLE_ARCHIVE.read_bytes()


@pytest.mark.parametrize("policy", ["off", "error", "skip"])
@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
def test_an_image_over_max_pixels_is_refused_undecoded_under_every_check_images_policy(tiny_tree, huge_png, policy,
                                                                                        kind):
    """off (the default): the loader stops naming it, before DALI decodes it (from files: data.cache=off);
    error: the up-front scan fails naming it; skip: it is left out, named in the skip list."""
    from PIL import Image

    huge = tiny_tree / "train" / "cat" / "huge.png"
    huge.write_bytes(huge_png)
    cfg = folder_cfg(tiny_tree, f"data.check_images={policy}", "data.cache=off", f"data.train.kind={kind}")
    if policy == "error":
        with pytest.raises(BadImageError, match=rf"1 undecodable image\(s\): {huge}: {re.escape(HUGE)}"):
            load_image_sets(cfg)
        return
    train, _ = load_image_sets(cfg)
    if policy == "skip":  # also one over our limit but under twice Pillow's, which Pillow alone would decode
        big = tiny_tree / "train" / "bee" / "big.png"
        Image.new("1", (10000, 10000)).save(big, optimize=True)
        train, _ = load_image_sets(cfg)
        assert sorted(train.skipped) == sorted([str(huge), str(big)]) and len(train) == 21
        assert sum(len(y) for _, y in loader(cfg, train, batch=3)) == 21
        return
    with pytest.raises(BadImageError, match=rf"{huge}: {re.escape(HUGE)}"):
        for _epoch in range(2):  # the remainder dropped from one epoch is in the next one
            for _ in loader(cfg, train, batch=3):
                pass


@pytest.mark.slow
def test_a_run_meeting_a_huge_image_stops_naming_it_without_decoding_it(tiny_tree, huge_png, tmp_path):
    """The real entry point, check_images=off (the default), files decoded every step: exit 2 with the file
    named, and the process never held the 1.2 GB the decoded image would take."""
    from runs import TINY, train_command

    huge = tiny_tree / "train" / "cat" / "huge.png"
    huge.write_bytes(huge_png)
    overrides = [o for o in TINY if not o.startswith("data.source")]
    status, err, peak_mib = run_measured(train_command() + [
        str(REPO / "configs" / "quickstart.yaml"), *overrides, "data.source=imagefolder", f"data.root={tiny_tree}",
        "model.num_classes=auto", "data.cache=off", "train.global_batch_size=3", f"logging.runs_dir={tmp_path}"])
    assert status == 2, err[-3000:]
    assert f"{huge}: {HUGE}" in err and "Traceback" not in err, err[-3000:]
    assert peak_mib < 2000, f"peak RSS {peak_mib} MiB"  # the tiny run takes ~1.2 GB; the decoded image is 1.1 GiB


def test_an_archive_member_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    """A 9 MB .tar.gz holding a 2 GiB member (zeros): `--resolve` lists the data and stops at the member's
    header, naming archive and member, without reading it."""
    import gzip

    bomb = tmp_path / "bomb.tar.gz"
    info = tarfile.TarInfo("tree/train/cat/bomb.jpg")
    info.size = 2**31
    with gzip.open(bomb, "wb", compresslevel=1) as gz:
        gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        zeros = bytes(2**20)
        for _ in range(2**11):
            gz.write(zeros)
        gz.write(bytes(1024))  # the end-of-archive blocks
    status, err, peak_mib = run_measured([sys.executable, str(REPO / "train_dist.py"),
                                          str(REPO / "configs" / "quickstart.yaml"), "data.source=imagefolder",
                                          f"data.root={bomb}", "model.num_classes=auto", "--resolve"])
    assert status == 2 and err.strip().splitlines() == [
        f"error: {bomb}:tree/train/cat/bomb.jpg: a member of 2,048.0 MiB, over data.max_member_mb (256.0 MiB); "
        "not read (remove it, or raise data.max_member_mb)"], err[-3000:]
    assert peak_mib < 2000, f"peak RSS {peak_mib} MiB"  # --resolve takes ~0.7 GB; the member is 2 GiB

