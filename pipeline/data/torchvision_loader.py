"""The baseline: a torchvision DataLoader doing the same augmentation as the DALI graph.

It exists to be compared against (`python -m pipeline.bench loader|train`), so it does the
identical work: decode, resize the shorter side to s ~ U{min_side..max_side}, random crop x crop,
flip, per-image standardization where the DALI loader does it (on the device for a GPU trainer:
uint8 batches, `standardize` after the copy; in the workers for a CPU trainer), the training
dtype, NCHW channels_last, with the same sharded index plan. It is written the way a careful user would write it: uint8 tensor ops (torchvision.io
decoding, v2 functional resize) in worker processes, HWC crops so the collated batch needs no
copy to become channels_last, pinned memory and non_blocking copies on CUDA.

With `data.train.kind: random_resized_crop` it decodes the whole file (torchvision has no
region-of-interest decode), applies EXIF orientation as DALI's decoder does, and crops with
`RandomResizedCrop.get_params` + `resized_crop` (antialiased), the window distribution the DALI
graph's numpy draw reproduces (pipeline/data/crops.py). `data.normalize: channel` normalizes with
the per-channel statistics in both places.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch

from pipeline.constants import INTERPOLATIONS
from pipeline.data.crops import CropSpec
from pipeline.data.dali_graph import AugmentSpec, ChannelStats
from pipeline.data.dali_loader import normalize_batch
from pipeline.data.sampler import ShardedBatches
from pipeline.data.sources import ImageSet


class _AugmentedImages(torch.utils.data.Dataset):
    """One augmented image, HWC: uint8, or normalized in `dtype` when `std_eps` is given."""

    def __init__(self, images: ImageSet, spec: AugmentSpec | CropSpec, std_eps: float | None,
                 channel_stats: ChannelStats | None, dtype: torch.dtype) -> None:
        self.images, self.spec, self.std_eps, self.dtype = images, spec, std_eps, dtype
        self.channel_stats = channel_stats

    def __len__(self) -> int:
        return len(self.images)

    def _decoded(self, index: int) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image

        if self.images.is_encoded:
            data = torch.from_numpy(np.array(self.images.fetch_encoded(index)))  # a writable copy
            # DALI's decoders apply EXIF orientation (adjust_orientation=True): so does the baseline.
            return decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return torch.from_numpy(self.images.arrays[index]).permute(2, 0, 1)

    def _reference(self, img: torch.Tensor, mode: str) -> torch.Tensor:
        """Shorter side to s ~ U{min_side..max_side}, then the random (or centred) crop."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        spec = self.spec
        side = random.randint(spec.min_side, spec.max_side)
        img = F.resize(img, [side], interpolation=InterpolationMode(mode), antialias=True)  # shorter side
        h, w = img.shape[-2:]
        crop = spec.out_side
        if spec.random_crop:
            top, left = random.randint(0, h - crop), random.randint(0, w - crop)
        else:
            top, left = (h - crop) // 2, (w - crop) // 2
        return img[:, top:top + crop, left:left + crop]

    def _random_resized_crop(self, img: torch.Tensor, mode: str) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms.v2 import functional as F

        spec = self.spec
        top, left, h, w = RandomResizedCrop.get_params(img, list(spec.area), list(spec.aspect))
        return F.resized_crop(img, top, left, h, w, [spec.out_side, spec.out_side],
                              interpolation=InterpolationMode(mode), antialias=True)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        spec = self.spec
        img = self._decoded(index)  # uint8 CHW
        mode = random.choice(INTERPOLATIONS) if spec.interpolation == "random" else spec.interpolation
        img = self._random_resized_crop(img, mode) if isinstance(spec, CropSpec) else self._reference(img, mode)
        if random.random() < spec.flip_prob:
            img = img.flip(-1)
        # HWC, as DALI's output: the collated NHWC batch is a channels_last NCHW view.
        hwc = img.permute(1, 2, 0).contiguous()
        if self.std_eps is not None:
            hwc = normalize_batch(hwc[None], self.std_eps, self.channel_stats, self.dtype)[0].permute(1, 2, 0)
        return hwc, int(self.images.labels[index])


class _PlanSampler(torch.utils.data.Sampler):
    """Index batches of one epoch from the shared sharded plan (so both loaders read the same data)."""

    def __init__(self, plan: ShardedBatches, start_epoch: int = 0) -> None:
        self.plan, self.epoch = plan, start_epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        for step in range(len(self.plan)):
            yield self.plan.indices(self.epoch, step).tolist()
        self.epoch += 1


class TorchvisionLoader:
    def __init__(self, images: ImageSet, plan: ShardedBatches, spec: AugmentSpec | CropSpec, *,
                 device: torch.device, dtype: torch.dtype, std_eps: float, num_workers: int, seed: int,
                 channel_stats: ChannelStats | None = None, start_epoch: int = 0,
                 compile_standardize: bool = False) -> None:
        self.device, self.dtype, self.std_eps, self.channel_stats = device, dtype, std_eps, channel_stats
        self.compiled = compile_standardize
        self.on_device = device.type == "cuda"  # standardize after the copy; else in the workers
        self._sampler = _PlanSampler(plan, start_epoch)
        self._loader = torch.utils.data.DataLoader(
            _AugmentedImages(images, spec, None if self.on_device else std_eps, channel_stats, dtype),
            batch_sampler=self._sampler, num_workers=num_workers,
            pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_seed_worker,
        )

    def __len__(self) -> int:
        return len(self._sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self._loader:
            if self.on_device:
                images = normalize_batch(images.to(self.device, non_blocking=True), self.std_eps,
                                         self.channel_stats, self.dtype, compiled=self.compiled)
            else:
                images = images.permute(0, 3, 1, 2)  # NHWC -> a channels_last NCHW view
            yield images, labels.to(self.device, non_blocking=True)

    def state_dict(self) -> None:
        return None  # no exact mid-epoch resume: worker RNG streams are not checkpointed


def _seed_worker(worker_id: int) -> None:
    random.seed(torch.initial_seed() % 2**32)
