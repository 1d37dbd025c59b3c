"""Tar shards: the writer, the lister, real DALI pipelines reading them (sharding, evaluation, resume),
bad members; and, with real processes, a recipe trained from shards, killed and resumed, and evaluated
by one and by two torchrun processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_photo_folder
from pipeline.config import load_config
from pipeline.data import BadImageError, DataError, build_loader, load_image_sets
from pipeline.data.shards import write_shards
from pipeline.data.webdataset import CLASS_MAP, INCOMPLETE, index_path, read_index
from runs import REPO, assert_same_tensors, load_ckpt, run_env, train_command

CPU = torch.device("cpu")
RRC = ("data.train.kind=random_resized_crop", "data.train.crop=32", "data.eval.size=36", "data.eval.crop=32")
SPLITS = {"train": {"a": 9, "b": 8, "c": 8}, "val": {"a": 4, "b": 3, "c": 4}}  # 25 and 11 images


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photo_folder(tmp_path_factory.mktemp("photos") / "tree", SPLITS)


@pytest.fixture(scope="module")
def shards(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    write_shards(photos, out, shard_size=4, workers=2, seed=0, progress=False)
    return out


def shard_cfg(root: Path, *extra: str):
    return load_config(None, ["data.source=webdataset", f"data.root={root}", *RRC, *extra]).data


def loader(cfg, images, *, train=True, batch=4, rank=0, world=1, seed=0, state=None, stop_after=None):
    return build_loader(cfg, images=images, train=train, batch_size=batch, rank=rank, world_size=world, seed=seed,
                        device=CPU, dtype=torch.float32, state=state, stop_after=stop_after)


# ------------------------------------------------------------------------------------ the writer


def test_writer_round_trip(photos, shards):
    """Every image is in the shards once, byte for byte, with its label; the index files are what tar
    and DALI's own reader see; samples are mixed across shards."""
    src_train, src_val = load_image_sets(load_config(None, ["data.source=imagefolder", f"data.root={photos}"]).data)
    train, val = load_image_sets(shard_cfg(shards))
    assert train.classes == src_train.classes == ["a", "b", "c"]
    for src, packed in ((src_train, train), (src_val, val)):
        expected = Counter((src.read_encoded(i).tobytes(), int(src.labels[i])) for i in range(len(src)))
        found = Counter((packed.read_encoded(i).tobytes(), int(packed.labels[i])) for i in range(len(packed)))
        assert found == expected
    names = sorted(p.name for p in shards.glob("*.tar"))
    assert names == [f"train-{i:06d}.tar" for i in range(7)] + [f"val-{i:06d}.tar" for i in range(3)]
    assert train.members.shard_sizes == [4, 4, 4, 4, 4, 4, 1]
    assert train.labels.tolist() != sorted(train.labels.tolist()), "write-time shuffle: classes are mixed"
    assert train.names[0].startswith(f"{shards / 'train-000000.tar'}:") and train.names[0].endswith(".jpg")
    class_map = json.loads((shards / CLASS_MAP).read_text())
    assert class_map["classes"] == ["a", "b", "c"] and len(class_map["labels"]["train-000006.tar"]) == 1
    for tar_path in shards.glob("*.tar"):  # the index lists the data offsets tar itself finds
        with tarfile.open(tar_path) as tar:
            members = [(m.name, m.offset_data, m.size) for m in tar]
        indexed = [(m.name, m.offset, m.size) for sample in read_index(index_path(tar_path), tar_path) for m in sample]
        assert indexed == members
        assert all(m.mtime == 0 and m.uid == 0 for m in tarfile.open(tar_path))  # reproducible bytes
    from nvidia.dali import fn, pipeline_def

    paths = sorted(str(p) for p in shards.glob("train-*.tar"))

    @pipeline_def(batch_size=len(train), num_threads=1, device_id=None)
    def dali_reader():
        return tuple(fn.readers.webdataset(paths=paths, index_paths=[p[:-4] + ".idx" for p in paths],
                                           ext=["jpg", "cls"], missing_component_behavior="error"))

    pipe = dali_reader()
    pipe.build()
    jpgs, classes = pipe.run()
    assert [np.array(jpgs[i]).tobytes() for i in range(len(train))] == [train.read_encoded(i).tobytes()
                                                                         for i in range(len(train))]
    assert [int(bytes(np.array(classes[i]))) for i in range(len(train))] == train.labels.tolist()


def test_writer_is_deterministic(photos, shards, tmp_path):
    again = tmp_path / "again"
    write_shards(photos, again, shard_size=4, workers=1, seed=0, progress=False)
    for path in shards.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


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


def test_a_rewrite_with_another_shard_size_replaces_the_shards(photos, tmp_path):
    """Old shards of a split never survive a rewrite; files the writer does not name do."""
    out = tmp_path / "out"
    write_shards(photos, out, shard_size=2, workers=2, seed=0, progress=False)
    (out / "notes.txt").write_text("mine")
    write_shards(photos, out, shard_size=10, workers=2, seed=0, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"train-{i:06d}.{e}" for i in range(3) for e in ("tar", "idx")]
                           + [f"val-{i:06d}.{e}" for i in range(2) for e in ("tar", "idx")]
                           + [CLASS_MAP, "notes.txt"])
    train, val = load_image_sets(shard_cfg(out))
    assert (len(train), len(val)) == (25, 11) and train.members.shard_sizes == [10, 10, 5]
    record = json.loads((out / CLASS_MAP).read_text())
    assert record["shard_size"] == 10 and record["max_side"] == 0 and record["resized"] == {"train": 0, "val": 0}


def test_max_side_resizes_large_images_once_as_the_decoder_sees_them_and_records_it(tmp_path):
    """Every kind of image ImageNet holds (test_crops.py), one class each, written with --max-side 40: the
    ones longer than 40 px are stored as JPEGs that DALI decodes to what Pillow's Lanczos makes of the
    displayed image (EXIF orientation applied once, CMYK / grayscale / alpha as the decoder treats them);
    the others keep their bytes; the completion record says what was done."""
    from PIL import Image

    from test_crops import ODD, pillow_rgb

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


# ------------------------------------------------------------------------------------ the lister


def copy_shards(shards: Path, dest: Path) -> Path:
    shutil.copytree(shards, dest)
    return dest


def test_shards_from_elsewhere_list_the_same(shards, tmp_path):
    """No index files (tar headers scanned) and no class map (labels read from the .cls members)."""
    bare = copy_shards(shards, tmp_path / "bare")
    for path in [*bare.glob("*.idx"), bare / CLASS_MAP]:
        path.unlink()
    ours, _ = load_image_sets(shard_cfg(shards))
    theirs, val = load_image_sets(shard_cfg(bare))
    assert theirs.classes == ["0", "1", "2"] and len(val) == 11
    assert theirs.labels.tolist() == ours.labels.tolist()
    assert theirs.members.offsets.tolist() == ours.members.offsets.tolist()


@pytest.mark.parametrize("how", ["glob", "list-file", "sub-folders", "root-glob"])
def test_splits_by_name_glob_list_file_or_folder(shards, tmp_path, how):
    root, extra = shards, []
    if how == "glob":
        extra = ["data.train_split=train-00000[0-3].tar", "data.eval_split=val-*.tar"]
    elif how == "list-file":
        (tmp_path / "train.txt").write_text("".join(f"{shards}/train-{i:06d}.tar\n" for i in range(4)))
        (tmp_path / "val.txt").write_text(f"{shards}/val-000000.tar\n")
        root, extra = tmp_path, ["data.train_split=train.txt", "data.eval_split=val.txt"]
    elif how == "sub-folders":
        root = tmp_path / "tree"
        for split in ("train", "val"):
            (root / split).mkdir(parents=True)
            for path in shards.glob(f"{split}-*"):
                shutil.copy(path, root / split / path.name)
    else:
        root, extra = Path(f"{shards}/train-00000[0-3].tar"), ["data.eval_split=val-000000.tar"]
    train, val = load_image_sets(shard_cfg(root, *extra))
    expected = (25, 11) if how == "sub-folders" else (16, 11 if how == "glob" else 4)
    assert (len(train), len(val)) == expected


def spoil_index_offset(folder: Path) -> None:
    idx = folder / "train-000002.idx"
    lines = idx.read_text().splitlines()
    fields = lines[1].split()
    fields[1] = "12x4"  # the first member's offset
    idx.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")


def add_unlisted_shard(folder: Path) -> None:
    """A shard of another write (same name pattern) that the completion record does not list."""
    for ext in ("tar", "idx"):
        shutil.copy(folder / f"train-000000.{ext}", folder / f"train-000099.{ext}")


def swap_shard(folder: Path) -> None:
    """train-000001 replaced by another shard (and its index): a sample count the record does not have."""
    for ext in ("tar", "idx"):
        shutil.copy(folder / f"train-000006.{ext}", folder / f"train-000001.{ext}")


@pytest.mark.parametrize(
    "spoil, pattern",
    [
        (lambda d: [p.unlink() for p in d.glob("val-*")], r"no validation shards .*set data.eval_split"),
        (lambda d: (d / "train-000001.tar").write_bytes((d / "train-000001.tar").read_bytes()[:3000]),
         r"train-000001.idx: lists data up to byte \d+, beyond the end of .*train-000001.tar"),
        (lambda d: (d / "train-000002.idx").write_text("garbage\n"), r"train-000002.idx: not a DALI webdataset index"),
        (spoil_index_offset, r"train-000002.idx:2: offset and size must be non-negative integers, got '12x4'"),
        (lambda d: (d / CLASS_MAP).write_text("{"), r"classes.json: unreadable class map"),
        (add_unlisted_shard, r"classes.json does not list .*/train-000099.tar: left by another write\?"),
        (lambda d: (d / "train-000003.tar").unlink(), r"classes.json lists 1 train shard\(s\) that are missing, "
                                                      r"e.g. .*/train-000003.tar"),
        (swap_shard, r"train-000001.tar: holds 1 samples, classes.json beside the shards lists 4: the shard changed"),
    ],
    ids=["no-eval-shards", "truncated-shard", "bad-index", "index-offset-not-an-integer", "bad-class-map",
         "unlisted-shard", "missing-shard", "changed-shard"],
)
def test_bad_shard_folders_name_the_file(shards, tmp_path, spoil, pattern):
    bad = copy_shards(shards, tmp_path / "bad")
    spoil(bad)
    with pytest.raises(DataError, match=pattern):
        load_image_sets(shard_cfg(bad))


def test_a_malformed_index_is_one_line_and_exit_2(shards, tmp_path):
    bad = copy_shards(shards, tmp_path / "bad")
    spoil_index_offset(bad)
    proc = resolve_data("data.source=webdataset", f"data.root={bad}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad / 'train-000002.idx'}:2: offset and size")


def test_a_shard_member_over_the_size_limit_is_refused_before_it_is_read(shards, tmp_path):
    """Listing reads member sizes from the index (or the tar headers): nothing of the member is read."""
    cfg = shard_cfg(shards, "data.max_member_mb=0.001")  # 1,048 bytes: the photos are a few kB
    with pytest.raises(DataError, match=r"train-000000.tar:\S+\.jpg: a member of [\d,]+ bytes, over "
                                        r"data.max_member_mb \(1,048 bytes\); not read"):
        load_image_sets(cfg)


# ----------------------------------------------------------------- reading shards through DALI


@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batches_from_shards(shards, kind, dtype):
    cfg = shard_cfg(shards, f"data.train.kind={kind}", "data.train.min_side=34", "data.train.max_side=38")
    train, val = load_image_sets(cfg)
    ld = build_loader(cfg, images=train, train=True, batch_size=4, rank=0, world_size=1, seed=0, device=CPU,
                      dtype=dtype)
    assert len(ld) == 25 // 4
    for images, labels in ld:
        assert images.shape == (4, 3, 32, 32) and images.dtype == dtype
        assert images.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(images.float()).all()
        # each class's photos have their own dominant channel (conftest.write_photo_folder)
        assert torch.equal(images.float().mean(dim=(2, 3)).argmax(1), labels)


@pytest.mark.parametrize("world", [2, 3])
def test_shard_evaluation_over_ranks_is_the_single_process_evaluation(shards, world):
    """Contiguous, disjoint parts: the ranks' batches, in rank order, are the single process's images."""
    cfg = shard_cfg(shards)
    _, val = load_image_sets(cfg)
    single = torch.cat([x for x, _ in loader(cfg, val, train=False, batch=3)])
    parts = [torch.cat([x for x, _ in loader(cfg, val, train=False, batch=3, rank=r, world=world)])
             for r in range(world)]
    assert sum(len(p) for p in parts) == len(val) == 11
    assert torch.equal(torch.cat(parts), single)


def test_shard_training_runs_equal_steps_on_every_rank(shards):
    cfg = shard_cfg(shards)
    train, _ = load_image_sets(cfg)
    loaders = [loader(cfg, train, batch=3, rank=r, world=2) for r in range(2)]
    assert [len(ld) for ld in loaders] == [25 // 2 // 3] * 2
    for _epoch in range(2):
        assert [[len(y) for _, y in ld] for ld in loaders] == [[3] * 4] * 2


@pytest.mark.parametrize("consumed", [2, 6], ids=["mid-epoch", "after-last-batch"])
def test_shard_loader_state_resumes_exactly(shards, consumed):
    cfg = shard_cfg(shards, "data.shuffle_buffer=5")
    train, _ = load_image_sets(cfg)
    ref = loader(cfg, train, batch=4, seed=3)
    assert len(ref) == 6
    it = iter(ref)
    for _ in range(consumed):
        next(it)
    state = ref.state_dict()
    rest = list(it) + list(ref)  # the rest of epoch 0, then epoch 1
    resumed = loader(cfg, train, batch=4, seed=3, state=state)
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == 12 - consumed
    for (x1, y1), (x2, y2) in zip(rest, again):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)


def corrupt_member(shard: Path, member: str, how: str) -> None:
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    with open(shard, "r+b") as fh:
        if how == "header":  # not a JPEG any more: no image signature
            fh.seek(info.offset_data)
            fh.write(b"\0" * 16)
        else:  # all but the first 200 bytes: the signature (and frame header) survive, the decoder fails
            fh.seek(info.offset_data + 200)
            fh.write(np.random.default_rng(0).integers(0, 256, info.size - 200, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("how", ["header", "data"])
@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
def test_bad_member_is_named_by_shard_and_key(shards, tmp_path, how, kind):
    bad = copy_shards(shards, tmp_path / "bad")
    shard = bad / "train-000003.tar"
    with tarfile.open(shard) as tar:
        member = tar.getnames()[2]  # the second sample's image
    corrupt_member(shard, member, how)
    cfg = shard_cfg(bad, f"data.train.kind={kind}", "data.train.min_side=34", "data.train.max_side=38")
    train, _ = load_image_sets(cfg)
    with pytest.raises(BadImageError, match=rf"{shard}:{member}: "):
        for _epoch in range(3):  # some epochs drop the remainder; three cover every member
            for _ in loader(cfg, train, batch=5):
                pass


# ----------------------------------------------------------------- real processes (slow)


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
