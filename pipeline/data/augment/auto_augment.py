"""Automatic augmentation (data.train.auto_augment) in the DALI graph, with the choices drawn in numpy.

    spec = AutoAugmentSpec.from_config(cfg.data.train)      # None for auto_augment: none
    ops, bins, signs = draw_auto_augment(spec, rng, n)      # per image, once per epoch
    images = apply_auto_augment(images, spec, ops, bins, signs, shape)   # in the graph, HWC uint8

The operations are `nvidia.dali.auto_aug`'s: its standard suites and policies (their operations
and magnitude ranges) and its `select`, which sends each sample through the operation
its index names (a conditional split of the batch: the pipeline needs `enable_conditionals=True`).
What differs from `trivial_augment_wide`, `rand_augment` and `auto_augment` is where the choices
come from: those draw the operation, the magnitude bin and the sign with `fn.random.*` inside the
graph, from DALI's generator. Here they are drawn per image in numpy, from the epoch's generator of
(seed, epoch) (the random-resized-crop graph: (seed, epoch, step)), like every other draw of the
graph (pipeline/data/dali_graph.py), and enter as per-sample arguments: a batch stays a pure
function of its position, so a resumed run reproduces it without DALI's random state.

Per image and per stage s (one stage for TrivialAugment, n for RandAugment, the sub-policy's length
for AutoAugment), three integers: the operation's index in the stage's list, the magnitude bin and
the sign (1 negates the magnitude of operations that take either sign):

- `trivial_augment` (Müller & Hutter 2021, TrivialAugment Wide): one operation uniformly from the
  14 of DALI's wide suite, a magnitude bin uniformly from 31.
- `rand_augment` (Cubuk et al. 2020): `n` operations uniformly (with repetition) from DALI's 14
  (monotonic: a larger bin is a stronger operation), each at magnitude `m` of 0-10, the paper's and
  timm's scale (11 bins; timm's `rand-m9-n2` is m=9, n=2).
- `auto_augment` (Cubuk et al. 2019): a sub-policy uniformly from the named policy's 25, each of its
  operations applied with its probability at its magnitude bin (11 bins); one not applied is the
  identity. `image_net` is DeepLearningExamples' choice for ResNet-50 in DALI; `reduced_cifar10`
  was searched on CIFAR-10.

Translations are relative to the image side (the suites' `use_shape=True`), sized as at
ImageNet's 224 px: TrivialAugment Wide's 32 px (torchvision) is 32/224 of the side, RandAugment's
and AutoAugment's 100 px is 100/224 = 0.45 (timm's `translate_pct`). Pixels a geometric operation
uncovers get 128 (DALI's default fill). Two operations are rebuilt on the same DALI operators
under their current names (`fn.filter` and `fn.equalize` for the suites' `fn.experimental.filter`
and `fn.experimental.equalize`): DALI 2.4 warns about the old names in a way no warning filter
silences.

It runs on the uint8 HWC crop (after the flip, before erasing and normalization): on the GPU in
production, in DALI's CPU threads here. Draws depend on the suites' lengths: another DALI version
with other suites draws other augmentations (not a concern for resuming: runs resume on the
version they started with).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

TRIVIAL_BINS, POLICY_BINS = 31, 11  # magnitude bins: DALI's TrivialAugment default; the 0-10 scale
TRANSLATE = {"trivial_augment": 32 / 224, "rand_augment": 100 / 224, "auto_augment": 100 / 224}
FILL = 128  # uint8 value of pixels uncovered by translate, shear and rotate


@dataclass(frozen=True)
class AutoAugmentSpec:
    """Which automatic augmentation, and its parameters."""

    kind: str  # trivial_augment | rand_augment | auto_augment
    n: int = 2  # rand_augment: operations per image
    m: int = 9  # rand_augment: magnitude of every operation, 0-10
    policy: str = "image_net"  # auto_augment: the named policy

    @classmethod
    def from_config(cls, aug: Any) -> "AutoAugmentSpec | None":
        if aug.auto_augment == "none":
            return None
        return cls(aug.auto_augment, aug.rand_augment_n, aug.rand_augment_m, aug.auto_augment_policy)

    @property
    def stages(self) -> int:
        return len(suite(self).stages)


@dataclass(frozen=True)
class Suite:
    """The operations each stage chooses among, and, for a policy, its table of sub-policies."""

    stages: tuple[tuple[Any, ...], ...]  # DALI Augmentation objects per stage
    num_bins: int
    # auto_augment only, (sub-policies, stages): operation index (identity where the sub-policy is
    # shorter), magnitude bin, probability of applying it
    ops: np.ndarray | None = None
    bins: np.ndarray | None = None
    probs: np.ndarray | None = None


@functools.cache
def suite(spec: AutoAugmentSpec) -> Suite:
    """The DALI operations of `spec`, built once per process."""
    from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment

    rel = TRANSLATE[spec.kind]
    current = _current_names()
    if spec.kind == "trivial_augment":
        ops = trivial_augment.get_trivial_augment_wide_suite(use_shape=True, max_translate_rel=rel)
        return Suite((tuple(current(op) for op in ops),), TRIVIAL_BINS)
    if spec.kind == "rand_augment":
        ops = rand_augment.get_rand_augment_suite(use_shape=True, max_translate_rel=rel)
        return Suite((tuple(current(op) for op in ops),) * spec.n, POLICY_BINS)
    if spec.policy == "reduced_image_net":  # no translations
        policy = auto_augment.get_reduced_image_net_policy()
    else:
        policy = getattr(auto_augment, f"get_{spec.policy}_policy")(use_shape=True, max_translate_rel=rel)
    return policy_suite(policy, current)


def _current_names() -> Any:
    """A function mapping an auto_aug operation to itself, or, for the two that call DALI operators by their
    deprecated `fn.experimental` names, to the same operation on the current operator (same parameters)."""
    from nvidia.dali import fn
    from nvidia.dali.auto_aug.core import augmentation

    def sharpness(data: Any, kernel: Any) -> Any:
        return fn.filter(data, kernel)

    def equalize(data: Any, _: Any) -> Any:
        return fn.equalize(data)

    replacements = {"sharpness": augmentation(sharpness), "equalize": augmentation(equalize)}
    made: dict[int, Any] = {}  # one replacement per original object: a policy names an operation many times

    def current(op: Any) -> Any:
        if op.name not in replacements:
            return op
        if id(op) not in made:
            made[id(op)] = replacements[op.name].augmentation(
                mag_range=op.mag_range, randomly_negate=op.randomly_negate, mag_to_param=op.mag_to_param,
                param_device=op.param_device, name=op.name)
        return made[id(op)]

    return current


def policy_suite(policy: Any, current: Any = lambda op: op) -> Suite:
    """An AutoAugment policy as per-stage operation lists (each ending with the identity) and tables;
    `current` maps each operation to the one to run (see _current_names)."""
    from nvidia.dali.auto_aug import augmentations

    subs = [[(current(op), prob, magnitude) for op, prob, magnitude in sub] for sub in policy.sub_policies]
    n_stages = max(len(sub) for sub in subs)
    stages: list[list[Any]] = [[] for _ in range(n_stages)]
    for sub in subs:
        for s, (op, _, _) in enumerate(sub):
            if op not in stages[s]:
                stages[s].append(op)
    for ops in stages:
        ops.append(augmentations.identity)
    table = np.array([[len(stages[s]) - 1] * n_stages for _ in subs], np.int32)  # identity by default
    bins = np.zeros((len(subs), n_stages), np.int32)
    probs = np.zeros((len(subs), n_stages), np.float32)
    for i, sub in enumerate(subs):
        for s, (op, prob, magnitude) in enumerate(sub):
            table[i, s] = stages[s].index(op)
            bins[i, s] = 0 if magnitude is None else magnitude  # ignored by operations without a magnitude
            probs[i, s] = prob
    return Suite(tuple(tuple(ops) for ops in stages), policy.num_magnitude_bins, table, bins, probs)


def draw_auto_augment(spec: AutoAugmentSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """(operation, magnitude bin, sign) per image and stage, int32 (n, stages) each."""
    table = suite(spec)
    stages = len(table.stages)
    if spec.kind == "trivial_augment":
        ops = rng.integers(0, len(table.stages[0]), (n, 1))
        bins = rng.integers(0, table.num_bins, (n, 1))
    elif spec.kind == "rand_augment":
        ops = rng.integers(0, len(table.stages[0]), (n, stages))
        bins = np.full((n, stages), spec.m)
    else:
        sub = rng.integers(0, len(table.ops), n)
        applied = rng.random((n, stages)) < table.probs[sub]
        identity = np.array([len(ops) - 1 for ops in table.stages])
        ops = np.where(applied, table.ops[sub], identity)
        bins = table.bins[sub]
    signs = rng.integers(0, 2, (n, stages))
    return ops.astype(np.int32), bins.astype(np.int32), signs.astype(np.int32)


def apply_auto_augment(images: Any, spec: AutoAugmentSpec, ops: Any, bins: Any, signs: Any, shape: Any) -> Any:
    """The DALI stage: each sample through its operations, stage by stage.

    `ops`, `bins`, `signs`: per-sample int32 vectors (one entry per stage); `shape`: (height, width)
    of the images, a pair of numbers or a per-sample DataNode (progressive resizing).
    """
    from nvidia.dali.auto_aug.core import select, signed_bin

    table = suite(spec)
    for s, choices in enumerate(table.stages):
        magnitude = signed_bin(bins[s], random_sign=signs[s])
        images = select(list(choices), ops[s], data=images, magnitude_bin=magnitude,
                        num_magnitude_bins=table.num_bins, shape=shape, fill_value=FILL)
    return images
