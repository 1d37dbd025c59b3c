"""Bad data, tried in bulk: image bytes, image folders, archives, tar shards and CIFAR-10 batches.

Every case ends in images that the real DALI CPU graph decodes (in this process, a batch at a time), or
one UserError line naming the file (shard:member, archive:member); never another exception, and never a
pickle that runs code. Cases per CI run: see each `@cases(n)`; tests/fuzz.py says how to explore further.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode_image, smooth_image, write_cifar_archive, write_imagefolder
from fuzz import IMAGE_NAME, Scratch, assert_one_line, cases, code_running_pickles, image_bytes, valid_images
from hypothesis import event, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.config import DataConfig
from pipeline.constants import MAX_IMAGE_PIXELS
from pipeline.data import build_loader, load_image_sets
from pipeline.data.images import check_encoded, decode_problem, image_size
from pipeline.data.shards import write_shards
from pipeline.data.webdataset import CLASS_MAP, INCOMPLETE, list_webdataset
from pipeline.errors import BadImageError, UserError

# Pillow's notes on the damaged files it reads anyway: what each case must do is checked below.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin",
                                        "ignore::PIL.Image.DecompressionBombWarning")


SCRATCH = Scratch("fuzz-data-")


WORK = SCRATCH.root


SMALL_LIMIT = 300  # pixels: data.max_pixels below the valid test images' 24 x 24, so the limit is met too


DATA_KEYS = ["data.max_pixels", "data.max_member_mb", "data.check_images", "train.global_batch_size"]


fresh = SCRATCH.case  # a new empty folder for each case (the last case's is removed)


def good_jpeg(seed: int) -> bytes:
    return encode_image(smooth_image(np.random.default_rng(seed), 24))


def data_config(root: Path, **values) -> DataConfig:
    """Tiny sizes, one thread: the graph's work is the decoding."""
    train = {"crop": 16, "min_side": 16, "max_side": 18, "kind": values.pop("kind", "reference")}
    return DataConfig(source=values.pop("source", "imagefolder"), root=str(root), num_threads=1, train=train,
                      eval={"size": 16, "crop": 16}, **values)


def decode_every_image(cfg: DataConfig, train, val) -> None:
    """One epoch of the training and the evaluation loader through the real DALI CPU graph."""
    for images, is_train in ((train, True), (val, False)):
        loader = build_loader(cfg, images=images, train=is_train, batch_size=max(1, min(8, len(images))), rank=0,
                              world_size=1, seed=0, device=torch.device("cpu"), dtype=torch.float32)
        for batch, labels in loader:
            assert batch.shape[0] == labels.shape[0]


class DaliPeek:
    """DALI's own header parser (fn.peek_image_shape), one file at a time: the (height, width) its decoder
    outputs, EXIF orientation applied; None when it cannot parse the file. One pipeline, fed per call."""

    def __init__(self) -> None:
        self.pipe = None

    def __call__(self, data: bytes) -> tuple[int, int] | None:
        from nvidia.dali import fn, pipeline_def

        if self.pipe is None:  # built again after a failed run, which leaves a pipeline unusable
            @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
            def peek():
                return fn.peek_image_shape(fn.external_source(name="encoded"))

            self.pipe = peek()
            self.pipe.build()
        self.pipe.feed_input("encoded", [np.frombuffer(data, np.uint8)])
        try:
            (shape,) = self.pipe.run()
        except RuntimeError:
            self.pipe = None
            return None
        height, width, _ = (int(v) for v in shape.as_array()[0])
        return height, width


dali_peek = DaliPeek()


CLASS_FOLDERS = ("train/ant", "train/bee", "val/ant", "val/bee")


ODD_NAMES = st.sampled_from([".hidden.jpg", "x.txt", "noext", "x.jpg.bak", " space .jpg", "ünï.JPG", "-.png"])


FUZZED_FILES = st.lists(st.tuples(st.sampled_from(CLASS_FOLDERS), IMAGE_NAME | ODD_NAMES, image_bytes()),
                        min_size=1, max_size=5)


def write_tree(root: Path, files: list[tuple[str, str, bytes]]) -> Path:
    """Two classes with good images in both splits, and `files` added (a name given twice: the last wins)."""
    for i, folder in enumerate(CLASS_FOLDERS):
        (root / folder).mkdir(parents=True)
        for j in range(2 if folder.startswith("train") else 1):
            (root / folder / f"good{j}.jpg").write_bytes(good_jpeg(10 * i + j))
    for folder, name, data in files:
        (root / folder / name).write_bytes(data)
    return root


# Found: a progressive JPEG with the 0xFF of one of its markers zeroed; Pillow decodes it (libjpeg's "extraneous
# bytes" warning), DALI's header parser refuses it with an opaque nvImageCodec failure.
DALI_ONLY_REFUSES = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5"
    "PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wgAR"
    "CAAJABEDASIAAhEBAxEB/8QAGAAAAwEBAAAAAAAAAAAAAAAAAAEEAgX/xAAWAQEBAQAAAAAAAAAAAAAAAAACAwUA2gAMAwEAAhADEAAAAdNx"
    "yNJww6v/xAAcEAABAwUAAAAAAAAAAAAAAAAAAQIDFCEyQkT/2gAIAQEAAQUCat9aeUnw5D//xAAfEQAAAwkAAAAAAAAAAAAAAAAAARESExUi"
    "MVGRwfD/2gAIAQMBAT8BbledRdiEFcsD/8QAHBEAAQMFAAAAAAAAAAAAAAAAEQAB8AITIWGR/9oACAECAQE/AaAGEwVc1Or/xAAhEAACAAMJ"
    "AAAAAAAAAAAAAAAAAQIxUQMQEiEzYXHB8P/aAAgBAQAGPwKstjFE3PJGoy29QXHau//EAB8QAAIBBAIDAAAAAAAAAAAAAAERIQAxYbEQQXHR"
    "8P/aAAgBAQABPyEyAskglsCIAMDq9NFAzmZsy2Ejd58/APdbGuev/9oADAMBAAIAAwAAABC/3//EABwRAQABBAMAAAAAAAAAAAAAAAEAESEx"
    "kWHR8f/aAAgBAwEBPxBYKLrTQyzcQ74nje5//8QAGhEAAgMBAQAAAAAAAAAAAAAAAREAMVGRof/aAAgBAgEBPxA0BTIG3Y+FJ2wY2PY//8QA"
    "GhABAQEAAwEAAAAAAAAAAAAAAREhABChMf/aAAgBAQABPxBNqKdnhR0CFXEawb4hgksTRoL9GBEDo54OR9fX/9k=")


MEMBER_NAMES = st.builds(lambda top, folder, name: top + folder + "/" + name,
                         st.sampled_from(["", "tree/", "a/b/", "/abs/", "../", "./"]),
                         st.sampled_from(CLASS_FOLDERS + ("test/ant", "x/.y", "train", "train/ant/deeper")),
                         IMAGE_NAME | ODD_NAMES)


def tar_bytes(members: list[tuple[str, bytes]], compress: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards() -> Path:
    """Shards our writer made from a tiny tree: train-00000{0,1,2}.tar (2 samples each, the last 1), val, .idx."""
    src = write_imagefolder(WORK / "shard-src", {"train": {"ant": 3, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    out = WORK / "shards"
    write_shards(src, out, shard_size=2, workers=1, seed=0, progress=False)
    return out


INDEX_TOKENS = st.sampled_from(["v1.2", "v1.1", "v1.0", "jpg", "cls", "png", "0", "1", "512", "1024", "-1", "99999999",
                                "2" * 30, "0x10", "1e3", "²", "٣", "1.5", "train/ant/000.jpg", "x y", ""])


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=10)


@st.composite
def shard_damage(draw: st.DrawFn) -> tuple[str, ...]:
    """One thing done to a folder of shards: (what, its arguments)."""
    what = draw(st.sampled_from(["index_lines", "index_field", "truncate", "append", "overwrite", "drop_index",
                                 "drop_shard", "stray_shard", "class_map", "class_map_labels", "drop_class_map",
                                 "incomplete", "random_tar"]))
    shard = draw(st.sampled_from(["train-000000", "train-000001", "train-000002", "val-000000"]))
    if what == "index_lines":
        lines = draw(st.lists(st.lists(INDEX_TOKENS, max_size=9).map(" ".join), max_size=5))
        return what, shard, "\n".join(lines)
    if what == "index_field":
        return what, shard, draw(st.integers(1, 2)), draw(st.integers(0, 7)), draw(INDEX_TOKENS)
    if what in ("truncate", "overwrite"):
        return what, shard, draw(st.integers(0, 6000)), draw(st.binary(min_size=1, max_size=600))
    if what == "append":
        return what, shard, draw(st.binary(max_size=1500))
    if what == "class_map":
        return what, json.dumps(draw(JSON_VALUES))
    if what == "class_map_labels":
        return what, shard, json.dumps(draw(JSON_VALUES))
    if what == "random_tar":
        members = draw(st.lists(st.tuples(st.sampled_from(["k1", "k2", "dir/k3", ".hid", "k1.x"]),
                                          st.sampled_from(["jpg", "cls", "png", "txt", "JPG"]),
                                          image_bytes() | st.sampled_from([b"0", b"1", b"7", b"x", b"-1", b""])),
                                max_size=5))
        return what, shard, members, draw(st.booleans())
    return what, shard


def damage(root: Path, change: tuple) -> None:
    what, args = change[0], change[1:]
    if what == "class_map":
        (root / CLASS_MAP).write_text(args[0])
        return
    if what == "drop_class_map":
        (root / CLASS_MAP).unlink(missing_ok=True)
        return
    if what == "incomplete":
        (root / INCOMPLETE).write_text("")
        return
    tar, idx = root / f"{args[0]}.tar", root / f"{args[0]}.idx"
    if what == "index_lines":
        idx.write_text(args[1])
    elif what == "index_field" and idx.is_file() and idx.read_text().split():
        lines = idx.read_text().splitlines()
        at = min(args[1], len(lines) - 1)
        row = lines[at].split() or [""]
        row[min(args[2], len(row) - 1)] = args[3]
        lines[at] = " ".join(row)
        idx.write_text("\n".join(lines) + "\n")
    elif what == "truncate" and tar.is_file():
        tar.write_bytes(tar.read_bytes()[:args[1]])
    elif what == "overwrite" and tar.is_file():
        data = tar.read_bytes()
        tar.write_bytes(data[:args[1]] + args[2] + data[args[1] + len(args[2]):])
    elif what == "append" and tar.is_file():
        tar.write_bytes(tar.read_bytes() + args[1])
    elif what == "drop_index":
        idx.unlink(missing_ok=True)
    elif what == "drop_shard":
        tar.unlink(missing_ok=True)
    elif what == "stray_shard" and tar.is_file():
        shutil.copy(tar, root / f"{args[0].split('-')[0]}-000099.tar")
    elif what == "class_map_labels":
        record = json.loads((root / CLASS_MAP).read_text()) if (root / CLASS_MAP).is_file() else {}
        if isinstance(record, dict) and isinstance(record.get("labels"), dict):
            record["labels"][f"{args[0]}.tar"] = json.loads(args[1])
            (root / CLASS_MAP).write_text(json.dumps(record))
    elif what == "random_tar":
        tar.write_bytes(tar_bytes([(f"{key}.{ext}", data) for key, ext, data in args[1]], compress=False))
        if args[2]:
            idx.unlink(missing_ok=True)


ARRAYS = hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.bool_]),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


PICKLED = st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=4) | st.text(max_size=4) | ARRAYS,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from([b"data", b"labels", b"batch_label", "data", 1]), inner, max_size=3),
                       max_leaves=6)


@st.composite
def batch_bytes(draw: st.DrawFn, marker: Path) -> bytes:
    """A batch file: a pickle of odd content, one of another shape, a damaged or code-running pickle, random bytes."""
    kind = draw(st.sampled_from(["objects", "shaped", "truncated", "code", "bytes"]))
    if kind == "objects":
        return pickle.dumps(draw(PICKLED), protocol=draw(st.integers(0, 5)))
    if kind == "shaped":
        rows = draw(st.integers(0, 3))
        data = np.zeros((rows, draw(st.sampled_from([3072, 3071, 1]))), draw(st.sampled_from([np.uint8, np.int16])))
        labels = draw(st.lists(st.integers(-2, 12), min_size=0, max_size=4) | st.just(np.arange(rows)))
        return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
    if kind == "truncated":
        whole = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}, protocol=2)
        return whole[:draw(st.integers(0, len(whole) - 1))]
    if kind == "code":
        return draw(st.sampled_from(code_running_pickles(marker)))
    return draw(st.binary(max_size=200))


MARKER = WORK / "cifar-pickle-ran"


@cases(600)
@given(image_bytes(), st.sampled_from([0, SMALL_LIMIT, MAX_IMAGE_PIXELS]))
@example(valid_images()[4][:30] + b"\x00" + valid_images()[4][31:], 0)  # found (explore): the EXIF-rotated JPEG with
# its byte order damaged ("\0M"): Pillow then ignores the rotation, DALI (and our header reader) apply it
def test_image_bytes_give_their_size_or_one_line_naming_the_file(data, max_pixels):
    """The checks every read makes (signature, header size, pixel limit, Pillow's decode): a reason in one line,
    never an exception; a file Pillow decodes has the header size DALI's decoder outputs."""
    name, array = "/data/train/cat/x.jpg", np.frombuffer(data, np.uint8)
    try:
        check_encoded(array, name)
    except BadImageError as exc:
        assert_one_line(str(exc), [name])
    problem = decode_problem(array, max_pixels)
    assert problem is None or "\n" not in problem, problem
    try:
        size = image_size(array, name)
    except BadImageError as exc:
        assert_one_line(str(exc), [name])
        size = None
    if decode_problem(array) is None:
        event("decodable")
        dali = dali_peek(data)
        assert dali is None or size == dali, (size, dali)  # None: DALI refuses it (the loader names such files)
    else:
        event("refused")


@cases(50)
@given(FUZZED_FILES, st.sampled_from(["off", "error", "skip"]), st.sampled_from(["auto", "off"]),
       st.sampled_from([MAX_IMAGE_PIXELS, SMALL_LIMIT]), st.sampled_from(["reference", "random_resized_crop"]))
@example([("train/ant", "0.jpg", DALI_ONLY_REFUSES)], "off", "auto", MAX_IMAGE_PIXELS, "reference")
@example([("val/bee", "0.jpg", DALI_ONLY_REFUSES)], "error", "off", MAX_IMAGE_PIXELS, "random_resized_crop")
@example([("train/ant", "0.jpg", valid_images()[1])], "skip", "auto", SMALL_LIMIT, "reference")  # found (explore):
# every evaluation image over the limit, skipped; decoding the empty split raised ValueError (batch size 0)
def test_an_image_folder_with_bad_files_decodes_or_stops_naming_one(files, check_images, cache, max_pixels, kind):
    root = write_tree(fresh("tree"), files)
    cfg = data_config(root, check_images=check_images, cache=cache, max_pixels=max_pixels, kind=kind)
    try:
        train, val = load_image_sets(cfg)
        decode_every_image(cfg, train, val)
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(root), *DATA_KEYS])
        return
    event("decoded")


@cases(60)
@given(st.booleans(), st.lists(st.tuples(MEMBER_NAMES, image_bytes()), max_size=6), st.booleans(),
       st.one_of(st.none(), st.integers(0, 6000)), st.sampled_from([256.0, 0.001]), st.sampled_from(["auto", "off"]))
@example(False, [], False, 0, 256.0, "auto")  # found (explore): an empty .tar, tarfile's error in five lines
def test_an_archive_of_images_decodes_or_stops_naming_it(with_good, members, compress, cut, max_member_mb, cache):
    good = [(f"tree/{folder}/good.jpg", good_jpeg(i)) for i, folder in enumerate(CLASS_FOLDERS)] if with_good else []
    data = tar_bytes(good + members, compress)
    archive = fresh("archive") / ("tree.tar.gz" if compress else "tree.tar")
    archive.write_bytes(data if cut is None else data[:cut])
    cfg = data_config(archive, max_member_mb=max_member_mb, cache=cache)
    try:
        train, val = load_image_sets(cfg)
        decode_every_image(cfg, train, val)
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(archive), *DATA_KEYS])
        return
    event("decoded")


@cases(150)
@given(st.lists(shard_damage(), min_size=1, max_size=3), st.sampled_from([256.0, 0.0005]))
@example([("class_map_labels", "train-000002", '{"": null}')], 256.0)  # found: KeyError 0
@example([("class_map_labels", "train-000002", "[null]")], 256.0)  # found: TypeError from int(None)
@example([("class_map_labels", "train-000000", "false")], 256.0)  # found: TypeError from len(False)
@example([("class_map", '{"labels": [1]}')], 256.0)  # the same class, by hand: AttributeError
@example([("drop_index", "val-000000"), ("drop_class_map",), ("random_tar", "val-000000", [], False)], 256.0)  # found
# (explore): an evaluation shard holding no sample, with no classes.json: ValueError from max() of no labels
def test_damaged_shards_list_and_read_or_stop_naming_the_file(shards, changes, max_member_mb):
    root = fresh("shards")
    shutil.copytree(shards, root, dirs_exist_ok=True)
    for change in changes:
        damage(root, change)
    try:
        train, val, classes = list_webdataset(root, "train", "auto", int(max_member_mb * 2**20))
        cfg = data_config(root, source="webdataset", max_member_mb=max_member_mb)
        sets = load_image_sets(cfg)
        for images in sets:  # every member's bytes: read, or a BadImageError naming shard:member
            for i in range(len(images)):
                try:
                    images.fetch_encoded(i)
                except BadImageError as exc:
                    assert_one_line(str(exc), [str(root)])
        decode_every_image(cfg, *sets)
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(root), *DATA_KEYS])
        return
    event("decoded")


@cases(150)
@given(st.dictionaries(st.sampled_from(["data_batch_1", "data_batch_3", "test_batch"]), batch_bytes(MARKER),
                       min_size=1, max_size=2), st.booleans())
@example({"data_batch_1": b"P"}, False)  # found (explore): pickle's two-line 'persistent id' error
def test_a_cifar10_archive_of_odd_batches_loads_or_stops_naming_the_file_and_runs_no_code(batches, verify):
    from pipeline.data.sources.cifar10 import load_cifar10

    root = fresh("cifar")
    write_cifar_archive(root / "cifar-10-python.tar.gz", replace=batches)
    try:
        load_cifar10(root, verify_checksums=verify)
        event("loaded")
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), [str(root / "cifar-10-python.tar.gz")])
    assert not MARKER.exists(), "unpickling ran code"

