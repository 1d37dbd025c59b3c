"""The sharded index plan (pure numpy): equal train steps, disjoint and complete evaluation."""

import numpy as np
import pytest

from pipeline.data.sampler import ShardedBatches

N = 21  # odd on purpose


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
