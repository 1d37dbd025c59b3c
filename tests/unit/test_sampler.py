"""The sharded index plans (pure numpy): equal train steps, disjoint and complete evaluation; tar shards
read whole, in a per-epoch shard order, through a shuffle buffer.
"""


from collections import Counter

import numpy as np
import pytest

from pipeline.data.sampler import ShardedBatches, ShardStreamBatches, buffer_shuffle

N = 21  # odd on purpose


SHARDS = (7, 7, 7, 5, 7, 2)  # 35 samples, uneven shards


def shard_plans(world, batch=2, buffer=4, seed=5, train=True):
    return [ShardStreamBatches(SHARDS, batch, r, world, shuffle=train, drop_last=train, seed=seed, buffer_size=buffer)
            for r in range(world)]


def shard_of(index: int) -> int:
    return int(np.searchsorted(np.cumsum(SHARDS), index, side="right"))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_equal_steps_and_no_repeats(world):
    plans = [ShardedBatches(N, 2, r, world, shuffle=True, drop_last=True, seed=5) for r in range(world)]
    assert len({len(p) for p in plans}) == 1, "every rank must run the same number of steps"
    assert len(plans[0]) == N // (2 * world)
    for epoch in range(3):
        seen = np.concatenate([p.indices(epoch, s) for p in plans for s in range(len(p))])
        assert len(seen) == len(set(seen.tolist())), "a sample repeats within an epoch"
        assert len(seen) == len(plans[0]) * 2 * world
        assert all(len(p.indices(epoch, s)) == 2 for p in plans for s in range(len(p)))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_disjoint_and_complete(world):
    plans = [ShardedBatches(N, 4, r, world, shuffle=False, drop_last=False) for r in range(world)]
    per_rank = [np.concatenate([p.indices(0, s) for s in range(len(p))]) for p in plans]
    everything = np.concatenate(per_rank)
    assert sorted(everything.tolist()) == list(range(N)), "evaluation must cover each image exactly once"


def test_reshuffle_is_deterministic_per_epoch():
    a = ShardedBatches(N, 3, 0, 1, shuffle=True, drop_last=True, seed=1)
    b = ShardedBatches(N, 3, 0, 1, shuffle=True, drop_last=True, seed=1)
    assert np.array_equal(a.epoch_order(4), b.epoch_order(4))
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    c = ShardedBatches(N, 3, 0, 1, shuffle=True, drop_last=True, seed=2)
    assert not np.array_equal(a.epoch_order(0), c.epoch_order(0))


def test_dropped_remainder_changes_between_epochs():
    plan = ShardedBatches(N, 4, 0, 1, shuffle=True, drop_last=True, seed=0)
    used = [set(np.concatenate([plan.indices(e, s) for s in range(len(plan))]).tolist()) for e in range(6)]
    dropped = [frozenset(range(N)) - u for u in used]
    assert all(len(d) == N % 4 for d in dropped)
    assert len(set(dropped)) > 1


def test_max_steps_caps_the_epoch():
    plan = ShardedBatches(100, 4, 1, 2, shuffle=True, drop_last=True, max_steps=3)
    assert len(plan) == 3
    with pytest.raises(IndexError):
        plan.indices(0, 3)


def test_impossible_plans_are_rejected():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        ShardedBatches(5, 4, 0, 2, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match="outside world size"):
        ShardedBatches(5, 1, 2, 2, shuffle=False, drop_last=False)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_plan_equal_steps_and_no_repeats(world):
    plans = shard_plans(world)
    assert len({len(p) for p in plans}) == 1 and len(plans[0]) == sum(SHARDS) // (2 * world)
    for epoch in range(3):
        seen = np.concatenate([p.indices(epoch, s) for p in plans for s in range(len(p))])
        assert len(seen) == len(set(seen.tolist())) == len(plans[0]) * 2 * world
        assert all(len(p.indices(epoch, s)) == 2 for p in plans for s in range(len(p)))


def test_each_rank_reads_whole_shards_in_the_epochs_shard_order():
    """The read order is the epoch's shard permutation, cut into contiguous parts: at most two shards
    per rank are shared with a neighbour, and each shard's samples come in file order."""
    plans = shard_plans(3)
    for epoch in range(2):
        streams = [p.epoch_stream(epoch)[0] for p in plans]
        whole = np.concatenate(streams)
        assert sorted(whole.tolist()) == list(range(sum(SHARDS)))  # the parts tile the data set
        shards = [shard_of(i) for i in whole]
        runs = [s for k, s in enumerate(shards) if k == 0 or s != shards[k - 1]]
        assert sorted(runs) == list(range(len(SHARDS))), "every shard is read in one go"
        for s in range(len(SHARDS)):
            members = [i for i in whole if shard_of(i) == s]
            assert members == sorted(members), "a shard is read from start to end"
    orders = [tuple(dict.fromkeys(shard_of(i) for i in np.concatenate([p.epoch_stream(e)[0] for p in plans])))
              for e in range(4)]
    assert len(set(orders)) > 1, "the shard order changes between epochs"


def test_shard_plan_is_deterministic_and_buffer_shuffles():
    a, b = shard_plans(2, seed=1), shard_plans(2, seed=1)
    assert all(np.array_equal(x.indices(3, 1), y.indices(3, 1)) for x, y in zip(a, b))
    no_buffer = shard_plans(1, buffer=0)[0]
    stream, order = no_buffer.epoch_stream(0)
    assert np.array_equal(order, np.arange(len(stream))), "buffer 0: read order = use order"
    shuffled = shard_plans(1, buffer=8)[0]
    assert not np.array_equal(shuffled.epoch_stream(0)[1], np.arange(sum(SHARDS)))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_plan_eval_disjoint_complete_in_listing_order(world):
    plans = shard_plans(world, batch=4, train=False)
    per_rank = [np.concatenate([p.indices(0, s) for s in range(len(p))]) for p in plans]
    assert np.concatenate(per_rank).tolist() == list(range(sum(SHARDS)))


@pytest.mark.parametrize("buffer", [1, 4, 16, 100])
def test_buffer_shuffle_is_a_permutation_within_the_buffers_reach(buffer):
    n = 60
    order = buffer_shuffle(n, buffer, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(n))
    # item t cannot leave before step t - buffer + 1: a reader holds at most `buffer` items
    assert all(pos <= step + buffer - 1 for step, pos in enumerate(order.tolist()))
    if buffer >= n:  # the whole stream fits: the first item is drawn uniformly
        firsts = Counter(int(buffer_shuffle(n, buffer, np.random.default_rng(s))[0]) for s in range(3000))
        assert len(firsts) == n and max(firsts.values()) < 3 * 3000 / n


def test_shuffle_statistics_tell_a_permutation_from_sorted_shards():
    """The statistics `python -m pipeline.bench.shuffle` reports (docs/data.md quotes them)."""
    from pipeline.bench.shuffle import plan_statistics

    n, classes, size = 2000, 10, 100
    sizes = (size,) * (n // size)
    shard = np.repeat(np.arange(len(sizes)), sizes)
    sorted_labels = (np.arange(n) * classes) // n  # two shards per class, one class after the other
    permutation = plan_statistics([ShardedBatches(n, 20, r, 2, shuffle=True, drop_last=True) for r in range(2)],
                                  sorted_labels, shard)
    assert permutation["same-label pairs"] == pytest.approx(1 / classes, abs=0.02)
    assert permutation["step distance"] == pytest.approx(1 / 3, abs=0.03)
    assert permutation["pairs again"] < 0.05
    unshuffled = plan_statistics([ShardStreamBatches(sizes, 20, r, 2, True, True, buffer_size=0) for r in range(2)],
                                 sorted_labels, shard)
    assert unshuffled["same-label pairs"] > 0.8 and unshuffled["shards per batch"] < 1.5
    buffered = plan_statistics([ShardStreamBatches(sizes, 20, r, 2, True, True, buffer_size=500) for r in range(2)],
                               sorted_labels, shard)
    assert permutation["same-label pairs"] < buffered["same-label pairs"] < unshuffled["same-label pairs"]
    assert permutation["pairs again"] < buffered["pairs again"] < unshuffled["pairs again"]

