"""Tar shards through real processes: a killed writer, --max-side, command-line errors, a malformed index, the recipe
from shards resumed after SIGKILL, evaluation by two processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support.shards import CPU, copy_shards, shard_cfg, spoil_index_offset

from pipeline.data import DataError, build_loader, load_image_sets
from pipeline.data.webdataset import CLASS_MAP, INCOMPLETE, index_path, read_index
from runs import REPO, assert_same_tensors, load_ckpt, run_env, train_command


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every process below `pid` (Linux /proc), to tell them from a reused pid later."""
    found: dict[int, str] = {}
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found[child] = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[19]
            found.update(descendants(child))
    return found


def alive(pid: int, start: str) -> bool:
    """The process is running (not gone, not a zombie, not another process under a reused pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z" and fields[19] == start


def resolve_data(*overrides: str) -> subprocess.CompletedProcess:
    """`train_dist.py --resolve` (it lists the data) with these data keys: how a user meets a data error first."""
    return subprocess.run([sys.executable, str(REPO / "train_dist.py"), str(REPO / "configs" / "quickstart.yaml"),
                           "model.num_classes=auto", *overrides, "--resolve"],
                          cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=120)


# The modern ImageNet recipe, shrunk: 32 px crops, 6 steps per epoch, a step checkpoint every 2.
RECIPE = ("data.source=webdataset", "data.train.crop=32", "data.eval.size=36", "data.eval.crop=32",
          "data.num_threads=1", "data.shuffle_buffer=8", "model.num_classes=auto", "train.global_batch_size=4",
          "train.epochs=2", "train.max_steps_per_epoch=6", "schedule.warmup_epochs=0.5", "eval.batch_size=6",
          "eval.every=0", "checkpoint.every_steps=2", "checkpoint.keep_last=3", "train.deterministic=true",
          "logging.log_every=2", "logging.perf_warmup_steps=1", "logging.progress=lines", "wandb.mode=disabled")


def recipe_run(runs: Path, name: str, shards: Path, *extra: str, nproc: int = 1, popen: bool = False):
    cmd = train_command(nproc) + [str(REPO / "configs" / "squeezenet_imagenet_modern.yaml"),
        *RECIPE, f"data.root={shards}", f"logging.runs_dir={runs}", f"logging.run_name={name}", *extra]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    proc = subprocess.run(cmd, cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def packed_by_cli(photos, tmp_path_factory) -> Path:
    """The shards written by the command a user runs (docs/data.md)."""
    out = tmp_path_factory.mktemp("cli") / "shards"
    subprocess.run([sys.executable, "-m", "pipeline.data.shards", str(photos), str(out), "--shard-size=5"],
                   cwd=REPO, env=run_env(), check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def recipe_reference(packed_by_cli, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("recipe")
    proc = recipe_run(runs, "straight", packed_by_cli)
    expected = "data: webdataset, 25 training images (6 steps of 4 per epoch), 11 validation images, 3 classes"
    assert expected in proc.stderr
    return runs / "straight"


def test_killed_writer_leaves_only_whole_shards_no_worker_and_a_folder_the_reader_refuses(photos, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline.data.shards", str(photos), str(out), "--shard-size=1", "--workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("train-*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and workers, "the writer was killed while its pool worked"
    deadline = time.monotonic() + 10
    while any(alive(pid, start) for pid, start in workers.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid, start in workers.items() if alive(pid, start)], "a pool worker outlived the writer"
    assert not (out / CLASS_MAP).exists()  # the completion record comes last
    for shard in out.glob("*.tar"):  # whatever is visible is complete: the image and label of its one sample
        with tarfile.open(shard) as tar:
            assert [m.name.rsplit(".", 1)[1] for m in tar] == ["jpg", "cls"]
        if index_path(shard).exists():
            assert len(read_index(index_path(shard), shard)) == 1
    incomplete = f"{out}: incomplete: the writer did not finish; rerun it"
    with pytest.raises(DataError, match=re.escape(incomplete)):
        load_image_sets(shard_cfg(out))
    refused = resolve_data("data.source=webdataset", f"data.root={out}")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(f"error: {incomplete}"), \
        refused.stderr[-3000:]
    subprocess.run(cmd, cwd=REPO, env=run_env(), check=True, capture_output=True)
    assert not list(out.glob(".*")) and not (out / INCOMPLETE).exists(), "a rerun finishes the job and cleans up"
    train, val = load_image_sets(shard_cfg(out))
    assert (len(train), len(val)) == (25, 11)


def test_max_side_resizes_large_images_once_as_the_decoder_sees_them_and_records_it(tmp_path):
    """Every kind of image ImageNet holds (tests/support/crops.py), one class each, written with --max-side 40: the
    ones longer than 40 px are stored as JPEGs that DALI decodes to what Pillow's Lanczos makes of the
    displayed image (EXIF orientation applied once, CMYK / grayscale / alpha as the decoder treats them);
    the others keep their bytes; the completion record says what was done."""
    from PIL import Image
    from support.crops import ODD, pillow_rgb

    src = tmp_path / "odd"
    for split in ("train", "val"):
        for kind, (data, _) in ODD.items():
            (src / split / kind).mkdir(parents=True)
            (src / split / kind / "0.jpg").write_bytes(data)
    out = tmp_path / "shards"
    proc = subprocess.run([sys.executable, "-m", "pipeline.data.shards", str(src), str(out), "--shard-size=4",
                           "--max-side=40", "--workers=2"], cwd=REPO, env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    large = [kind for kind, (_, hw) in ODD.items() if max(hw) > 40]
    assert len(large) == len(ODD) - 1  # all but the 12 x 20 one
    assert proc.stdout.strip().endswith(f"{len(ODD)} classes; {2 * len(large)} resized to 40 px (JPEG quality 90)")
    record = json.loads((out / CLASS_MAP).read_text())
    assert (record["max_side"], record["quality"]) == (40, 90)
    assert record["resized"] == {"train": len(large), "val": len(large)}
    train, _ = load_image_sets(shard_cfg(out))
    members = {train.members.keys[i].split("/")[0]: i for i in range(len(train))}
    decoded = build_loader(shard_cfg(out), images=train, train=False, batch_size=1, rank=0, world_size=1, seed=0,
                           device=CPU, dtype=torch.float32, stop_after="decode")
    kinds = [train.members.keys[int(i)].split("/")[0] for i in range(len(train))]  # evaluation reads in order
    for kind, (image, _labels) in zip(kinds, decoded):
        original, (height, width) = ODD[kind]
        stored = train.read_encoded(members[kind]).tobytes()
        if kind not in large:
            assert stored == original and train.members.keys[members[kind]].endswith(".jpg"), kind
            continue
        assert stored[:3] == b"\xff\xd8\xff", f"{kind}: stored as a JPEG"
        scale = 40 / max(height, width)
        size = (round(width * scale), round(height * scale))
        expected = np.asarray(Image.fromarray(pillow_rgb(original)).resize(size, Image.Resampling.LANCZOS))
        got = np.array(image[0])
        assert got.shape == expected.shape, f"{kind}: decoded {got.shape}, expected {expected.shape}"
        diff = np.abs(got.astype(int) - expected).mean()
        assert diff < 4.0, f"{kind}: mean difference {diff:.2f} from Lanczos of the displayed image"


def test_writer_command_line_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "pipeline.data.shards", str(tmp_path / "nothing"), str(tmp_path / "o")]
    proc = subprocess.run(cmd, cwd=REPO, env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: data.root: {tmp_path / 'nothing'} does not exist"]


def test_a_malformed_index_is_one_line_and_exit_2(shards, tmp_path):
    bad = copy_shards(shards, tmp_path / "bad")
    spoil_index_offset(bad)
    proc = resolve_data("data.source=webdataset", f"data.root={bad}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad / 'train-000002.idx'}:2: offset and size")


@pytest.mark.slow
def test_recipe_from_shards_resumes_bit_identically_after_sigkill(packed_by_cli, recipe_reference, tmp_path):
    proc = recipe_run(tmp_path, "killed", packed_by_cli, popen=True)
    step = tmp_path / "killed" / "step-00000008.pt"  # mid-epoch 2
    deadline = time.monotonic() + 240
    while not step.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-4000:] if proc.stderr else ""
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    resumed = recipe_run(tmp_path, "killed", packed_by_cli)
    resumed_line = next(line for line in resumed.stderr.splitlines() if "resumed from" in line)
    assert "step-000000" in resumed_line and "epoch 2 continues after its step " in resumed_line, resumed_line
    straight, again = load_ckpt(recipe_reference / "last.pt"), load_ckpt(tmp_path / "killed" / "last.pt")
    assert again["counters"]["global_step"] == straight["counters"]["global_step"] == 12
    for part in ("model", "optimizer", "ema"):
        assert_same_tensors(straight[part], again[part], part)


@pytest.mark.slow
def test_evaluation_on_shards_by_two_processes_equals_one(packed_by_cli, recipe_reference, tmp_path):
    """The reference run's own final evaluation (one process) against eval.only of its last.pt by two."""
    from pipeline.runs.metrics import read_metrics

    one = [r for r in read_metrics(recipe_reference / "metrics.jsonl") if "val/top1" in r][-1]
    recipe_run(tmp_path, "eval2", packed_by_cli, "eval.only=true", f"checkpoint.resume={recipe_reference / 'last.pt'}",
               nproc=2)
    two = json.loads(max(recipe_reference.glob("eval/*/eval.json"), key=lambda p: p.stat().st_mtime).read_text())
    assert one["val/images"] == two["val/images"] == 11
    for key in ("val/top1", "val/top5", "val_raw/top1", "val_raw/top5"):
        assert one[key] == two[key], key
    assert one["val/loss"] == pytest.approx(two["val/loss"], rel=1e-5)

