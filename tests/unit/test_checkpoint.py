"""What a checkpoint holds, in one process: its entries and their nesting, and the run state it saves and loads.

Checkpoints written by earlier code must keep loading (checkpoint.FORMAT_VERSION): the entries below are
spelled out, not read from the code that writes them, so a change to the payload fails here first.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from support.resume import complete_checkpoint

from pipeline.config import load_config
from pipeline.distributed import DistInfo
from pipeline.runs.envinfo import git_revision
from pipeline.training import checkpoint as ckpt_io
from pipeline.training.budget import Cadence, Costs, make_plan
from pipeline.training.budget_run import RunBudget, SimulatedClock
from pipeline.training.checkpoint import FORMAT_VERSION, CheckpointManager, load
from pipeline.training.components import Components, build_components, build_training_step
from pipeline.training.state import Counters
from runs import TINY, assert_same_tensors

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# Every entry of a format-3 checkpoint, as main wrote them before the run state had one list.
ENTRIES = {"format_version", "code_revision", "model", "optimizer", "scheduler", "scaler", "ema", "counters",
           "config", "world_size", "rank_states", "budget", "classes", "eval_transform", "init_from"}


COUNTERS = {"epoch", "step_in_epoch", "global_step", "best_top1", "best_epoch", "final", "wall_seconds",
            "train_seconds", "tta", "eval_pending"}


RANK_STATE = {"loader": {"epoch", "step"}, "rng": {"torch", "python"}, "digest": None}


BUDGET = {"plans", "costs", "elapsed_s", "window", "recent", "factor", "fixed_factor", "measured", "warned", "slow"}


EVAL_TRANSFORM = {"size", "crop", "interpolation", "normalize", "mean", "std", "std_eps"}


def tiny_parts(*overrides: str) -> tuple[object, Components]:
    cfg = load_config(None, [*TINY, *overrides])
    return cfg, build_components(cfg, CPU)


def train(parts: Components, cfg, steps: int, first: int = 0) -> None:
    step = build_training_step(parts, cfg.train)
    parts.train_mode()
    for i, (images, labels) in zip(range(steps), parts.train_loader):
        step(images, labels, first + i)


def a_budget() -> RunBudget:
    costs = Costs(spent=5.0, step=0.1, evaluation=1.0, checkpoint=0.2)
    plan = make_plan(60.0, costs, 6, 2, 1, 1)
    return RunBudget(60.0, Cadence(6, 2, 1, 1), None, costs, [plan], SimulatedClock(0.1, 1.0, 0.2, 0))


@pytest.mark.parametrize("with_budget", [False, True])
def test_a_checkpoint_holds_the_same_entries_nested_as_before(tmp_path, with_budget):
    cfg, parts = tiny_parts("train.ema_decay=0.9")
    train(parts, cfg, 2)
    manager = CheckpointManager(cfg.checkpoint, tmp_path, CPU, cfg.to_dict(), cfg.train.epochs)
    manager.budget = a_budget() if with_budget else None
    counters = Counters(epoch=1, global_step=6, best_top1=0.2, best_epoch=1)
    manager.save_epoch(parts, counters, new_best=True)
    ckpt = load(tmp_path / "last.pt")
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()

    assert set(ckpt) == ENTRIES
    assert ckpt["format_version"] == FORMAT_VERSION == 3 and isinstance(ckpt["code_revision"], str)
    model_keys = set(parts.model.state_dict())
    assert set(ckpt["model"]) == model_keys and not any(k.startswith(("module.", "_orig_mod.")) for k in model_keys)
    assert set(ckpt["ema"]) == {"n_averaged"} | {f"module.{k}" for k in model_keys}
    assert set(ckpt["optimizer"]) == {"state", "param_groups"} and "last_epoch" in ckpt["scheduler"]
    assert ckpt["scaler"] is None  # fp32 on the CPU: no gradient scaler
    assert set(ckpt["counters"]) == COUNTERS and ckpt["counters"]["global_step"] == 6
    assert ckpt["config"] == cfg.to_dict() and ckpt["world_size"] == 1
    (rank_state,) = ckpt["rank_states"]
    assert {k: (set(v) if isinstance(v, dict) else None) for k, v in rank_state.items()} == RANK_STATE
    assert ckpt["classes"] == parts.classes and len(ckpt["classes"]) == 10
    assert set(ckpt["eval_transform"]) == EVAL_TRANSFORM and ckpt["init_from"] is None
    if with_budget:
        assert set(ckpt["budget"]) == BUDGET and len(ckpt["budget"]["plans"]) == 1
    else:
        assert ckpt["budget"] is None
    assert_same_tensors(ckpt["model"], parts.model.state_dict(), "model")
    assert_same_tensors(ckpt["ema"], parts.ema.state_dict(), "ema")


def test_the_run_state_is_one_dict_that_loads_back_exactly():
    """Components.state_dict() is what a checkpoint saves and a time budget's measurement puts back: loaded
    after more training, into the same parts or new ones, every tensor is as it was."""
    cfg, parts = tiny_parts("train.ema_decay=0.9")
    train(parts, cfg, 2)
    saved = copy.deepcopy(parts.state_dict())
    assert set(saved) == {"model", "optimizer", "scheduler", "scaler", "ema"}
    train(parts, cfg, 2, first=2)
    changed = parts.state_dict()
    assert not any(torch.equal(changed["model"][k], saved["model"][k]) for k in saved["model"] if k.endswith("weight"))
    parts.load_state_dict(saved)
    assert_same_tensors(parts.state_dict(), saved, "state")
    _, fresh = tiny_parts("train.ema_decay=0.9")
    fresh.load_state_dict(saved)
    assert_same_tensors(fresh.state_dict(), saved, "state")


def test_loading_a_state_without_an_ema_leaves_the_run_s_own_ema(tmp_path: Path):
    """A run that turned the EMA on by an accepted change resumes from a checkpoint without one: its EMA starts
    from its own initialisation, everything else loads."""
    cfg, parts = tiny_parts()
    train(parts, cfg, 2)
    saved = parts.state_dict()
    assert saved["ema"] is None and saved["scaler"] is None
    _, with_ema = tiny_parts("train.ema_decay=0.9")
    own_ema = copy.deepcopy(with_ema.ema.state_dict())
    with_ema.load_state_dict(saved)
    assert_same_tensors(with_ema.model.state_dict(), saved["model"], "model")
    assert_same_tensors(with_ema.ema.state_dict(), own_ema, "ema")


def test_atomic_save_and_load_errors(tmp_path):
    path = tmp_path / "x.pt"
    ckpt_io.atomic_save(complete_checkpoint(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary file left behind
    assert ckpt_io.load(path)["model"]["w"].sum() == 3

    def refused(reason: str) -> None:
        with pytest.raises(ckpt_io.CheckpointError) as info:
            ckpt_io.load(path)
        assert str(info.value) == f"{path}: {reason}"

    path.write_bytes(b"")
    refused("empty file (0 bytes)")
    path.write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match=rf"^{path}: unreadable or corrupt checkpoint \(.+\)$"):
        ckpt_io.load(path)
    torch.save({"not": "ours"}, path)
    refused("not a checkpoint of this project (no format_version)")
    torch.save({"format_version": 2, "counters": {}}, path)  # before checkpoints recorded the code that wrote them
    refused(f"written in checkpoint format 2 by an earlier version of this code; this code (git "
            f"{git_revision()}) reads format 3")
    torch.save(complete_checkpoint(format_version=4, code_revision="0123456789ab"), path)
    refused(f"written in checkpoint format 4 by git 0123456789ab; this code (git {git_revision()}) reads format 3")
    torch.save({k: v for k, v in complete_checkpoint().items() if k != "config"}, path)  # was KeyError: 'config'
    refused("an incomplete checkpoint (no config)")
    torch.save(complete_checkpoint(counters={"epoch": 1}), path)
    refused("an incomplete checkpoint (no counters.step_in_epoch, counters.global_step)")


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format_version": ckpt_io.FORMAT_VERSION, "x": Payload()}, path)
    with pytest.raises(ckpt_io.CheckpointError, match="unreadable or corrupt"):
        ckpt_io.load(path)

