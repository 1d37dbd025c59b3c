"""The data sources, one row each: what every layer needs to know about a `data.source` value.

    SOURCES["imagefolder"].reads          # the source-specific `data` keys it reads: ("root", "train_split", ...)
    SOURCES["cifar10"].root_hint          # what data.root is for it ("" when it needs none)
    SOURCES["sample"].decode_once         # data.cache=auto may decode its images once, at start-up

The config (the `data.source` choices, the keys each source reads, the errors and warnings for keys
it does not, the reference page) reads these rows without importing the data layer; the module of
the same name in pipeline/data/sources/ opens the images and fingerprints the data.

Adding a source (an HDF5 file, say):
1. write pipeline/data/sources/<name>.py with `open_images(data) -> (train, eval)` ImageSets and
   `fingerprint(data) -> str`, `data` being the config's data section (sources/sample.py is the
   shortest example; a new key it reads is a field of DataConfig in pipeline/config/schema.py);
2. add its row below: the name, a few words, the source-specific keys it reads, and what data.root
   is when it needs one;
3. regenerate docs/configuration.md (`python -m pipeline.config --docs`) and add a line to the
   table of sources in docs/data.md.
tests/unit/test_sources.py checks that every row has its module and every module its row.
"""

from __future__ import annotations

from dataclasses import dataclass

# data.eval_split=auto: the first of these that exists beside the training split (folders or shards).
EVAL_SPLIT_CANDIDATES = ("val", "test", "validation")

# The keys that select which images are read: given for a source that reads other images they are an error,
# not a warning (data.root=/my/images without data.source=imagefolder would train on the shipped sample).
DATA_KEYS = ("root", "train_split", "eval_split", "eval_labels", "eval_label_map")
# Read by the sources whose images arrive encoded: the up-front scan and the size limits.
ENCODED = ("check_images", "max_pixels", "max_member_mb")
# Read by the sources whose images data.cache=auto may decode once: same-size images read in any order
# (cifar10 arrives decoded; shards are read in stream order).
DECODE_ONCE = ("cache", "cache_max_gb")


@dataclass(frozen=True)
class Source:
    """One `data.source` value."""

    name: str
    description: str  # a few words: the data.source reference and the message for a key it does not read
    reads: tuple[str, ...]  # the source-specific `data` keys it reads; it ignores the others (docs/configuration.md)
    root_hint: str = ""  # what data.root is, for a source that needs one (the error when it is missing says so)

    @property
    def decode_once(self) -> bool:
        """data.cache=auto may decode its images at start-up and train from the arrays (pipeline/data/cache.py)."""
        return "cache" in self.reads


# In the order the reference page and the error messages name them (an image folder first among the sources
# that read data.root: the likeliest meaning of a data.root given without data.source).
SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("sample", "the CIFAR-10 subset shipped in data/", ENCODED + DECODE_ONCE),
    Source("imagefolder", "a class-per-folder JPEG/PNG tree in data.root",
           DATA_KEYS + ENCODED + DECODE_ONCE,
           root_hint="the folder that holds the train/ and val/ class folders (e.g. data.root=/data/my-images)"),
    Source("cifar10", "the official python archive in data.root", ("root", "download", "verify_checksums"),
           root_hint="the folder for cifar-10-python.tar.gz (e.g. data.root=data/cifar10 data.download=true)"),
    Source("webdataset", "tar shards in data.root", ("root", "train_split", "eval_split", "shuffle_buffer") + ENCODED,
           root_hint="the folder of .tar shards, a glob or a list file (e.g. data.root=/data/shards; write them "
                     "with python -m pipeline.data.shards)"),
    Source("synthetic", "random images", ("synthetic_images",)),
)}


def readers(key: str) -> tuple[str, ...]:
    """The sources that read `key` (a source-specific key of `data`), in table order; () for any other key."""
    return tuple(name for name, source in SOURCES.items() if key in source.reads)
