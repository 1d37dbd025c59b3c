"""pipeline/data/images.py: bad files named (not images, undecodable, missing, over data.max_pixels) under each
check_images policy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from support.data import HUGE, SMALL, data_cfg, folder_cfg, loader

from pipeline.data import BadImageError, DataError, load_image_sets


def iterate_all(cfg):
    train, val = load_image_sets(cfg)
    for _ in loader(cfg, train, batch=3):
        pass


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        rng = np.random.default_rng(0)
        path.write_bytes(data[:200] + rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes())
    elif how == "text-named-jpg":
        path.write_text("this is not a JPEG")
    elif how == "random-after-signature":  # a JPEG start marker, then random bytes: Pillow cannot identify it
        path.write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())


def test_non_image_file_is_named(tiny_tree):
    (tiny_tree / "train" / "bee" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"train/bee/notes.txt: not an image file"):
        load_image_sets(folder_cfg(tiny_tree))


@pytest.mark.parametrize("how", ["zero-byte", "truncated", "garbage", "text-named-jpg", "random-after-signature"])
def test_undecodable_image_is_named(tiny_tree, how):
    bad = tiny_tree / "train" / "bee" / "003.jpg"
    corrupt(bad, how)
    with pytest.raises(BadImageError, match=rf"{bad}: ") as info:
        iterate_all(folder_cfg(tiny_tree))
    assert " at 0x" not in str(info.value), str(info.value)  # the user's terms, not Pillow's object reprs
    if how == "random-after-signature":
        assert f"{bad}: cannot decode (corrupt JPEG header)" in str(info.value)


def test_check_images_error_lists_bad_files_up_front(tiny_tree):
    corrupt(tiny_tree / "train" / "ant" / "001.jpg", "truncated")
    corrupt(tiny_tree / "val" / "cat" / "000.jpg", "zero-byte")
    with pytest.raises(BadImageError, match=r"1 undecodable image\(s\): .*/train/ant/001.jpg: cannot decode"):
        load_image_sets(folder_cfg(tiny_tree, "data.check_images=error"))


def test_check_images_skip_leaves_bad_files_out(tiny_tree):
    corrupt(tiny_tree / "train" / "ant" / "001.jpg", "garbage")
    corrupt(tiny_tree / "train" / "cat" / "002.jpg", "zero-byte")
    train, val = load_image_sets(folder_cfg(tiny_tree, "data.check_images=skip"))
    assert len(train) == 19 and len(val) == 11
    assert sorted(Path(n).name for n in train.skipped) == ["001.jpg", "002.jpg"]
    batches = list(loader(folder_cfg(tiny_tree), train, batch=3))
    assert len(batches) == 19 // 3


def test_a_failure_that_is_not_a_file_keeps_dalis_own_error(tiny_tree):
    """Every file decodes, so the failure is not the data's: it must not be reported as bad input."""
    cfg = folder_cfg(tiny_tree)
    # A crop larger than the resized image: DALI's crop operator fails, whatever the files hold.
    # (The config schema refuses this combination; the loader API is reached directly here.)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"min_side": 20, "max_side": 20})})
    with pytest.raises(RuntimeError, match=r"Slice can't be placed out of bounds") as info:
        iterate_all(cfg)
    assert not isinstance(info.value, DataError)


def test_missing_file_after_listing_is_named(tiny_tree):
    """Files are read by DALI's C++ reader; one that disappears is still traced back to its path."""
    cfg = folder_cfg(tiny_tree, "data.cache=off")  # read at every step, not decoded once at start-up
    train, _ = load_image_sets(cfg)
    gone = tiny_tree / "train" / "cat" / "004.jpg"
    gone.unlink()
    with pytest.raises(BadImageError, match=rf"{gone}: cannot read"):
        list(loader(cfg, train, batch=3))


def test_decode_once_refuses_an_image_over_max_pixels_at_start_up(tiny_tree, huge_png):
    huge = tiny_tree / "val" / "ant" / "huge.png"
    huge.write_bytes(huge_png)
    with pytest.raises(BadImageError, match=rf"{huge}: {re.escape(HUGE)}"):
        load_image_sets(folder_cfg(tiny_tree))  # data.cache=auto, check_images=off


def test_max_pixels_is_the_limit_and_zero_turns_it_off(tiny_tree):
    """24 x 24 = 576 px images: refused under a limit of 575, read without a limit."""
    strict = folder_cfg(tiny_tree, "data.max_pixels=575", "data.cache=off")
    train, _ = load_image_sets(strict)
    with pytest.raises(BadImageError, match=r"24x24 pixels \(0.0 MP\) is over data.max_pixels \(575;"):
        list(loader(strict, train, batch=3))
    off = folder_cfg(tiny_tree, "data.max_pixels=0", "data.cache=off")
    assert len(list(loader(off, load_image_sets(off)[0], batch=3))) == 21 // 3


@pytest.mark.parametrize("kind", ["reference", "random_resized_crop"])
def test_an_image_over_max_pixels_in_a_tar_shard_is_named_by_shard_and_key(tiny_tree, huge_png, tmp_path, kind):
    from pipeline.data.shards import write_shards

    (tiny_tree / "train" / "cat" / "huge.png").write_bytes(huge_png)
    out = tmp_path / "shards"
    write_shards(tiny_tree, out, shard_size=8, workers=1, seed=0, progress=False)
    cfg = data_cfg("data.source=webdataset", f"data.root={out}", *SMALL, f"data.train.kind={kind}")
    train, _ = load_image_sets(cfg)
    with pytest.raises(BadImageError, match=rf"{out}/train-00000\d.tar:cat/huge.png: {re.escape(HUGE)}"):
        for _epoch in range(2):
            for _ in loader(cfg, train, batch=3):
                pass


def test_decode_once_names_an_undecodable_file_at_start_up(tiny_tree):
    bad = tiny_tree / "train" / "cat" / "005.jpg"
    corrupt(bad, "truncated")
    with pytest.raises(BadImageError, match=rf"{bad}: "):
        load_image_sets(folder_cfg(tiny_tree))

