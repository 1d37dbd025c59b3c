"""The DALI loaders on the CPU: shapes, statistics, augmentation, sharding over ranks, resume, decode-once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    smooth_image,
    write_imagefolder,
)
from support.data import CPU, SMALL, assert_batch, data_cfg, first_batch, folder_cfg, loader

from pipeline.data import ImageSet, build_loader, load_image_sets
from pipeline.data.dali_loader import standardize as standardize_batch


def array_set(images: np.ndarray, labels=None) -> ImageSet:
    n = len(images)
    labels = np.arange(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return ImageSet(names=[f"mem[{i}]" for i in range(n)], labels=labels, classes=[str(i) for i in range(n)],
                    arrays=np.ascontiguousarray(images))


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)


def reference_resize(img: np.ndarray, side: int) -> torch.Tensor:
    """torch's bilinear resize (pixel centres, no antialiasing) of an HWC uint8 image -> CHW float."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[0]


def best_window(out: torch.Tensor, img: np.ndarray, crop: int, sides: range) -> tuple[float, int, int, int]:
    """(error, side, top, left) of the resize-then-crop view that best explains `out`."""
    best = (float("inf"), 0, 0, 0)
    for side in sides:
        resized = reference_resize(img, side)
        for top in range(side - crop + 1):
            for left in range(side - crop + 1):
                view = standardize(resized[:, top:top + crop, left:left + crop])
                err = (view - out).pow(2).mean().item()
                best = min(best, (err, side, top, left))
    return best


def test_synthetic_source_batches():
    cfg = data_cfg("data.source=synthetic", "data.synthetic_images=64", *SMALL)
    ld = build_loader(cfg, images=None, train=True, batch_size=8, rank=0, world_size=2, seed=0, device=CPU,
                      dtype=torch.bfloat16)
    assert len(ld) == 64 // 16
    batches = list(ld)
    assert len(batches) == 4
    assert_batch(*batches[0], 32, torch.bfloat16, 8)


def test_hand_off_standardizes_uint8_nhwc_into_channels_last_training_dtype():
    nhwc = torch.randint(0, 256, (4, 7, 5, 3), dtype=torch.uint8)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        images = standardize_batch(nhwc, 1e-5, dtype)
        assert images.shape == (4, 3, 7, 5) and images.dtype == dtype
        assert images.is_contiguous(memory_format=torch.channels_last)
        expected = torch.stack([standardize(img.permute(2, 0, 1).float()) for img in nhwc])
        assert torch.allclose(images.float(), expected, atol=1e-2 if dtype != torch.float32 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_per_image_standardization(dtype):
    rng = np.random.default_rng(0)
    imgs = np.stack([smooth_image(rng) for _ in range(16)])
    imgs[3] = 7  # a constant image: zero variance must not produce NaN
    cfg = data_cfg()  # the reference sizes: 124..132 -> 122
    x, y = first_batch(loader(cfg, array_set(imgs), batch=16, dtype=dtype))
    x = x.float()
    means, stds = x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3), unbiased=False)
    assert torch.isfinite(x).all()
    assert means.abs().max() < 1e-2
    constant = y == 3  # labels are the sample indices
    assert torch.allclose(stds[~constant], torch.ones(15), atol=1e-2)
    assert x[constant].abs().max() < 1e-2  # resize rounding only, amplified by 1/sqrt(eps)


def test_flip_happens_in_about_half_the_images():
    rng = np.random.default_rng(1)
    img = smooth_image(rng)
    img[:, :8] = 255  # clearly asymmetric: a bright band on the left
    imgs = np.repeat(img[None], 200, axis=0)
    fixed = ("data.train.min_side=32", "data.train.max_side=32", "data.train.crop=32")  # no crop: window = image
    unflipped, _ = first_batch(loader(data_cfg(*fixed, "data.train.flip_prob=0"), array_set(imgs[:4]), batch=4))
    ref = unflipped[0]
    out, _ = first_batch(loader(data_cfg(*fixed), array_set(imgs), batch=200))
    same = (out - ref).abs().flatten(1).amax(1) < 1e-4
    mirrored = (out - ref.flip(-1)).abs().flatten(1).amax(1) < 1e-4
    assert bool((same ^ mirrored).all()), "every image is either the unflipped crop or its mirror"
    assert 70 <= int(mirrored.sum()) <= 130  # Binomial(200, 0.5): 5.6 sigma either side


def test_random_resize_crop_matches_resize_then_crop_and_varies():
    rng = np.random.default_rng(2)
    img = smooth_image(rng)
    cfg = data_cfg("data.train.min_side=26", "data.train.max_side=30", "data.train.crop=24",
                   "data.train.flip_prob=0")
    out, _ = first_batch(loader(cfg, array_set(np.repeat(img[None], 24, axis=0)), batch=24))
    fits = [best_window(o, img, 24, range(26, 31)) for o in out]
    # Each output is a resize-then-crop view up to the sub-pixel crop offset the ROI resize allows.
    assert max(f[0] for f in fits) < 0.02, fits
    assert len({f[1] for f in fits}) >= 3, "resize sides do not vary across the batch"
    assert len({(f[2], f[3]) for f in fits}) >= 6, "crop positions do not vary across the batch"


def test_eval_is_deterministic_and_matches_a_reference_resize():
    rng = np.random.default_rng(3)
    imgs = np.stack([smooth_image(rng) for _ in range(6)])
    cfg = data_cfg()  # eval: 32 -> 128 x 128
    ld = loader(cfg, array_set(imgs), train=False, batch=4)
    first = torch.cat([x for x, _ in ld])
    second = torch.cat([x for x, _ in ld])
    assert torch.equal(first, second)
    for out, img in zip(first, imgs):
        ref = standardize(reference_resize(img, 128))
        assert (out - ref).abs().max() < 0.05


def test_random_interpolation_option_runs():
    rng = np.random.default_rng(4)
    imgs = np.stack([smooth_image(rng) for _ in range(8)])
    x, _ = first_batch(loader(data_cfg("data.train.interpolation=random"), array_set(imgs)))
    assert x.shape == (8, 3, 122, 122) and torch.isfinite(x).all()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_dali_eval_shards_disjoint_and_complete(world):
    imgs = np.zeros((21, 32, 32, 3), np.uint8)
    cfg = data_cfg(*SMALL)
    seen = []
    for rank in range(world):
        for _, y in loader(cfg, array_set(imgs), train=False, batch=4, rank=rank, world=world):
            seen += y.tolist()
    assert sorted(seen) == list(range(21))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_dali_train_equal_steps_no_repeats(world):
    imgs = np.zeros((21, 32, 32, 3), np.uint8)
    cfg = data_cfg(*SMALL)
    loaders = [loader(cfg, array_set(imgs), batch=2, rank=r, world=world) for r in range(world)]
    assert len({len(ld) for ld in loaders}) == 1
    for _epoch in range(2):
        labels = [y.tolist() for ld in loaders for _, y in ld]
        assert all(len(b) == 2 for b in labels)
        assert len(labels) == world * len(loaders[0])
        flat = sum(labels, [])
        assert len(flat) == len(set(flat))


def test_epochs_reshuffle_deterministically_and_ranks_augment_differently():
    rng = np.random.default_rng(5)
    imgs = np.stack([smooth_image(rng) for _ in range(16)])
    cfg = data_cfg(*SMALL)
    a, b = loader(cfg, array_set(imgs), batch=4, seed=7), loader(cfg, array_set(imgs), batch=4, seed=7)
    a0, b0 = [y.tolist() for _, y in a], [y.tolist() for _, y in b]
    a1 = [y.tolist() for _, y in a]
    assert a0 == b0 and a0 != a1
    # Same sample order (data seed), different augmentation: rank 1 draws from seed + 1.
    x_r0 = first_batch(loader(cfg, array_set(imgs[:4]), batch=4, world=1, seed=0))[0]
    x_r1 = first_batch(loader(cfg, array_set(imgs[:4]), batch=4, world=1, seed=1))[0]
    assert not torch.equal(x_r0, x_r1)


@pytest.mark.parametrize("consumed", [3, 10], ids=["mid-epoch", "after-last-batch"])
def test_loader_state_resumes_exactly(consumed):
    """State taken after `consumed` of an epoch's 10 batches restores the rest, then the next epoch."""
    rng = np.random.default_rng(6)
    imgs = np.stack([smooth_image(rng) for _ in range(40)])
    cfg = data_cfg(*SMALL)
    ref = loader(cfg, array_set(imgs), batch=4, seed=3)
    assert len(ref) == 10
    it = iter(ref)
    for _ in range(consumed):
        next(it)
    state = ref.state_dict()  # after the last batch: a preemption before the epoch's reset
    rest = list(it) + list(ref)  # the rest of epoch 0, then epoch 1
    resumed = loader(cfg, array_set(imgs), batch=4, seed=3, state=state)
    again = list(resumed) + list(resumed)
    assert len(again) == len(rest) == 20 - consumed
    for (x1, y1), (x2, y2) in zip(rest, again):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)


def test_decode_once_gives_the_batches_of_decoding_every_step(tiny_tree):
    """data.cache=auto decodes the 24x24 JPEGs once; training and evaluation batches stay bit for bit."""
    cached_cfg, files_cfg = folder_cfg(tiny_tree), folder_cfg(tiny_tree, "data.cache=off")
    cached, files = load_image_sets(cached_cfg), load_image_sets(files_cfg)
    for c, f in zip(cached, files):
        assert c.arrays is not None and c.arrays.shape == (len(f), 24, 24, 3) and f.arrays is None
        assert c.names == f.names and np.array_equal(c.labels, f.labels)
    for train, (c, f) in ((True, (cached[0], files[0])), (False, (cached[1], files[1]))):
        a, b = loader(cached_cfg, c, train=train, batch=4), loader(files_cfg, f, train=train, batch=4)
        for _ in range(2):  # two epochs: the second one's permutation and draws too
            batches = list(zip(a, b, strict=True))
            assert batches
            for (x1, y1), (x2, y2) in batches:
                assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_decode_once_declines_mixed_sizes_and_sets_over_the_ceiling(tmp_path, caplog):
    mixed = write_imagefolder(tmp_path / "mixed", {"train": {"a": 3}, "val": {"a": 2}}, side=24)
    write_imagefolder(tmp_path / "wide", {"train": {"a": 2}}, side=40, seed=1)
    (tmp_path / "wide" / "train" / "a" / "000.jpg").rename(mixed / "train" / "a" / "big.jpg")
    with caplog.at_level("INFO"):
        train, _ = load_image_sets(folder_cfg(mixed))
    assert train.arrays is None and "differ in size" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        train, _ = load_image_sets(folder_cfg(tmp_path / "wide", "data.eval_split=train", "data.cache_max_gb=1e-6"))
    assert train.arrays is None and "over data.cache_max_gb" in caplog.text

