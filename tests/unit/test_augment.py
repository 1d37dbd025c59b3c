"""pipeline/data/augment: automatic augmentation draws, erasing, progressive sizes, mixing, flip evaluation, the recipe
line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.augment import CPU, SMALL, array_set
from torch import nn

from pipeline.config import ConfigError, load_config
from pipeline.constants import MAX_PROGRESSIVE_SIZES
from pipeline.data import ImageSet, build_loader
from pipeline.data.augment.auto_augment import AutoAugmentSpec, draw_auto_augment, suite
from pipeline.data.augment.erasing import ErasingSpec, draw_erasing, erase_boxes
from pipeline.data.augment.levers import TrainLevers
from pipeline.data.augment.progressive import ProgressiveResize
from pipeline.data.dali_graph import AugmentSpec, GraphSettings, build_pipeline
from pipeline.data.dali_loader import ArgumentSource, Position, SampleSource
from pipeline.data.sampler import ShardedBatches
from pipeline.training.ema import name_evaluations
from pipeline.training.mixing import BatchMixer, Mix, mix_images, mixed_targets
from pipeline.training.precision import build_precision
from pipeline.training.step import evaluate, evaluation_notes


def uint8_pipeline(images: ImageSet, spec: AugmentSpec, batch: int, seed: int = 0):
    """The reference graph on arrays, emitting uint8 HWC (what a GPU trainer receives), and its argument source."""
    plan = ShardedBatches(len(images), batch, 0, 1, shuffle=False, drop_last=True)
    position = Position(plan, 0, 0)
    arguments = ArgumentSource(images, plan, spec, seed, position, history=4)
    settings = GraphSettings(device="cpu", device_id=None, batch_size=batch, num_threads=1, prefetch_queue_depth=1,
                             seed=seed)
    pipe = build_pipeline(arguments, SampleSource(images, plan, position, "arrays"), spec, settings,
                          sample_kind="arrays")
    return pipe, arguments


def test_auto_augment_draws_follow_each_scheme():
    rng, n = np.random.default_rng(0), 20_000
    trivial = AutoAugmentSpec("trivial_augment")
    ops, bins, signs = draw_auto_augment(trivial, rng, n)
    assert ops.shape == (n, 1) and set(np.unique(ops)) == set(range(len(suite(trivial).stages[0])))
    assert bins.min() == 0 and bins.max() == 30 and abs(signs.mean() - 0.5) < 0.02
    rand = AutoAugmentSpec("rand_augment", n=3, m=7)
    ops, bins, _ = draw_auto_augment(rand, rng, n)
    assert ops.shape == (n, 3) and (bins == 7).all() and ops.max() == len(suite(rand).stages[0]) - 1
    policy = AutoAugmentSpec("auto_augment", policy="reduced_cifar10")
    table = suite(policy)
    ops, bins, _ = draw_auto_augment(policy, rng, n)
    for stage, choices in enumerate(table.stages):  # each stage applied with its sub-policies' mean probability
        identity = len(choices) - 1
        expected = 1 - table.probs[:, stage].mean()  # (a stage a sub-policy lacks has probability 0)
        assert abs((ops[:, stage] == identity).mean() - expected) < 0.015
        assert set(np.unique(bins[:, stage])) <= set(table.bins[:, stage].tolist())


def test_erased_area_lies_in_its_range_and_the_probability_is_respected():
    spec = ErasingSpec(prob=0.3, area=(0.02, 1 / 3), aspect=(0.3, 3.3), fill=(200, 100, 50))
    draws = draw_erasing(spec, np.random.default_rng(0), 20_000)
    height, width = draws[:, 0], draws[:, 1]
    erased = height > 0
    assert abs(erased.mean() - 0.3) < 0.015  # 4.7 standard deviations
    area, aspect = (height * width)[erased], height[erased] / width[erased]
    assert area.min() >= 0.02 - 1e-6 and area.max() <= 1 / 3 + 1e-6
    assert aspect.min() >= 0.3 - 1e-5 and aspect.max() <= 3.3 + 1e-5
    # In the graph: constant images, so the fill colour marks exactly the erased pixels.
    n, side = 32, 32
    images = ImageSet(names=[str(i) for i in range(n)], labels=np.zeros(n, np.int64), classes=["0"],
                      arrays=np.full((n, side, side, 3), 7, np.uint8))
    aug = AugmentSpec(side, side, side, True, 0.0, "nearest", TrainLevers(erasing=ErasingSpec(0.5, spec.area, spec.aspect, spec.fill)))
    pipe, arguments = uint8_pipeline(images, aug, batch=n)
    out, _ = pipe.run()
    anchor, shape = erase_boxes(arguments.epoch_draws(0)[-1][0], side)
    for i in range(n):
        img = np.asarray(out.at(i))
        filled = (img == [200, 100, 50]).all(-1)
        assert ((img == 7).all(-1) | filled).all()
        h, w = shape[i].astype(int)
        assert filled.sum() == h * w
        if h * w:
            top, left = anchor[i].astype(int)
            assert filled[top:top + h, left:left + w].all()
            assert 0.02 - 2 * (h + w) / side ** 2 <= h * w / side ** 2 <= 1 / 3 + 2 * (h + w) / side ** 2
    assert 0 < sum(int(s.prod() > 0) for s in shape) < n


def test_progressive_sizes_are_bounded_monotone_and_end_at_the_final_size():
    grow = ProgressiveResize(96, 122, (0.7, 0.85), 16)
    total = 1000
    sides = [grow.side(step, total) for step in range(total)]
    assert sides == sorted(sides) and sides[0] == 96 and sides[-1] == 122
    assert set(sides) == set(grow.sides()) == {96, 112, 122}
    assert set(sides[:701]) == {96} and set(sides[850:]) == {122}  # before the ramp; the last 15% at the final size
    assert len(ProgressiveResize(64, 224, (0.0, 0.5), 32).sides()) <= MAX_PROGRESSIVE_SIZES
    # The config refuses a schedule of more sizes than the compiler keeps, naming the key and a value that fits.
    with pytest.raises(ConfigError, match=r"^data\.train\.progressive_multiple: 4 px gives 8 sizes .* "
                                          r"data\.train\.progressive_multiple=6"):
        load_config(None, ["data.train.progressive_start_crop=96", "data.train.progressive_multiple=4"])
    fits = load_config(None, ["data.train.progressive_start_crop=96", "data.train.progressive_multiple=6"])
    assert len(ProgressiveResize.from_config(fits.data.train).sides()) <= MAX_PROGRESSIVE_SIZES


def test_a_start_crop_the_network_cannot_take_is_named():
    from pipeline.distributed import DistInfo
    from pipeline.training.components import build_network

    cfg = load_config(None, ["model.name=squeezenet1_0", "data.train.min_side=40", "data.train.max_side=44",
                             "data.train.crop=40", "data.eval.size=40", "data.eval.crop=40",
                             "data.train.progressive_start_crop=8"])
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=CPU)
    with pytest.raises(ConfigError, match=r"^data\.train\.progressive_start_crop: the network cannot take 8x8"):
        build_network(cfg.model, cfg.data, dist, sync_bn=False)


def test_the_torchvision_baseline_refuses_the_levers():
    cfg = load_config(None, [*SMALL, "data.train.erase_prob=0.25"])
    with pytest.raises(ConfigError, match="the torchvision baseline loader does not implement the training levers"):
        build_loader(cfg.data, images=array_set(), train=True, batch_size=8, rank=0, world_size=1, seed=0,
                     device=CPU, dtype=torch.float32, backend="torchvision")


def test_mixed_targets_sum_to_one_and_follow_the_draw():
    torch.manual_seed(0)
    images, labels = torch.randn(6, 3, 8, 10), torch.tensor([0, 1, 2, 3, 4, 1])
    mixup = BatchMixer(mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, seed=1)
    mix = mixup.draw(5, 8, 10)
    assert mix == mixup.draw(5, 8, 10) and mix != mixup.draw(6, 8, 10)  # a function of (seed, step)
    assert mix.kind == "mixup" and 0 < mix.lam < 1
    mixed, targets = mixup(images, labels, 5, 5, 0.1)
    assert torch.allclose(mixed, mix.lam * images + (1 - mix.lam) * images.flip(0), atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    smoothed = F.one_hot(labels, 5).float() * 0.9 + 0.02  # timm's mixup_target: smooth each, then mix
    assert torch.allclose(targets, mix.lam * smoothed + (1 - mix.lam) * smoothed.flip(0), atol=1e-6)

    cutmix = BatchMixer(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, seed=1)
    mix = next(m for m in (cutmix.draw(s, 8, 10) for s in range(50)) if 0 < m.lam < 1)
    top, bottom, left, right = mix.box
    assert mix.kind == "cutmix" and mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / 80)
    pasted = mix_images(images, mix)
    inside = torch.zeros(8, 10, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.equal(pasted[..., inside], images.flip(0)[..., inside])
    assert torch.equal(pasted[..., ~inside], images[..., ~inside])
    targets = mixed_targets(labels, 5, mix.lam)
    assert torch.allclose(targets.sum(1), torch.ones(6)) and targets.max() <= 1

    both = BatchMixer(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.5, switch_prob=0.25, seed=2)
    kinds = [both.draw(s, 8, 10).kind for s in range(4000)]
    assert abs(kinds.count("none") / 4000 - 0.5) < 0.04
    assert abs(kinds.count("cutmix") / (4000 - kinds.count("none")) - 0.25) < 0.04
    assert mix_images(images, Mix("none", 1.0)) is images


def test_mixing_adds_a_few_operators_and_reads_nothing_back():
    """The host cost of mixing a batch (the ledger of `python -m pipeline.bench overhead`): a handful of
    operators, no device read, no upload; a per-sample loop or an F.one_hot (which reads the labels'
    range back on a CPU) would fail here."""
    from pipeline.bench.overhead import Ledger

    images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    for alphas in ((0.4, 0.0), (0.0, 1.0)):
        mixer = BatchMixer(*alphas, prob=1.0, switch_prob=0.5, seed=0)
        ledger = Ledger()
        with ledger.counting(CPU), ledger.section("mix"):
            mixer(images, labels, 3, 10, 0.1)
        assert 0 < ledger.ops["mix"] <= 12 and not ledger.reads and not ledger.uploads, ledger.op_names["mix"]


def test_flip_evaluation_is_the_mean_of_the_two_logit_sets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 7))  # not mirror-symmetric
    batches = [(torch.randn(5, 3, 8, 8), torch.randint(0, 7, (5,))) for _ in range(3)]
    precision = build_precision("fp32", CPU)
    both = evaluate(model, batches, precision, flip=True)
    plain = evaluate(model, batches, precision)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
        averaged = (logits + torch.cat([model(x.flip(3)) for x, _ in batches])) / 2
    labels = torch.cat([y for _, y in batches])
    assert both["val/top1"] == pytest.approx((averaged.argmax(1) == labels).float().mean().item())
    assert both["val/loss"] == pytest.approx(F.cross_entropy(averaged, labels).item(), rel=1e-6)
    assert both["val/top1"] != plain["val/top1"]  # the flip changes predictions of this network
    assert {k.removesuffix("_noflip"): v for k, v in both.items() if k.endswith("_noflip")} == \
        {k: v for k, v in plain.items() if k != "val/images"}
    named = name_evaluations({"ema": both, "raw": both})
    assert named["val_raw/top1_noflip"] == plain["val/top1"]  # not confused with tta/* (time to accuracy)
    assert f"without: {100 * plain['val/top1']:.2f}%" in evaluation_notes(named)


def test_the_recipe_line_names_every_option_on_and_off():
    from pipeline.training.recipe import describe_recipe, recipe_in_force

    plain = recipe_in_force(load_config("configs/quickstart.yaml"), 1170, (32,))
    assert describe_recipe(plain) == (
        "recipe: onecycle schedule over 1,170 steps; reference augmentation at 32 px, flip 0.5; on: none; off: "
        "automatic augmentation, random erasing, mixup/CutMix, progressive resizing, flip evaluation, EMA, "
        "label smoothing")
    levers = load_config("configs/quickstart.yaml", [
        "data.train.auto_augment=rand_augment", "data.train.erase_prob=0.25", "train.mixup_alpha=0.8",
        "train.cutmix_alpha=1.0", "eval.tta=flip", "train.ema_decay=0.999", "train.label_smoothing=0.1",
        "schedule.name=cosine", "schedule.warmup_epochs=2"])
    assert describe_recipe(recipe_in_force(levers, 600, (24, 32))) == (
        "recipe: cosine schedule over 600 steps (2 warm-up epochs); reference augmentation at 32 px, flip 0.5; on: "
        "automatic augmentation rand_augment (n=2, m=9), random erasing p 0.25, mixup alpha 0.8 + CutMix alpha 1, "
        "progressive sizes 24, 32 px, flip evaluation, EMA 0.999, label smoothing 0.1; off: none")
    never_mixed = recipe_in_force(load_config(None, ["train.mixup_alpha=0.8", "train.mix_prob=0"]), 10, (122,))
    assert never_mixed["resolved/mixup_alpha"] == 0.0 and "off: automatic augmentation, random erasing, mixup/CutMix" \
        in describe_recipe(never_mixed)


def test_the_first_step_at_a_size_says_what_its_time_includes(caplog):
    """'(under train.compile: its compilation)' was printed with compile off: the line says what is true."""
    from pipeline.training.step import TrainingStep

    def first_step_lines(compiled: bool) -> list[str]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        step = TrainingStep(model, model, optimizer, scheduler, build_precision("fp32", torch.device("cpu")), None,
                            num_classes=3, report_sizes=True, compiled=compiled)
        caplog.clear()
        with caplog.at_level("INFO", logger="pipeline"):
            for n, side in enumerate((8, 8, 12)):
                step(torch.randn(2, 3, side, side), torch.tensor([0, 2]), n)
        return [r.getMessage() for r in caplog.records if "first training step" in r.getMessage()]

    eager = first_step_lines(compiled=False)
    assert [line.split(":")[0] for line in eager] == ["first training step at 8x8 px", "first training step at 12x12 px"]
    assert not any("compil" in line or "(" in line for line in eager), eager  # nothing else in a CPU's eager step
    assert all(line.endswith("(its compilation for this size included: train.compile)")
               for line in first_step_lines(compiled=True))

