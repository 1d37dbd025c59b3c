"""Generated photographs and tar shards written from them once per module, and ways to spoil a copy
(tests/unit/test_shards.py, tests/e2e/test_shard_runs.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_photo_folder

from pipeline.config import load_config
from pipeline.data.shards import write_shards

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


def copy_shards(shards: Path, dest: Path) -> Path:
    shutil.copytree(shards, dest)
    return dest


def spoil_index_offset(folder: Path) -> None:
    idx = folder / "train-000002.idx"
    lines = idx.read_text().splitlines()
    fields = lines[1].split()
    fields[1] = "12x4"  # the first member's offset
    idx.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")

