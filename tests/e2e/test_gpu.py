"""The DALI GPU graph and the GPU training path: run where CUDA and DALI are present, skipped elsewhere.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from conftest import write_cifar_archive, write_imagefolder

from pipeline.config import load_config
from pipeline.data import build_loader, load_image_sets
from runs import load_ckpt, run_train

pytestmark = pytest.mark.gpu


GPU = torch.device("cuda", 0)


SMALL = ("data.train.min_side=34", "data.train.max_side=38", "data.train.crop=32", "data.eval.size=36",
         "data.eval.crop=36", "data.num_threads=2")


@pytest.fixture
def sources(tmp_path):
    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 12, "b": 12}, "val": {"a": 5, "b": 6}})
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="mytree")
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", n_train_per_batch=8, n_test=12)
    return {
        "paths": ["data.source=imagefolder", f"data.root={tree}", "data.cache=off"],
        "encoded": ["data.source=imagefolder", f"data.root={archive}", "data.cache=off"],
        "resident": ["data.source=cifar10", f"data.root={tmp_path}"],
        "decoded-once": ["data.source=imagefolder", f"data.root={tree}"],  # data.cache=auto: resident too
    }


def gpu_loader(cfg, images, *, train=True, batch=8, dtype=torch.bfloat16, state=None):
    return build_loader(cfg, images=images, train=train, batch_size=batch, rank=0, world_size=1, seed=0,
                        device=GPU, dtype=dtype, state=state)


@pytest.mark.parametrize("kind", ["paths", "encoded", "resident", "decoded-once"])
@pytest.mark.parametrize("dali_device", ["gpu", "cpu"])
def test_gpu_batches_shape_dtype_layout_statistics(sources, kind, dali_device):
    cfg = load_config(None, [*sources[kind], *SMALL, f"data.device={dali_device}"]).data
    train, val = load_image_sets(cfg)
    for images, labels, side in ((*next(iter(gpu_loader(cfg, train))), 32),
                                 (*next(iter(gpu_loader(cfg, val, train=False))), 36)):
        assert images.device == GPU and labels.device == GPU
        assert images.shape == (8, 3, side, side) and images.dtype == torch.bfloat16
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert labels.dtype == torch.int64 and labels.shape == (8,)
        x = images.float()
        assert x.mean(dim=(1, 2, 3)).abs().max() < 2e-2
        assert (x.std(dim=(1, 2, 3), unbiased=False) - 1).abs().max() < 2e-2


def test_gpu_and_cpu_graphs_give_the_same_batches(sources):
    """Same plan, same draws: the labels agree exactly and the pixels up to the resize kernels."""
    batches = {}
    for dali_device in ("gpu", "cpu"):
        cfg = load_config(None, [*sources["resident"], *SMALL, f"data.device={dali_device}"]).data
        train, _ = load_image_sets(cfg)
        batches[dali_device] = next(iter(gpu_loader(cfg, train, dtype=torch.float32)))
    (xg, yg), (xc, yc) = batches["gpu"], batches["cpu"]
    assert torch.equal(yg, yc)
    assert (xg - xc).abs().mean() < 0.05


def test_a_batch_survives_later_dali_iterations(sources):
    """Checksum a batch, run more iterations, checksum again: DALI did not reuse its memory under torch."""
    cfg = load_config(None, [*sources["paths"], *SMALL, "data.device=gpu"]).data
    train, _ = load_image_sets(cfg)
    ld = gpu_loader(cfg, train, batch=4)
    it = iter(ld)
    kept, kept_labels = next(it)
    checksum = kept.double().sum().item(), kept_labels.sum().item()
    for fresh, _ in it:  # the rest of the epoch; these batches are overwritten, the kept one must not change
        fresh.mul_(0)
    for images, _ in ld:  # and a whole further epoch
        images.add_(1)
    torch.cuda.synchronize()
    assert (kept.double().sum().item(), kept_labels.sum().item()) == checksum


@pytest.mark.parametrize("kind", ["paths", "resident", "decoded-once"])
def test_restored_gpu_loader_reproduces_the_next_batches(sources, kind):
    cfg = load_config(None, [*sources[kind], *SMALL, "data.device=gpu"]).data
    train, _ = load_image_sets(cfg)
    ld = gpu_loader(cfg, train, batch=4, dtype=torch.float32)
    it = iter(ld)
    for _ in range(2):
        next(it)
    state = ld.state_dict()
    expected = [next(it) for _ in range(2)]
    restored = iter(gpu_loader(cfg, train, batch=4, dtype=torch.float32, state=state))
    for (x, y), (x_ref, y_ref) in zip((next(restored) for _ in range(2)), expected):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


@pytest.mark.parametrize("kind", ["paths", "resident"])
def test_the_levers_run_in_the_gpu_graph_and_resume_exactly(sources, kind):
    """Automatic augmentation, erasing and progressive resizing as GPU operators (auto_aug's `select` on GPU
    data, `fn.erase` with CPU per-sample arguments); a restored loader reproduces the next batches."""
    levers = ("data.train.auto_augment=rand_augment", "data.train.erase_prob=0.5",
              "data.train.progressive_start_crop=16", "data.train.progressive_multiple=8",
              "data.train.progressive_ramp=[0.2,0.6]")
    cfg = load_config(None, [*sources[kind], *SMALL, *levers, "data.device=gpu"]).data
    train, _ = load_image_sets(cfg)

    def make(state=None):
        return build_loader(cfg, images=train, train=True, batch_size=4, rank=0, world_size=1, seed=0, device=GPU,
                            dtype=torch.float32, state=state, total_epochs=2)

    ld = make()
    it = iter(ld)
    first = next(it)
    assert first[0].shape == (4, 3, 16, 16) and first[0].device == GPU and torch.isfinite(first[0]).all()
    next(it)
    state = ld.state_dict()
    expected = [next(it) for _ in range(2)]
    restored = iter(make(state))
    for (x, y), (x_ref, y_ref) in zip((next(restored) for _ in range(2)), expected):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode", ["off", "reduce-overhead"])
def test_a_few_gpu_steps_train(tmp_path, compile_mode):
    run_train(tmp_path, compile_mode, "data.device=gpu", "train.precision=bf16", f"train.compile={compile_mode}",
              "train.epochs=1", timeout=600)
    ckpt = load_ckpt(tmp_path / compile_mode / "last.pt")
    assert ckpt["counters"]["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_resident_arrays_stay_on_the_gpu(sources):
    cfg = load_config(None, [*sources["resident"], *SMALL, "data.device=gpu"]).data
    train, _ = load_image_sets(cfg)
    ld = gpu_loader(cfg, train)
    before = torch.cuda.memory_allocated(GPU)
    next(iter(ld))
    assert before >= np.asarray(train.arrays).nbytes  # the data set itself was moved to the device


def test_compiled_standardization_matches_the_eager_one():
    """What compiled trainers use on the GPU (torch.compile of the standardization) gives the eager result."""
    from pipeline.data.dali_loader import compiled_standardize, standardize

    nhwc = torch.randint(0, 256, (16, 122, 122, 3), dtype=torch.uint8, device=GPU)
    for dtype in (torch.float32, torch.bfloat16):
        eager, compiled = standardize(nhwc, 1e-5, dtype), compiled_standardize()(nhwc, 1e-5, dtype)
        assert compiled.dtype == dtype and compiled.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(compiled.float(), eager.float(), atol=1e-4 if dtype == torch.float32 else 3e-2)


@pytest.mark.slow
def test_the_gpu_step_never_waits_for_the_device(tmp_path):
    """The ledger with CUDA's sync debug mode: no synchronizing call per step or per evaluation batch.

    Batch 128: the 20 counted steps stay inside the first epoch (39 steps), whose order went to the
    GPU once, before them."""
    import json

    from pipeline.bench.__main__ import main as bench_main

    out = tmp_path / "overhead"
    assert bench_main(["overhead", "configs/squeezenet_cifar10_fast.yaml", "data.source=sample", "train.compile=off",
                       "train.global_batch_size=128", "wandb.mode=disabled", "--steps=20", "--warmup=5",
                       f"--out={out}"]) == 0
    rows = {r["component"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert rows["total per step"]["reads_per_step"] == 0 and rows["total per step"]["uploads_per_step"] == 0
    assert rows["evaluation, per batch"]["reads"] == 0 and rows["ema"]["ops_per_step"] <= 3


@pytest.mark.parametrize("roi_decode", ["true", "false"])
@pytest.mark.parametrize("normalize", ["image", "channel"])
def test_gpu_random_resized_crops_from_shards(tmp_path, roi_decode, normalize):
    """The `mixed` decoder decodes each window of tar-shard members; per-channel or per-image statistics."""
    from pipeline.data.shards import write_shards

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 12, "b": 12}, "val": {"a": 5, "b": 6}}, side=48)
    write_shards(tree, tmp_path / "shards", shard_size=5, workers=1, seed=0, progress=False)
    cfg = load_config(None, ["data.source=webdataset", f"data.root={tmp_path / 'shards'}", "data.device=gpu",
                             "data.train.kind=random_resized_crop", "data.train.crop=32", "data.eval.size=36",
                             "data.eval.crop=32", f"data.train.roi_decode={roi_decode}",
                             f"data.normalize={normalize}"]).data
    train, val = load_image_sets(cfg)
    for images, labels in (next(iter(gpu_loader(cfg, train))), next(iter(gpu_loader(cfg, val, train=False)))):
        assert images.device == GPU and labels.device == GPU
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.bfloat16
        assert images.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(images.float()).all()
    if normalize == "image":
        assert images.float().mean(dim=(1, 2, 3)).abs().max() < 0.05

