"""What W&B and the run directory say about a run, read back from the files themselves."""

from __future__ import annotations

import shutil

from pipeline.config import load_config
from pipeline.fingerprint import data_fingerprint
from pipeline.resolved import auto_tags, merge_tags, node_count


def test_data_fingerprint_names_the_data_not_the_place(tmp_path):
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "a", {"train": {"x": 3, "y": 2}, "val": {"x": 1, "y": 1}})
    data = load_config(None, ["data.source=imagefolder", f"data.root={tree}"]).data
    first = data_fingerprint(data)
    assert first.startswith("sha1:") and data_fingerprint(data) == first
    shutil.copytree(tree, tmp_path / "b")
    assert data_fingerprint(data.model_copy(update={"root": str(tmp_path / "b")})) == first
    (tree / "other").mkdir()  # a folder that is not a split does not count
    assert data_fingerprint(data) == first
    (tree / "train" / "x" / "000.jpg").rename(tree / "train" / "y" / "000.jpg")  # another label
    assert data_fingerprint(data) != first
    sample = load_config(None, ["data.source=sample"]).data
    assert data_fingerprint(sample) == data_fingerprint(sample) != first


def test_node_count_and_tags():
    assert node_count({}) == 1
    assert node_count({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}) == 2
    assert node_count({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "2"}) == 2
    values = {"resolved/precision": "bf16", "resolved/gpu_count": 8, "resolved/data_pipeline": "dali-gpu",
              "resolved/compile": True}
    assert auto_tags(values) == ["bf16", "8gpu", "dali-gpu", "compiled"]
    assert auto_tags({"resolved/gpu_count": 0}) == ["cpu"]
    assert merge_tags(["bf16", "mine"], auto_tags(values)) == ["bf16", "mine", "8gpu", "dali-gpu", "compiled"]
