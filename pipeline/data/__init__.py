"""Input pipelines: what images exist, which ones each rank reads, and how they reach the device.

    sources/               one module per data.source (pipeline/sources.py has their rows): the shipped sample,
                           image folders (directory or archive; ImageNet's flat validation folder with a labels
                           file), CIFAR-10, tar shards, synthetic; each opens its image sets and fingerprints its data
    image_set.py           ImageSet: one split of any source (files, bytes in memory, shard members or arrays)
    cifar10.py             the CIFAR-10 python archive's batches, checked and unpickled so they cannot run code
    download.py            a file downloaded once, however many processes ask, kept only when its MD5 matches
    digests.py             SHA-1 of files and listings, what the fingerprints are made of
    webdataset.py          tar shards: split names, DALI index files, the class map, members read by offset
    shards.py              the shard writer: python -m pipeline.data.shards SRC_FOLDER OUT_DIR
    images.py              cheap signature checks, header sizes, full-decode diagnosis of encoded files
    cache.py               decode once: small same-size images decoded at start-up into arrays (data.cache)
    sampler.py             ShardedBatches: the per-epoch permutation sharded by global rank; ShardStreamBatches:
                           shards read whole in a per-epoch order through a shuffle buffer (pure numpy)
    readers.py             encoded bytes of the next batches, read ahead by threads (files; shards in order)
    crops.py               random-resized-crop windows drawn in numpy (torchvision's algorithm), their callback
    augment/               the training-only augmentation levers of both graphs (augment/levers.py together):
                           automatic augmentation (TrivialAugment, RandAugment, AutoAugment with
                           nvidia.dali.auto_aug, choices drawn in numpy), random erasing, progressive resizing
    dali_graph.py          the DALI graphs (read, decode, resize, crop + flip; decode the window, resize, flip)
    transform.py           the eval transform described once (resize, crop, normalization): evaluation, checkpoints,
                           exported models and predict take it from here
    dali_loader.py         the DALI backend: batch callbacks, pipeline loop, hand-off to torch
    torchvision_loader.py  the torchvision DataLoader baseline with the identical augmentation
    loader.py              build_loader(backend=dali|torchvision|synthetic): one interface for all

Imports go to the root only (config types are duck-typed sections): data knows nothing of
training, run records, benchmarks or tools.
"""

from pipeline.data.image_set import ImageSet
from pipeline.data.images import BadImageError
from pipeline.data.loader import Loader, build_loader, load_image_sets
from pipeline.errors import DataError

__all__ = ["BadImageError", "DataError", "ImageSet", "Loader", "build_loader", "load_image_sets"]
