"""Input pipelines: what images exist, which ones each rank reads, and how they reach the device.

    sources.py             image sets: the shipped sample, image folders (directory or archive), CIFAR-10
    images.py              cheap signature checks and full-decode diagnosis of encoded files
    sampler.py             ShardedBatches: the per-epoch permutation sharded by global rank (pure numpy)
    dali_graph.py          the DALI graph (read, decode, resize, crop + flip) and its augmentation draws
    dali_loader.py         the DALI backend: batch callbacks, pipeline loop, hand-off to torch
    torchvision_loader.py  the torchvision DataLoader baseline with the identical augmentation
    loader.py              build_loader(backend=dali|torchvision|synthetic): one interface for all

Imports go to the root only (config types are duck-typed sections): data knows nothing of
training, run records, benchmarks or tools.
"""

from pipeline.data.images import BadImageError
from pipeline.data.loader import Loader, build_loader, load_image_sets
from pipeline.data.sources import DataError, ImageSet

__all__ = ["BadImageError", "DataError", "ImageSet", "Loader", "build_loader", "load_image_sets"]
