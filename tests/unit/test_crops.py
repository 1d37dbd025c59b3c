"""Random-resized crops decoded from the file, images as they come (grayscale, CMYK, progressive, PNG named
.JPEG, EXIF-rotated, very large, smaller than the crop), header sizes, per-channel normalization.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO, write_photo_folder
from support.crops import ODD, pillow_rgb

from pipeline.config import load_config
from pipeline.data import ImageSet, build_loader, load_image_sets
from pipeline.data.crops import random_resized_crops
from pipeline.data.dali_graph import ChannelStats
from pipeline.data.dali_loader import normalize_channels
from pipeline.data.images import image_size

CPU = torch.device("cpu")


SHARED_FLOWERS = REPO.parent / "shared" / "data" / "flowers-photos.tar"


AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)


def odd_set() -> ImageSet:
    names = [f"odd/{kind}.JPEG" for kind in ODD]  # every kind named .JPEG, as ImageNet names them
    return ImageSet(names=names, labels=np.arange(len(ODD), dtype=np.int64), classes=list(ODD),
                    encoded=[np.frombuffer(data, np.uint8) for data, _ in ODD.values()])


def data_cfg(*overrides: str):
    return load_config(None, list(overrides)).data


RRC = ("data.train.kind=random_resized_crop", "data.train.crop=32", "data.eval.size=36", "data.eval.crop=32")


def window_fits_the_ranges(top, left, h, w, height, width) -> np.ndarray:
    """Per window: inside the image, and area and aspect within the ranges up to the rounding to pixels."""
    inside = (top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)
    area = height * width
    area_ok = ((w - 0.5) * (h - 0.5) <= AREA[1] * area) & ((w + 0.5) * (h + 0.5) >= AREA[0] * area)
    aspect_ok = ((w + 0.5) / (h - 0.5) >= ASPECT[0]) & ((w - 0.5) / (h + 0.5) <= ASPECT[1])
    return inside & area_ok & aspect_ok


def test_header_sizes_match_pillow():
    for kind, (data, hw) in ODD.items():
        assert image_size(np.frombuffer(data, np.uint8), kind) == hw == pillow_rgb(data).shape[:2], kind


def test_every_kind_decodes_to_rgb_of_its_displayed_size():
    """Through the real DALI graph (the decode stage): 3 channels, EXIF orientation applied, the
    header's size, and the pixels Pillow decodes (CMYK and grayscale converted to RGB alike)."""
    images = odd_set()
    ld = build_loader(data_cfg(*RRC), images=images, train=False, batch_size=1, rank=0, world_size=1, seed=0,
                      device=CPU, dtype=torch.float32, stop_after="decode")
    for (kind, (data, hw)), (decoded, _) in zip(ODD.items(), ld):
        out = np.array(decoded[0])
        assert out.shape == (*hw, 3) and out.dtype == np.uint8, kind
        diff = np.abs(out.astype(int) - pillow_rgb(data)).mean()
        assert diff < 2.0, f"{kind}: mean difference {diff:.2f} from Pillow's decode"


@pytest.mark.parametrize("backend", ["dali", "torchvision"])
@pytest.mark.parametrize("train", [True, False], ids=["train-rrc", "eval"])
def test_every_kind_comes_out_at_the_network_size(backend, train):
    images = odd_set()
    ld = build_loader(data_cfg(*RRC), images=images, train=train, batch_size=len(ODD), rank=0, world_size=1, seed=0,
                      device=CPU, dtype=torch.float32, backend=backend)
    x, y = next(iter(ld))
    assert x.shape == (len(ODD), 3, 32, 32) and torch.isfinite(x).all()
    assert sorted(y.tolist()) == list(range(len(ODD)))


@pytest.mark.skipif(not SHARED_FLOWERS.is_file(), reason=f"needs {SHARED_FLOWERS} (absent on this machine)")
def test_header_sizes_of_real_photographs_are_dalis(tmp_path):
    import tarfile

    with tarfile.open(SHARED_FLOWERS) as tar:
        tar.extractall(tmp_path, filter="data")
    cfg = data_cfg("data.source=imagefolder", f"data.root={tmp_path / 'flowers'}", *RRC)
    train, _ = load_image_sets(cfg)
    ld = build_loader(cfg, images=train, train=False, batch_size=50, rank=0, world_size=1, seed=0, device=CPU,
                      dtype=torch.float32, stop_after="decode")
    shapes = [np.array(batch[i]).shape[:2] for batch, _ in ld for i in range(len(batch))]
    assert len(shapes) == len(train) == 400
    assert shapes == [image_size(train.read_encoded(i), train.names[i]) for i in range(len(train))]


def test_windows_stay_in_the_ranges_and_match_torchvisions_distribution():
    from torchvision.transforms import RandomResizedCrop

    rng = np.random.default_rng(0)
    for height, width in [(375, 500), (240, 320), (500, 333), (64, 64)]:
        n = 4000
        top, left, h, w = random_resized_crops(np.full(n, height), np.full(n, width), AREA, ASPECT, rng)
        assert window_fits_the_ranges(top, left, h, w, height, width).all()
        torch.manual_seed(0)
        tv = np.array([RandomResizedCrop.get_params(torch.empty(1, height, width), list(AREA), list(ASPECT))
                       for _ in range(n)])
        for ours, theirs, what in ((h * w / (height * width), tv[:, 2] * tv[:, 3] / (height * width), "area"),
                                   (np.log(w / h), np.log(tv[:, 3] / tv[:, 2]), "log aspect"),
                                   ((top + h / 2) / height, (tv[:, 0] + tv[:, 2] / 2) / height, "centre y")):
            assert abs(ours.mean() - theirs.mean()) < 0.02, (height, width, what)
            assert abs(ours.std() - theirs.std()) < 0.02, (height, width, what)


@pytest.mark.parametrize("height, width", [(10, 1000), (1000, 10)])
def test_no_window_fits_gives_torchvisions_centre_fallback(height, width):
    from torchvision.transforms import RandomResizedCrop

    top, left, h, w = random_resized_crops(np.full(50, height), np.full(50, width), AREA, ASPECT,
                                           np.random.default_rng(1))
    expected = RandomResizedCrop.get_params(torch.empty(1, height, width), list(AREA), list(ASPECT))
    # no attempt fits so thin an image
    assert set(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist())) == {expected}


def test_the_graph_decodes_the_drawn_windows_and_roi_equals_full_decode(tmp_path):
    """The decode stage of the real graph gives windows inside the ranges; decoding only the window
    gives the same pixels as decoding the whole image and slicing it."""
    root = write_photo_folder(tmp_path / "photos", {"train": {"a": 24}, "val": {"a": 2}})
    windows = {}
    for roi in ("true", "false"):
        cfg = data_cfg("data.source=imagefolder", f"data.root={root}", *RRC, f"data.train.roi_decode={roi}")
        train, _ = load_image_sets(cfg)
        ld = build_loader(cfg, images=train, train=True, batch_size=24, rank=0, world_size=1, seed=4, device=CPU,
                          dtype=torch.float32, stop_after="decode")
        decoded, labels = next(iter(ld))
        windows[roi] = [np.array(decoded[i]) for i in range(24)]
    sizes = np.array([image_size(train.read_encoded(i), train.names[i]) for i in range(24)])
    order = build_loader(cfg, images=train, train=True, batch_size=24, rank=0, world_size=1, seed=4, device=CPU,
                         dtype=torch.float32).plan.indices(0, 0)  # the images of batch 0, in its order
    hh, ww = sizes[order, 0], sizes[order, 1]
    h = np.array([w.shape[0] for w in windows["true"]])
    w = np.array([w.shape[1] for w in windows["true"]])
    fallback = (h == hh) | (w == ww)  # the centre crop of a whole side: only where no attempt fitted
    assert (window_fits_the_ranges(0, 0, h, w, hh, ww) | fallback).all()
    assert len(set(zip(h.tolist(), w.tolist()))) > 12, "windows vary"
    for a, b in zip(windows["true"], windows["false"]):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_per_channel_normalization_in_the_graph_and_in_torch():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    colour = np.array([100, 150, 200], np.uint8)
    arrays = np.broadcast_to(colour, (4, 40, 40, 3)).copy()
    images = ImageSet(names=[f"m{i}" for i in range(4)], labels=np.arange(4), classes=list("abcd"), arrays=arrays)
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std)], dtype=torch.float32)
    expected = expected.view(1, 3, 1, 1)
    cfg = data_cfg("data.normalize=channel", "data.train.min_side=34", "data.train.max_side=38",
                   "data.train.crop=32")
    x, _ = next(iter(build_loader(cfg, images=images, train=True, batch_size=4, rank=0, world_size=1, seed=0,
                                  device=CPU, dtype=torch.float32)))  # a CPU trainer: normalized by DALI
    assert torch.allclose(x, expected.expand_as(x), atol=1e-5)
    torch_side = normalize_channels(torch.from_numpy(arrays), ChannelStats(mean, std), torch.float32)  # GPU trainers
    assert torch_side.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(torch_side, expected.expand_as(torch_side), atol=1e-5)


def test_rrc_outputs_are_standardized_per_image_by_default(tmp_path):
    root = write_photo_folder(tmp_path / "photos", {"train": {"a": 8}, "val": {"a": 2}})
    cfg = data_cfg("data.source=imagefolder", f"data.root={root}", *RRC)
    train, _ = load_image_sets(cfg)
    x, _ = next(iter(build_loader(cfg, images=train, train=True, batch_size=8, rank=0, world_size=1, seed=0,
                                  device=CPU, dtype=torch.float32)))
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-3)
    assert torch.allclose(x.std(dim=(1, 2, 3), unbiased=False), torch.ones(8), atol=1e-2)

