"""The augmentation options in real runs and DALI graphs that take the longest: resume with every option on, what the
start-up log and resolved.json list, auto-augment draws, progressive sizes in both graphs.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from conftest import write_imagefolder
from support.augment import CPU, SMALL, array_set

from pipeline.config import load_config
from pipeline.data import ImageSet, build_loader, load_image_sets
from pipeline.data.augment.auto_augment import draw_auto_augment, suite
from pipeline.runs.metrics import read_metrics


def train_loader(images: ImageSet, *overrides: str, seed: int = 0, batch: int = 8, total_epochs: int | None = None):
    cfg = load_config(None, [*SMALL, *overrides])
    return build_loader(cfg.data, images=images, train=True, batch_size=batch, rank=0, world_size=1, seed=seed,
                        device=CPU, dtype=torch.float32, total_epochs=total_epochs)


def first_images(images: ImageSet, *overrides: str, seed: int = 0) -> torch.Tensor:
    return next(iter(train_loader(images, *overrides, seed=seed)))[0]


@pytest.mark.parametrize("kind", ["trivial_augment", "rand_augment", "auto_augment"])
def test_auto_augment_is_a_function_of_the_seed_and_changes_the_images(kind):
    images = array_set()
    on = (f"data.train.auto_augment={kind}", "data.train.auto_augment_policy=reduced_cifar10",
          "data.normalize=channel")  # per-image standardization would hide affine colour changes
    first = first_images(images, *on, seed=3)
    assert torch.equal(first, first_images(images, *on, seed=3))  # a pure function of (seed, epoch, step)
    assert not torch.equal(first, first_images(images, *on, seed=4))
    # The levers draw after the crop and flip: with the same seed the plain batch is the same crop, unaugmented.
    plain = first_images(images, "data.normalize=channel", seed=3)
    changed = (first - plain).abs().flatten(1).amax(1) > 1e-3
    loader = train_loader(images, *on, seed=3)
    spec = loader.callbacks[0].spec.levers.auto_augment
    ops = loader.callbacks[0].epoch_draws(0)[-3][0]  # the first batch's operation per image and stage
    names = [[suite(spec).stages[s][op].name for s, op in enumerate(row)] for row in ops]
    identity_only = torch.tensor([set(row) == {"identity"} for row in names])
    assert not changed[identity_only].any(), names  # the graph does what was drawn: the identity changes nothing
    assert changed.sum() >= 4, (changed, names)
    a, b = (draw_auto_augment(spec, np.random.default_rng([s, 0]), 64)[0] for s in (3, 4))
    assert not np.array_equal(a, b)


def test_progressive_batches_grow_over_the_run_in_both_graphs(tmp_path):
    """Epoch by epoch the batches follow the schedule, the resize range scaled with the crop; the
    random-resized-crop graph (decoded from files) too, with every lever on."""
    grow = ("data.train.progressive_start_crop=16", "data.train.progressive_ramp=[0.25,0.75]",
            "data.train.progressive_multiple=8")
    loader = train_loader(array_set(), *grow, total_epochs=4)  # 2 steps per epoch: steps 0-7 of 8
    shapes = [[tuple(x.shape[-2:]) for x, _ in loader] for _ in range(4)]
    assert shapes == [[(16, 16)] * 2, [(16, 16), (24, 24)], [(24, 24), (32, 32)], [(32, 32)] * 2]
    drawn = loader.callbacks[0].spec.batch_arguments(tuple(d[0] for d in loader.callbacks[0].epoch_draws(0)), 16)
    assert drawn[0].min() >= 16 and drawn[0].max() <= round(38 * 16 / 32)  # min_side, max_side x 16 / 32
    root = write_imagefolder(tmp_path / "tree", {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}}, side=40)
    cfg = load_config(None, [*SMALL, "data.source=imagefolder", f"data.root={root}", "model.num_classes=2",
                             "data.train.kind=random_resized_crop", *grow, "data.train.auto_augment=trivial_augment",
                             "data.train.erase_prob=0.5"])
    train_set, _ = load_image_sets(cfg.data)
    crops = build_loader(cfg.data, images=train_set, train=True, batch_size=8, rank=0, world_size=1, seed=0,
                         device=CPU, dtype=torch.float32, total_epochs=2)  # steps 0-1 at 16, 2 at 24, 3 at 32
    sides = [x.shape[-1] for _ in range(2) for x, _ in crops]
    assert sides == [16, 16, 24, 32]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical_with_every_lever_on(tmp_path):
    """One uninterrupted run and one killed mid-epoch 2 and resumed, every lever on, end with the same weights."""
    from support.resume import RESUMABLE, final_state, kill_job, start_train, wait_for_file

    from pipeline.training.checkpoint import step_path
    from runs import assert_same_tensors, run_train

    levers = ("data.train.auto_augment=rand_augment", "data.train.erase_prob=0.5",
              "data.train.progressive_start_crop=8", "data.train.progressive_multiple=4",
              "data.train.progressive_ramp=[0.2,0.6]", "train.mixup_alpha=0.4", "train.cutmix_alpha=1.0",
              "train.label_smoothing=0.1", "eval.tta=flip")
    run_train(tmp_path, "whole", *RESUMABLE, *levers)
    proc = start_train(tmp_path, "killed", *RESUMABLE, *levers)
    wait_for_file(tmp_path / "killed" / step_path(tmp_path, 16).name, proc)  # mid-epoch 2, mid-ramp
    kill_job(proc)
    assert proc.returncode == -signal.SIGKILL
    resumed = run_train(tmp_path, "killed", *RESUMABLE, *levers)
    assert "resumed from" in resumed.stderr
    reference, state = final_state(tmp_path / "whole"), final_state(tmp_path / "killed")
    assert_same_tensors(reference["model"], state["model"], "model")
    assert_same_tensors(reference["optimizer"], state["optimizer"], "optimizer")
    # The sizes grew 8 -> 12 -> 16 (each first step timed and logged), the evaluation is flipped.
    log = (tmp_path / "whole" / "train.log").read_text()
    assert all(f"first training step at {s}x{s} px" in log for s in (8, 12, 16)), log[-3000:]
    records = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert any("perf/first_step_seconds_12px" in r for r in records)
    (last,) = [r for r in records if "val/top1" in r]
    assert "val/top1_noflip" in last and "averages each image with its mirror" in log


@pytest.mark.slow
def test_the_start_up_log_and_resolved_json_list_the_options_in_force(tmp_path):
    import json

    from runs import run_train

    proc = run_train(tmp_path, "levers", "train.epochs=1", "data.train.auto_augment=trivial_augment",
                     "data.train.erase_prob=0.5", "train.mixup_alpha=0.4", "train.ema_decay=0.9", "eval.tta=flip",
                     "data.train.progressive_start_crop=8", "data.train.progressive_multiple=4")
    (line,) = [line for line in proc.stderr.splitlines() if " recipe: " in line]
    assert line.split(" ", 1)[1] == (
        "recipe: multistep schedule over 6 steps; reference augmentation at 16 px, flip 0.5; on: automatic "
        "augmentation trivial_augment, random erasing p 0.5, mixup alpha 0.4, progressive sizes 8, 12, 16 px, flip "
        "evaluation, EMA 0.9; off: label smoothing"), line
    resolved = json.loads((tmp_path / "levers" / "resolved.json").read_text())
    assert {key: resolved[key] for key in ("resolved/auto_augment", "resolved/random_erasing", "resolved/mixup_alpha",
                                            "resolved/cutmix_alpha", "resolved/train_sides", "resolved/eval_flip",
                                            "resolved/ema_decay", "resolved/label_smoothing",
                                            "resolved/schedule_steps")} == {
        "resolved/auto_augment": "trivial_augment", "resolved/random_erasing": 0.5, "resolved/mixup_alpha": 0.4,
        "resolved/cutmix_alpha": 0.0, "resolved/train_sides": [8, 12, 16], "resolved/eval_flip": True,
        "resolved/ema_decay": 0.9, "resolved/label_smoothing": 0.0, "resolved/schedule_steps": 6}

