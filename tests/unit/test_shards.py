"""Tar shards in one process: the writer, the lister, DALI pipelines reading them (sharding, evaluation, resume), bad
shards named.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from support.shards import CPU, copy_shards, shard_cfg, spoil_index_offset

from pipeline.config import load_config
from pipeline.data import BadImageError, DataError, build_loader, load_image_sets
from pipeline.data.shards import write_shards
from pipeline.data.webdataset import CLASS_MAP, index_path, read_index


def loader(cfg, images, *, train=True, batch=4, rank=0, world=1, seed=0, state=None, stop_after=None):
    return build_loader(cfg, images=images, train=train, batch_size=batch, rank=rank, world_size=world, seed=seed,
                        device=CPU, dtype=torch.float32, state=state, stop_after=stop_after)


def add_unlisted_shard(folder: Path) -> None:
    """A shard of another write (same name pattern) that the completion record does not list."""
    for ext in ("tar", "idx"):
        shutil.copy(folder / f"train-000000.{ext}", folder / f"train-000099.{ext}")


def swap_shard(folder: Path) -> None:
    """train-000001 replaced by another shard (and its index): a sample count the record does not have."""
    for ext in ("tar", "idx"):
        shutil.copy(folder / f"train-000006.{ext}", folder / f"train-000001.{ext}")


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


def test_a_shard_member_over_the_size_limit_is_refused_before_it_is_read(shards, tmp_path):
    """Listing reads member sizes from the index (or the tar headers): nothing of the member is read."""
    cfg = shard_cfg(shards, "data.max_member_mb=0.001")  # 1,048 bytes: the photos are a few kB
    with pytest.raises(DataError, match=r"train-000000.tar:\S+\.jpg: a member of [\d,]+ bytes, over "
                                        r"data.max_member_mb \(1,048 bytes\); not read"):
        load_image_sets(cfg)


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

