"""Loaders: one interface for every input backend.

Iterating a loader yields one epoch of `(images, labels)` already on the training device: images
NCHW in channels_last memory in the training dtype, labels int64. `len(loader)` is the number of
steps per epoch on this rank. `state_dict()` returns the position to resume from exactly (None
for backends without exact resume), and `build_loader(..., state=...)` takes it back.

    train_set, val_set = load_image_sets(cfg.data)
    loader = build_loader(cfg.data, images=train_set, train=True, batch_size=64, rank=0, world_size=1,
                          seed=0, device=torch.device("cpu"), dtype=torch.float32)
    for images, labels in loader: ...

Backends (`backend=`): `dali` (the product: the DALI graph on data.device), `torchvision` (a
DataLoader doing the identical augmentation: the baseline benchmarks compare against) and
`synthetic` (device-resident random images: the input ceiling). `stop_after=` cuts the DALI graph
after a stage (read, decode, resize, or full: the whole graph without the hand-off to torch) and
yields its raw outputs, for the benchmarks' per-stage table.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from pipeline.constants import MAX_IMAGE_PIXELS
from pipeline.data.crops import CropSpec
from pipeline.data.dali_graph import STAGES, AugmentSpec, ChannelStats, DecoderOptions
from pipeline.data.dali_loader import Batch, DaliLoader
from pipeline.data.images import find_bad_images, undecodable_error
from pipeline.data.sampler import ShardedBatches, ShardStreamBatches
from pipeline.data.sources import ImageSet, open_images
from pipeline.data.transform import EvalTransform
from pipeline.errors import ConfigError
from pipeline.sources import SOURCES

log = logging.getLogger(__name__)

BACKENDS = ("dali", "torchvision", "synthetic")


class Loader(Protocol):
    """What the trainer and the benchmarks rely on."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any] | None: ...


class SyntheticLoader:
    """Random images already at the network's input size, resident on the device: the input ceiling."""

    def __init__(self, steps: int, batch_size: int, side: int, num_classes: int, *,
                 device: torch.device, dtype: torch.dtype, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(batch_size, side, side, 3, generator=gen).to(device=device, dtype=dtype)
        self.images = images.permute(0, 3, 1, 2)  # channels_last, like the DALI output
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield self.images, self.labels

    def state_dict(self) -> None:
        return None  # every batch is the same: nothing to resume


# ------------------------------------------------------------------------------------ builders


def resolve_dali_device(data_device: str) -> str:
    if data_device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if data_device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("data.device: gpu was asked for but CUDA is not available (use data.device=cpu or "
                          "data.device=auto)")
    return data_device


def load_image_sets(data_cfg: Any) -> tuple[ImageSet, ImageSet]:
    """(train, eval) sets of `data_cfg.source`, after the optional up-front decode scan, decoded once
    into arrays when data.cache allows (pipeline/data/cache.py).

    data.max_pixels holds whatever check_images says: the scan (error, skip) names images over it
    with the undecodable ones; otherwise the DALI graph and the readers refuse them before decoding.
    """
    train, val = open_images(data_cfg)
    if data_cfg.check_images != "off":
        train, val = (scan_image_set(s, data_cfg.check_images, data_cfg.max_pixels) for s in (train, val))
    if data_cfg.cache == "auto" and SOURCES[data_cfg.source].decode_once:
        if data_cfg.train.kind != "reference":  # the crop graph decodes windows of the encoded files
            log.info("data.cache=auto: not decoding once: data.train.kind=%s decodes from the files",
                     data_cfg.train.kind)
            return train, val
        from pipeline.data.cache import decode_once

        train, val = decode_once([train, val], num_threads=data_cfg.num_threads,
                                 max_bytes=data_cfg.cache_max_gb * 2**30, checked=data_cfg.check_images != "off",
                                 max_pixels=data_cfg.max_pixels)
    return train, val


def scan_image_set(images: ImageSet, mode: str, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageSet:
    """Decode every file up front (Pillow; files over `max_pixels` are refused undecoded); `error`: fail
    naming them, `skip`: leave them out."""
    if not images.is_encoded:
        return images
    t0 = time.perf_counter()
    bad = find_bad_images(range(len(images)), images.read_encoded, images.names, max_pixels=max_pixels)
    log.info("checked %d images in %.1f s: %d undecodable", len(images), time.perf_counter() - t0, len(bad))
    if not bad:
        return images
    if mode == "error":
        raise undecodable_error([msg for _, msg in bad])
    keep = np.setdiff1d(np.arange(len(images)), [i for i, _ in bad])
    if not len(keep):  # nothing to train or evaluate on: say why, rather than fail on an empty set later
        raise undecodable_error([msg for _, msg in bad], " (data.check_images=skip would leave none of this split)")
    log.warning("data.check_images=skip: left out %d undecodable file(s), e.g. %s", len(bad), bad[0][1])
    return images.subset(keep)


def build_plan(data_cfg: Any, images: ImageSet, *, train: bool, batch_size: int, rank: int, world_size: int,
               seed: int, max_steps: int = 0) -> ShardedBatches | ShardStreamBatches:
    """Which samples each rank reads at each step: a global permutation per epoch, or, for tar
    shards, the epoch's shard order read from start to end through a shuffle buffer."""
    if images.members is not None:
        return ShardStreamBatches(tuple(images.members.shard_sizes), batch_size, rank, world_size, shuffle=train,
                                  drop_last=train, seed=seed, buffer_size=data_cfg.shuffle_buffer, max_steps=max_steps)
    return ShardedBatches(len(images), batch_size, rank, world_size, shuffle=train, drop_last=train, seed=seed,
                          max_steps=max_steps)


def augment_spec(data_cfg: Any, train: bool) -> AugmentSpec | CropSpec:
    """The training augmentation data.train.kind names, or the evaluation preprocessing."""
    if not train:
        return EvalTransform.from_config(data_cfg).spec
    if data_cfg.train.kind == "random_resized_crop":
        return CropSpec.for_train(data_cfg.train)
    return AugmentSpec.for_train(data_cfg.train)


def channel_stats(data_cfg: Any) -> ChannelStats | None:
    """data.normalize: None for per-image standardization, else the per-channel mean and std (training and
    evaluation normalize alike: the eval transform's statistics)."""
    return EvalTransform.from_config(data_cfg).channel_stats


def build_loader(
    data_cfg: Any,
    *,
    images: ImageSet | None,
    train: bool,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    num_classes: int = 10,
    max_steps: int = 0,
    state: dict[str, Any] | None = None,
    start_epoch: int = 0,
    backend: str = "auto",
    stop_after: str | None = None,
    compile_standardize: bool = False,
    total_epochs: int | None = None,
    output: str = "normalized",
    transform: EvalTransform | None = None,
) -> Loader:
    """The train (`train=True`) or evaluation loader of this rank for `data_cfg` (the `data` section).

    Training batches are a per-epoch permutation sharded by global rank with the remainder dropped;
    evaluation covers every image exactly once across ranks. `seed` orders the data (same on
    all ranks); augmentation draws from seed + rank. `backend`: auto (synthetic for
    data.source=synthetic, else dali), dali, torchvision or synthetic. `compile_standardize`: a GPU
    trainer's per-image standardization goes through torch.compile (for trainers that compile).
    `total_epochs`: the run's length, which progressive resizing sizes the training batches by
    (total steps = total_epochs x steps per epoch; `DaliLoader.set_total_steps` replaces it, e.g. with a
    time budget's planned steps); None: the final size throughout. `output`: normalized (the network's
    input, above), or uint8: the graph's images as they leave DALI, NHWC uint8 and not normalized (what
    an exported model takes, its normalization inside; the dali backend only). `transform`: the evaluation's
    resize, crop and normalization when not the one `data_cfg` describes (a model's own, for predict).
    """
    if backend == "auto":
        backend = "synthetic" if data_cfg.source == "synthetic" else "dali"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if output not in ("normalized", "uint8") or (output == "uint8" and backend != "dali"):
        raise ValueError(f"output={output!r}: normalized, or uint8 from the dali backend")
    if stop_after is not None and (backend != "dali" or stop_after not in STAGES):
        raise ValueError(f"stop_after={stop_after!r}: only the dali backend stops early, after one of {STAGES}")
    if backend == "synthetic":
        aug = data_cfg.train if train else data_cfg.eval
        n = data_cfg.synthetic_images if train else max(data_cfg.synthetic_images // 5, batch_size * world_size)
        plan = ShardedBatches(n, batch_size, rank, world_size, shuffle=False, drop_last=train, max_steps=max_steps)
        return SyntheticLoader(len(plan), batch_size, aug.crop, num_classes, device=device, dtype=dtype,
                               seed=seed + rank)
    if images is None:
        raise ValueError("the dali and torchvision backends read an image set: pass images=load_image_sets(...)[i]")
    if train and len(images) < batch_size * world_size:
        fits = world_size * max(1, len(images) // world_size // 2)  # half the set: two steps per epoch at least
        raise ConfigError(f"train.global_batch_size: {batch_size * world_size} is larger than the "
                          f"{len(images)} training images (e.g. train.global_batch_size={fits})")
    plan = build_plan(data_cfg, images, train=train, batch_size=batch_size, rank=rank, world_size=world_size,
                      seed=seed, max_steps=max_steps)
    spec = augment_spec(data_cfg, train) if train or transform is None else transform.spec
    stats, std_eps = ((transform.channel_stats, transform.std_eps) if transform is not None and not train
                      else (channel_stats(data_cfg), data_cfg.std_eps))
    if backend == "torchvision":
        if spec.levers.any:
            raise ConfigError("data.train.auto_augment, erase_prob, progressive_start_crop: the torchvision "
                              "baseline loader does not implement the training levers (they run in the DALI graph); "
                              "turn them off to compare loaders")
        from pipeline.data.torchvision_loader import TorchvisionLoader

        return TorchvisionLoader(images, plan, spec, device=device, dtype=dtype, std_eps=std_eps,
                                 channel_stats=stats, num_workers=data_cfg.num_threads,
                                 seed=seed + rank, start_epoch=start_epoch, compile_standardize=compile_standardize)
    return DaliLoader(
        images, plan, spec, device=device, dali_device=resolve_dali_device(data_cfg.device), dtype=dtype,
        std_eps=std_eps, channel_stats=stats, num_threads=data_cfg.num_threads,
        prefetch_queue_depth=data_cfg.prefetch_queue_depth, decoder=DecoderOptions.from_config(data_cfg),
        seed=seed + rank + (0 if train else 10_000), state=state, start_epoch=start_epoch,
        stop_after=stop_after, compile_standardize=compile_standardize, uint8_output=output == "uint8",
        total_steps=total_epochs * len(plan) if train and total_epochs is not None else None,
    )
