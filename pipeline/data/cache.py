"""Decode once: small encoded images decoded at start-up, in DALI, into the in-memory array path.

    train, val = decode_once([train, val], num_threads=2, max_bytes=4 * 2**30)   # data.cache: auto

CIFAR's 32x32 JPEGs are tiny: decoding them costs more per image than everything else the graph
does, and on a GPU the `mixed` decoder runs its Huffman stage on the CPU below about 1 Mpx per image,
one batch at a time (on an H200 decoding took the largest drop of any stage: BENCHMARKS.md, "H200:
DALI on the GPU"). The whole decoded CIFAR-10 training set is 50,000 x 32 x 32 x 3 = 150 MB. So when every
image of both splits has the same size and the decoded splits fit `data.cache_max_gb`, they are
decoded once, by the same DALI CPU decoder the CPU graph uses, into one uint8 (N, H, W, 3) array
per split; training then takes the arrays path (on a GPU trainer: resident on the GPU, gathered
there). Batches are the same as decoding every step (the same decoder, the same plan and draws:
tests/unit/test_loader.py checks it), and sharding, exact resume and exactly-once evaluation are the
arrays path's, which are the same as the files'.

What is not cached: already decoded sets (the CIFAR-10 python archive), images of different sizes
(photographs), and sets over the ceiling. The sizes are read from the headers of up to
`PROBE` images spread over each split before anything is decoded; an image that then decodes to
another size stops the caching (the files are decoded every step instead).

Files are checked with Pillow before DALI decodes them (unless data.check_images scanned them
already): DALI 2.4's CPU decoder can crash the process (SIGSEGV in
`ImageDecoder<CPUBackend>::RunImplImpl`, seen here on truncated and garbled JPEGs) instead of
raising the error the loader turns into a message naming the file. So an undecodable file fails
here, at start-up, named, with what to do.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.constants import MAX_IMAGE_PIXELS
from pipeline.data.dali_graph import AugmentSpec, DecoderOptions
from pipeline.data.dali_loader import DaliLoader
from pipeline.data.images import REMOVE_OR_SKIP, find_bad_images, undecodable_error
from pipeline.data.sampler import ShardedBatches
from pipeline.data.sources import ImageSet

log = logging.getLogger(__name__)

PROBE = 64  # images per split whose header sizes are read before deciding
BATCH = 256  # images per decode batch


@dataclass(frozen=True)
class Decision:
    cache: bool
    why: str  # for the log: what was decided and why
    shape: tuple[int, int] | None = None  # (height, width) of every image


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from an encoded image's header (Pillow reads no pixels), or None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - an unreadable file is named by the decoder, not here
        return None
    return height, width


def probe_sizes(images: ImageSet, count: int = PROBE) -> set[tuple[int, int]]:
    """The distinct header sizes of up to `count` images spread evenly over the set."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).astype(int))
    sizes = set()
    for i in picks:
        try:
            size = header_size(images.read_encoded(int(i)))
        except OSError:
            continue
        if size is not None:
            sizes.add(size)
    return sizes


def decide(sets: list[ImageSet], max_bytes: float) -> Decision:
    """Whether to decode `sets` once: all encoded, one size, and within `max_bytes` decoded."""
    if not all(s.is_encoded for s in sets):
        return Decision(False, "the images are decoded already")
    sizes = set().union(*(probe_sizes(s) for s in sets))
    if len(sizes) != 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:3])
        return Decision(False, f"the images differ in size ({shown}, ...): decoding every batch")
    (height, width), = sizes
    total = sum(len(s) for s in sets) * height * width * 3
    if total > max_bytes:
        return Decision(False, f"decoded they would take {total / 2**30:.1f} GB, over data.cache_max_gb "
                               f"({max_bytes / 2**30:g}): decoding every batch")
    return Decision(True, f"{width}x{height} images", (height, width))


def decode_set(images: ImageSet, shape: tuple[int, int], num_threads: int, max_pixels: int) -> ImageSet | None:
    """`images` decoded by DALI's CPU decoder into one (N, H, W, 3) uint8 array; None if one differs in size."""
    plan = ShardedBatches(len(images), min(BATCH, len(images)), 0, 1, shuffle=False, drop_last=False)
    spec = AugmentSpec(out_side=min(shape), min_side=min(shape), max_side=min(shape), random_crop=False,
                       flip_prob=0.0, interpolation="bilinear")  # unused: the graph stops after decoding
    loader = DaliLoader(images, plan, spec, device=torch.device("cpu"), dali_device="cpu", dtype=torch.float32,
                        std_eps=0.0, num_threads=num_threads, prefetch_queue_depth=2, seed=0, stop_after="decode",
                        decoder=DecoderOptions(max_pixels=max_pixels))
    arrays = np.empty((len(images), *shape, 3), np.uint8)
    begin = 0
    for decoded, _labels in loader:  # a file that fails to decode raises BadImageError naming it
        shapes = decoded.shape()
        if any(tuple(s) != (*shape, 3) for s in shapes):
            odd = next(i for i, s in enumerate(shapes) if tuple(s) != (*shape, 3))
            log.info("data.cache=auto: %s decodes to %s, not %s: decoding every batch", images.names[begin + odd],
                     tuple(shapes[odd]), (*shape, 3))
            return None
        arrays[begin:begin + len(shapes)] = decoded.as_array()
        begin += len(shapes)
    return ImageSet(names=images.names, labels=images.labels, classes=images.classes, arrays=arrays,
                    skipped=images.skipped)


def check_decodable(sets: list[ImageSet], max_pixels: int = 0) -> None:
    """Raise BadImageError naming every file Pillow cannot decode or that is over `max_pixels` (before DALI
    sees them)."""
    bad = [msg for s in sets for _, msg in find_bad_images(range(len(s)), s.read_encoded, s.names,
                                                           max_pixels=max_pixels)]
    if bad:
        raise undecodable_error(bad, REMOVE_OR_SKIP)


def decode_once(sets: list[ImageSet], *, num_threads: int, max_bytes: float, checked: bool = False,
                max_pixels: int = MAX_IMAGE_PIXELS) -> list[ImageSet]:
    """The sets decoded into arrays when `decide` says so (all or none), else unchanged; the log says which.

    `checked`: every file was decoded by data.check_images already (no second check). `max_pixels`:
    larger images are refused, named, before anything decodes them (0 = no limit).
    """
    decision = decide(sets, max_bytes)
    if not decision.cache:
        log.info("data.cache=auto: not decoding once: %s", decision.why)
        return sets
    t0 = time.perf_counter()
    if not checked:
        check_decodable(sets, max_pixels)
    decoded = []
    for images in sets:
        arrays = decode_set(images, decision.shape, num_threads, max_pixels)
        if arrays is None:
            return sets
        decoded.append(arrays)
    n, mb = sum(len(s) for s in decoded), sum(s.arrays.nbytes for s in decoded) / 2**20
    log.info("data.cache=auto: decoded %d %s once into memory (%.0f MB) in %.1f s; batches come from the arrays",
             n, decision.why, mb, time.perf_counter() - t0)
    return decoded
