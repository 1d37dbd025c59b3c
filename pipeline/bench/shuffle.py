"""How well the tar-shard reader shuffles, against a true permutation: statistics of the index plans.

    python -m pipeline.bench.shuffle [--samples 128000] [--shard-size 1000] [--classes 100] [--world 8] \\
        [--batch 128] [--buffers 0,1024,4096,16384]

No images are read: the plans (pipeline/data/sampler.py) are pure functions of (seed, epoch, rank),
so their statistics are exact for the sizes given. The defaults are ImageNet at a tenth of its size
(128 samples per class, 1,000 per shard) on 8 ranks with a global batch of 1,024. Two layouts of
the shards:

- written shuffled (python -m pipeline.data.shards): the labels along the listing are random;
- class-sorted (one class after the other, as tars made per ImageNet synset are): the worst case.

Per plan, over the ranks' batches of two epochs:

    same-label pairs   share of pairs of samples in one rank's batch with the same label (a
                       permutation: ~1/classes; all one class: 1)
    shards per batch   distinct shards a rank's batch draws from (a permutation: ~batch)
    step distance      mean |listing position of a sample - that of the one before it| within a
                       rank's epoch, / samples (a permutation: ~1/3)
    pairs again        share of the pairs that meet in a batch of epoch 1 that already met in one
                       of epoch 0 (a permutation: ~batch / samples)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from pipeline.data.sampler import ShardedBatches, ShardStreamBatches


def batches_of(plan: Any, epoch: int) -> list[np.ndarray]:
    return [plan.indices(epoch, step) for step in range(len(plan))]


def pair_codes(batch: np.ndarray, n: int) -> np.ndarray:
    """Every unordered pair in `batch`, as one int64 (low * n + high)."""
    i, j = np.triu_indices(len(batch), k=1)
    low, high = np.minimum(batch[i], batch[j]), np.maximum(batch[i], batch[j])
    return low.astype(np.int64) * n + high


def plan_statistics(plans: list[Any], labels: np.ndarray, shard_of: np.ndarray) -> dict[str, float]:
    """The four statistics of the module docstring for one plan per rank."""
    n = len(labels)
    same, shards, distance, met = [], [], [], []
    for epoch in (0, 1):
        pairs = []
        for plan in plans:
            batches = batches_of(plan, epoch)
            for batch in batches:
                lab = labels[batch]
                counts = np.bincount(lab)
                same.append(((counts * (counts - 1)).sum() / 2) / (len(batch) * (len(batch) - 1) / 2))
                shards.append(len(np.unique(shard_of[batch])))
                pairs.append(pair_codes(batch, n))
            sequence = np.concatenate(batches)
            distance.append(np.abs(np.diff(sequence)).mean() / n)
        met.append(np.unique(np.concatenate(pairs)))
    again = np.isin(met[1], met[0], assume_unique=True).mean()
    return {"same-label pairs": float(np.mean(same)), "shards per batch": float(np.mean(shards)),
            "step distance": float(np.mean(distance)), "pairs again": float(again)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.shuffle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--world", type=int, default=8, help="ranks")
    parser.add_argument("--batch", type=int, default=128, help="per rank")
    parser.add_argument("--buffers", default="0,1024,4096,16384", help="shuffle buffer sizes (data.shuffle_buffer)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n, size = args.samples, args.shard_size
    shard_sizes = tuple([size] * (n // size) + ([n % size] if n % size else []))
    shard_of = np.repeat(np.arange(len(shard_sizes)), shard_sizes)
    layouts = {
        "written shuffled": np.random.default_rng(args.seed).integers(0, args.classes, n),
        "class-sorted": (np.arange(n) * args.classes) // n,
    }
    rows = []
    for layout, labels in layouts.items():
        rows.append((layout, "true permutation", plan_statistics(
            [ShardedBatches(n, args.batch, r, args.world, shuffle=True, drop_last=True, seed=args.seed)
             for r in range(args.world)], labels, shard_of)))
        for buffer in (int(b) for b in args.buffers.split(",")):
            plans = [ShardStreamBatches(shard_sizes, args.batch, r, args.world, shuffle=True, drop_last=True,
                                        seed=args.seed, buffer_size=buffer) for r in range(args.world)]
            rows.append((layout, f"shards, buffer {buffer}", plan_statistics(plans, labels, shard_of)))
    keys = list(rows[0][2])
    print(f"{n:,} samples in {len(shard_sizes)} shards of {size}, {args.classes} classes, {args.world} ranks x "
          f"batch {args.batch}; chance same-label rate 1/{args.classes} = {1 / args.classes:.4f}")
    print(f"| layout | plan | {' | '.join(keys)} |")
    print("| --- | --- |" + " --- |" * len(keys))
    for layout, plan, stats in rows:
        print(f"| {layout} | {plan} | " + " | ".join(f"{stats[k]:.4g}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
